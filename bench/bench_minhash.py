"""MinHash dedup at 20,000+ documents: synthweb's dedup vs datatrove's stages called directly, one core.

Corpus: distinct real text (FineWeb and Common Crawl pages from ../shared/data, cut into passages of 150
words so that there are enough distinct documents), plus 10% planted near-duplicates (a passage with 2% of
its words changed), ids unique. Both sides use the same MinHash parameters (5-gram word shingles, 14 bands x
8 hashes, seed 1), one task and one worker, in this process, one after the other:
  - synthweb: ``dedup`` (reader, ids, signatures with whitespace words after datatrove's simplify_text,
    datatrove's buckets and clusters, representatives, Parquet writer);
  - datatrove: JsonlReader, its four MinHash stages (signatures with its spaCy word tokenizer), ParquetWriter.
For each: docs/s per core, and the planted pairs found (recall: pairs with one copy removed) and precision
(removed documents that are a planted copy or its original). Usage: python bench/bench_minhash.py [--docs 20000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out" / "minhash"


def corpus(n: int) -> tuple[Path, dict[str, str]]:
    """(the JSONL file, planted copy id -> its original's id)."""
    import pyarrow.parquet as pq

    from tests.conftest import CC_SAMPLE, LEGAL, need

    texts = list(dict.fromkeys(t for f in sorted(need(LEGAL).glob("*.parquet"))
                               for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()))
    texts += [json.loads(line)["text"] for line in gzip.open(need(CC_SAMPLE), "rt")]
    passages = []
    for t in texts:
        w = t.split()
        passages += [" ".join(w[i:i + 150]) for i in range(0, len(w) - 100, 150)]
    passages = list(dict.fromkeys(passages))
    base = int(n / 1.1)
    if len(passages) < base:
        raise SystemExit(f"only {len(passages):,} distinct passages in ../shared/data; use --docs {int(len(passages) * 1.1)}")
    rng = random.Random(0)
    docs = [{"id": f"p{i:06d}", "text": passages[i]} for i in range(base)]
    planted = {}
    for i, src in enumerate(rng.sample(range(base), n - base)):
        w = docs[src]["text"].split()
        for k in rng.sample(range(len(w)), max(1, len(w) // 50)):
            w[k] = "changed"
        planted[f"d{i:06d}"] = docs[src]["id"]
        docs.append({"id": f"d{i:06d}", "text": " ".join(w)})
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"corpus-{n}" / "docs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path, planted


def ours(src: Path) -> tuple[float, set[str]]:
    from pipeline.stages import dedup, load_config
    from pipeline.stages.base import run_stage
    from tests.conftest import read_rows

    out = OUT / "synthweb"
    cfg = load_config(None, [f"input.source={src}", "input.limit=null", f"run.output={out}", "executor.tasks=1",
                             "executor.workers=1"])
    t0 = time.perf_counter()
    run_stage("dedup", cfg, dedup.build, force=True, progress=False, printer=lambda *a: None)
    return time.perf_counter() - t0, {r["id"] for r in read_rows(out / "data")}


def datatrove_direct(src: Path) -> tuple[float, set[str]]:
    import pyarrow.parquet as pq
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import ParquetWriter

    out = OUT / "datatrove"
    shutil.rmtree(out, ignore_errors=True)
    mh = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1)
    t0 = time.perf_counter()
    LocalPipelineExecutor([JsonlReader(str(src.parent)), MinhashDedupSignature(str(out / "sigs"), config=mh)], tasks=1,
                          logging_dir=str(out / "logs1")).run()
    LocalPipelineExecutor([MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=mh)], tasks=14, workers=1,
                          logging_dir=str(out / "logs2")).run()
    LocalPipelineExecutor([MinhashDedupCluster(str(out / "buckets"), str(out / "remove"), config=mh)], tasks=1,
                          logging_dir=str(out / "logs3")).run()
    LocalPipelineExecutor([JsonlReader(str(src.parent)), MinhashDedupFilter(str(out / "remove")),
                           ParquetWriter(str(out / "data"))], tasks=1, logging_dir=str(out / "logs4")).run()
    wall = time.perf_counter() - t0
    kept = {i for f in (out / "data").glob("*.parquet") for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}
    return wall, kept


def quality(all_ids: set[str], kept: set[str], planted: dict[str, str]) -> tuple[float, float]:
    removed = all_ids - kept
    found = sum((c in removed) != (o in removed) for c, o in planted.items())
    in_pairs = set(planted) | set(planted.values())
    return found / len(planted), (len(removed & in_pairs) / len(removed) if removed else 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20_000)
    args = ap.parse_args()
    src, planted = corpus(args.docs)
    all_ids = {json.loads(line)["id"] for line in open(src)}
    n = len(all_ids)
    rows = {}
    for name, fn in (("synthweb", ours), ("datatrove", datatrove_direct)):
        wall, kept = fn(src)
        rows[name] = (wall, *quality(all_ids, kept, planted), n - len(kept))
    print(f"MinHash dedup: {n:,} documents ({len(planted):,} planted near-duplicates, 2% of words changed), "
          "5-grams, 14 x 8, 1 task, 1 worker")
    print("               seconds    docs/s   removed   recall   precision")
    for name, (wall, rec, prec, removed) in rows.items():
        print(f"  {name:<11} {wall:8.1f} {n / wall:9.1f} {removed:9,d} {rec:8.3f} {prec:11.3f}")
    print(f"  ratio synthweb/datatrove: {rows['datatrove'][0] / rows['synthweb'][0]:.2f}x docs/s per core; "
          f"recall {rows['synthweb'][1] - rows['datatrove'][1]:+.3f}, precision {rows['synthweb'][2] - rows['datatrove'][2]:+.3f}")


if __name__ == "__main__":
    main()
