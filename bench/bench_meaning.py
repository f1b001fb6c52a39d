"""Meaning thresholds from real web text: what share of real pages the gate's semantic checks pass.

A real page is cut into its first 150 words (the "source") and its next 300 (the "reply"):
faithfulness is the cosine of the two (the encoder section: all-MiniLM-L6-v2), coherence the cosine of
the two halves of the reply's first ``coherence_words`` words, as pipeline/meaning.py measures an LLM
reply. Printed per corpus (FineWeb pages of ../shared/data's LLM-scored sample, Common Crawl 2019
pages): the median and the share of pages at or above each candidate threshold. A threshold that fails
more than 5% of real pages is wrong. Then the same on the 135M model's hand-labelled nonsense and
faithful replies (tests/data), to show what the thresholds separate.

Usage: python bench/bench_meaning.py [--pages 300]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def cut(pages: list[str], n: int) -> list[tuple[str, str]]:
    out = []
    for t in pages:
        w = t.split()
        if len(w) >= 450:
            out.append((" ".join(w[:150]), " ".join(w[150:450])))
        if len(out) == n:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=300)
    args = ap.parse_args()
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    from pipeline.meaning import Meaning
    from pipeline.stages import load_config
    from tests.conftest import CC_SAMPLE, LEGAL, real_pages

    if not (LEGAL.exists() and CC_SAMPLE.exists()):
        sys.exit("bench_meaning: ../shared/data is needed (FineWeb and Common Crawl pages)")
    cfg = load_config()
    meaning = Meaning(cfg.quality_gate.meaning, cfg.encoder)
    lid = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
    cc = [t for t in (json.loads(line)["text"] for line in gzip.open(CC_SAMPLE, "rt"))
          if len(t.split()) >= 450 and lid.classify(t[:3000])[0] == "en"]
    corpora = {"FineWeb": cut([p["text"] for p in real_pages(4 * args.pages, 40000)], args.pages),
               "Common Crawl": cut(cc, args.pages)}
    data = REPO / "tests" / "data"
    for name in ("nonsense_135m", "faithful_135m"):
        rows = [json.loads(x) for x in (data / f"{name}.jsonl").read_text().splitlines() if x.strip()]
        corpora[f"135M {name.split('_')[0]} (hand-labelled)"] = [(r["seed_extract"], r["text"]) for r in rows]
    c = cfg.quality_gate.meaning
    print(f"faithfulness: cosine(first 150 words, next 300); coherence: the halves of the reply's first "
          f"{c.coherence_words} words; gate thresholds {c.min_faithfulness} / {c.min_coherence}")
    print(f"{'corpus':<34}{'n':>5}{'faith med':>10}" + "".join(f"{'f>=' + str(t):>8}" for t in (0.2, 0.25, 0.3))
          + f"{'coh med':>9}" + "".join(f"{'c>=' + str(t):>8}" for t in (0.15, 0.2, 0.25)) + f"{'gate pass':>11}")
    for name, pairs in corpora.items():
        ms = meaning.measure([t for _, t in pairs], [s for s, _ in pairs])
        f = [m["faithfulness"] for m in ms]
        h = [m["coherence"] for m in ms if m["coherence"] is not None]
        passed = sum(not meaning.failures(m) for m in ms) / len(ms)
        print(f"{name:<34}{len(ms):>5}{statistics.median(f):>10.2f}"
              + "".join(f"{sum(x >= t for x in f) / len(f):>8.1%}" for t in (0.2, 0.25, 0.3))
              + f"{statistics.median(h):>9.2f}" + "".join(f"{sum(x >= t for x in h) / len(h):>8.1%}" for t in (0.15, 0.2, 0.25))
              + f"{passed:>11.1%}", flush=True)


if __name__ == "__main__":
    main()
