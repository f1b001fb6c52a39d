"""The seeds filters' word tokenizer: synthweb's warm vocabulary (pipeline/words.py) vs datatrove's own.

Each side tokenizes the same real FineWeb pages (words and sentence spans, what the Gopher, C4 and FineWeb
filters ask for) in a process of its own: CPU docs/s, growth of RSS over the run, and a digest of every
output, which must be equal. Usage: python bench/bench_words.py [--pages 2800]
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGES = REPO.parent / "shared" / "data" / "web" / "fineweb-sample-legal-scored"


def pages(n: int) -> list[str]:
    import pyarrow.parquet as pq

    seen, texts = set(), []
    for f in sorted(PAGES.glob("*.parquet")):
        for r in pq.read_table(f, columns=["id", "text"]).to_pylist():
            if r["id"] not in seen:
                seen.add(r["id"])
                texts.append(r["text"])
    return texts[:n]  # distinct pages only: a page seen twice would flatter the warm vocabulary


def side(kind: str, n: int, q) -> None:
    sys.path.insert(0, str(REPO))
    from datatrove.utils.word_tokenizers import SpaCyTokenizer

    from pipeline.words import WarmSpaCyTokenizer

    texts = pages(n)
    tok = WarmSpaCyTokenizer("en") if kind == "warm" else SpaCyTokenizer("en")
    tok.word_tokenize("load the model")
    rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20  # noqa: E731
    r0, digest, t0 = rss(), hashlib.sha256(), time.process_time()
    for text in texts:
        digest.update(repr((tok.word_tokenize(text), tok.span_tokenize(text))).encode())
    q.put((kind, len(texts) / (time.process_time() - t0), rss() - r0, digest.hexdigest()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=2800)
    args = ap.parse_args()
    if not PAGES.exists():
        sys.exit(f"bench_words: {PAGES} is missing (the shared data)")
    q = mp.get_context("spawn").Queue()
    got = {}
    for kind in ("datatrove", "warm"):
        p = mp.get_context("spawn").Process(target=side, args=(kind, args.pages, q))
        p.start()
        k, rate, grew, digest = q.get()
        p.join()
        got[k] = (rate, grew, digest)
    (d_rate, d_grew, d_dig), (w_rate, w_grew, w_dig) = got["datatrove"], got["warm"]
    print(f"\nword tokenizer of the seeds filters, {args.pages} distinct FineWeb pages (words + sentence spans), one core")
    print(f"{'':<22}{'docs/s':>8}{'RSS growth MiB':>16}")
    print(f"{'datatrove SpaCy':<22}{d_rate:>8.1f}{d_grew:>16.0f}")
    print(f"{'synthweb warm':<22}{w_rate:>8.1f}{w_grew:>16.0f}")
    print(f"ratio {w_rate / d_rate:.2f}x; identical output: {d_dig == w_dig}")
    if d_dig != w_dig:
        sys.exit("bench_words: the warm tokenizer's output differs from datatrove's")


if __name__ == "__main__":
    main()
