"""MinHash dedup benchmark: our stage vs datatrove's stages called directly vs datasketch, and memory.

Corpus: distinct real FineWeb pages plus ~10% planted near-duplicates (2% of words changed). The
same MinHash parameters everywhere (5-gram word shingles, 14 bands x 8 hashes). One task, one worker,
so docs/s is per core:
  - ours: ``synthweb dedup`` (reader, ids, the four datatrove stages, representatives, Parquet writer);
  - datatrove: its JsonlReader, the four MinHash stages and a ParquetWriter on LocalPipelineExecutor;
  - datasketch: MinHash(num_perm=112) per document + MinHashLSH(params=(14, 8)) + union-find,
    written with pyarrow (a plain single-process implementation).
Peak RSS of the ``synthweb dedup`` process tree at 1x and 4x the corpus.
Usage: python bench/bench_dedup.py [--docs 800]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out" / "dedup"


def write_corpus(n: int, name: str) -> Path:
    import pyarrow.parquet as pq

    from tests.conftest import LEGAL, need

    rng = random.Random(0)
    texts = list(dict.fromkeys(t for f in sorted(need(LEGAL).glob("*.parquet"))
                               for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()))
    base = int(n / 1.1)
    docs = [{"id": f"p{i}", "text": texts[i % len(texts)] + ("" if i < len(texts) else f" (copy {i // len(texts)})")}
            for i in range(base)]
    for i in range(n - base):
        w = docs[i]["text"].split()
        for k in rng.sample(range(len(w)), max(1, len(w) // 50)):
            w[k] = "changed"
        docs.append({"id": f"d{i}", "text": " ".join(w)})
    folder = OUT / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return folder


def ours(src: Path) -> tuple[float, int]:
    from pipeline.stages import dedup, load_config
    from pipeline.stages.base import run_stage

    out = OUT / "ours"
    cfg = load_config(None, [f"input.source={src}", "input.limit=null", f"run.output={out}", "executor.tasks=1",
                             "executor.workers=1"])
    t0 = time.perf_counter()
    stats = run_stage("dedup", cfg, dedup.build, force=True, progress=False, printer=lambda *a: None)
    return time.perf_counter() - t0, stats["records_out"]


def datatrove_direct(src: Path) -> tuple[float, int]:
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
    LocalPipelineExecutor([JsonlReader(str(src)), MinhashDedupSignature(str(out / "sigs"), config=mh)], tasks=1,
                          logging_dir=str(out / "logs1")).run()
    LocalPipelineExecutor([MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=mh)], tasks=14, workers=1,
                          logging_dir=str(out / "logs2")).run()
    LocalPipelineExecutor([MinhashDedupCluster(str(out / "buckets"), str(out / "remove"), config=mh)], tasks=1,
                          logging_dir=str(out / "logs3")).run()
    LocalPipelineExecutor([JsonlReader(str(src)), MinhashDedupFilter(str(out / "remove"),
                                                                      exclusion_writer=ParquetWriter(str(out / "removed"))),
                           ParquetWriter(str(out / "data"))], tasks=1, logging_dir=str(out / "logs4")).run()
    wall = time.perf_counter() - t0
    import pyarrow.parquet as pq

    return wall, sum(pq.read_metadata(f).num_rows for f in (out / "data").glob("*.parquet"))


def datasketch_plain(src: Path) -> tuple[float, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    docs = [json.loads(line) for line in open(src / "docs.jsonl", encoding="utf-8")]
    lsh = MinHashLSH(num_perm=112, params=(14, 8))
    parent = list(range(len(docs)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, d in enumerate(docs):
        w = d["text"].lower().split()
        m = MinHash(num_perm=112, seed=1)
        m.update_batch([" ".join(w[k : k + 5]).encode() for k in range(max(1, len(w) - 4))])
        for j in lsh.query(m):
            parent[find(i)] = find(int(j))
        lsh.insert(str(i), m)
    keep = [i for i in range(len(docs)) if find(i) == i]
    out = OUT / "datasketch"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [docs[i]["id"] for i in keep], "text": [docs[i]["text"] for i in keep]}),
                   out / "data.parquet")
    return time.perf_counter() - t0, len(keep)


def main() -> None:
    from bench.bench_seeds import measure

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=800)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    src = write_corpus(args.docs, "corpus-1x")
    ds = datatrove_direct(src)
    ou = ours(src)
    sk = datasketch_plain(src)
    n = args.docs
    print(f"MinHash dedup benchmark: {n} documents (real FineWeb pages + ~10% near-duplicates), 5-grams, 14 x 8, 1 core")
    print("             seconds   docs/s   kept")
    for name, (s, kept) in (("ours", ou), ("datatrove", ds), ("datasketch", sk)):
        print(f"  {name:<10} {s:8.1f} {n / s:8.1f} {kept:6d}")
    print(f"  ratio ours/datatrove: {ds[0] / ou[0]:.2f}   ours/datasketch: {sk[0] / ou[0]:.2f}  (docs/s; > 1 = ours faster)")
    src4 = write_corpus(args.docs * 4, "corpus-4x")
    mem = []
    for label, s in (("1x", src), ("4x", src4)):
        out = OUT / f"mem-{label}"
        shutil.rmtree(out, ignore_errors=True)
        wall, peak = measure([sys.executable, "-m", "pipeline.cli", "dedup", "--input", str(s), "--output", str(out),
                              "--no-progress", "--set", "input.limit=null", "--set", "executor.tasks=4",
                              "--set", "executor.workers=2"])
        mem.append(peak)
        print(f"  peak RSS {label} ({args.docs * (1 if label == '1x' else 4)} docs, 4 tasks on 2 workers): {peak:7.0f} MiB ({wall:.0f} s)")
    print(f"  ratio 4x/1x: {mem[1] / mem[0]:.2f}")


if __name__ == "__main__":
    main()
