"""Classify throughput: the ``classify`` stage vs a plain sentence-transformers encode + head, same documents, same run.

A MiniLM classifier (frozen encoder, MLP head, one 256-token window per page) is trained once on 400 pages of
the LLM-scored FineWeb set. Then, on the same real pages (FineWeb and Common Crawl, mixed lengths), in this
process with the same torch threads (all cores):
  - plain: ``SentenceTransformer.encode(texts, batch_size=B)`` (truncated at its 256 tokens) + the same head,
    for B in 8, 16, 32, 64, 128;
  - ours in memory: ``Classifier.score(texts)`` with batches capped by padded tokens (classify.batch_tokens),
    swept from 1,024 to 32,768;
  - the stage: ``synthweb classify`` in process (reader, scoring, Parquet writer, stats), 1 task on 1 worker.
Every timing includes loading the model (the stage loads it too). All three run in the same dtype (classify.dtype:
auto is bf16 autocast on a CPU with native bf16; the plain encode runs under the same autocast). The ratio is the
stage's docs/s over the best plain batch size's. Usage: python bench/bench_classify.py [--docs 1500] [--dtype D]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out" / "classify"


def pages(n: int) -> list[dict]:
    import pyarrow.parquet as pq

    from tests.conftest import CC_SAMPLE, LEGAL, need

    legal = list(dict.fromkeys(t for f in sorted(need(LEGAL).glob("*.parquet"))
                               for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()))
    cc = [json.loads(line)["text"] for line in gzip.open(need(CC_SAMPLE), "rt")]
    texts = [t for pair in zip(legal[1000:], cc) for t in pair] + legal[1000 + len(cc):]  # disjoint from training
    return [{"id": f"c{i:06d}", "text": t} for i, t in enumerate(texts[:n])]


def classifier() -> Path:
    """A MiniLM classifier with one window per page, trained on 400 legal pages (reused across runs)."""
    import pyarrow.parquet as pq

    from tests.conftest import LEGAL

    folder = OUT / "classifier"
    if (folder / "config.json").exists():
        return folder
    rows, seen = [], set()
    for f in sorted(LEGAL.glob("*.parquet")):
        for r in pq.read_table(f, columns=["text", "score"]).to_pylist():
            if r["text"] not in seen and len(rows) < 400:
                seen.add(r["text"])
                rows.append(r)
    src = OUT / "labelled.jsonl"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from pipeline import cli

    code = cli.main(["train-classifier", "--input", str(src), "--output", str(folder), "--set", "classifier.windows=1",
                     "--set", "classifier.epochs=30", "--no-progress"])
    if code != 0:
        sys.exit("train-classifier failed")
    return folder


def plain(folder: Path, texts: list[str], batch: int, dtype: str) -> float:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from classifiers.model import Classifier, calibrate, int_scores
    from pipeline.embed import resolve_encoder

    t0 = time.perf_counter()  # the model loads count, as they do in the stage
    clf = Classifier.load(folder, "cpu", dtype=dtype)
    st = SentenceTransformer(resolve_encoder(clf.spec.encoder), device="cpu")
    st.max_seq_length = clf.encoder.max_length
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=clf.encoder.autocast):
        emb = st.encode(texts, batch_size=batch, convert_to_numpy=True)
    with torch.inference_mode():
        s = calibrate(clf.head(torch.from_numpy(np.asarray(emb, dtype=np.float32))).squeeze(-1).numpy(), clf.spec)
    int_scores(s, clf.spec)
    return time.perf_counter() - t0


def ours_in_memory(folder: Path, texts: list[str], batch_tokens: int | None, dtype: str) -> float:
    from classifiers.model import Classifier

    t0 = time.perf_counter()
    clf = Classifier.load(folder, "cpu", batch_tokens=batch_tokens, dtype=dtype)
    clf.score(texts)
    return time.perf_counter() - t0


def stage(folder: Path, src: Path, dtype: str) -> float:
    from pipeline.stages import classify, load_config
    from pipeline.stages.base import run_stage

    out = OUT / "stage"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(None, [f"input.source={src}", f"run.output={out}", "executor.tasks=1", "executor.workers=1",
                             f"classify.classifiers=[{folder}]", f"classify.dtype={dtype}"])
    t0 = time.perf_counter()
    run_stage("classify", cfg, classify.build_classify, force=True, progress=False, printer=lambda *a: None,
              extra_hash=classify.fingerprints(cfg))
    return time.perf_counter() - t0


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1500)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="classify.dtype: auto (bf16 on a CPU with native bf16), float32, bfloat16")
    args = ap.parse_args()
    from pipeline.devices import auto_dtype

    dtype = auto_dtype("cpu") if args.dtype == "auto" else args.dtype  # what auto means on this CPU
    folder = classifier()
    docs = pages(args.docs)
    src = OUT / "docs" / "docs.jsonl"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    texts = [d["text"] for d in docs]
    torch.set_num_threads(os.cpu_count() or 1)
    n = len(texts)
    print(f"classify throughput: {n} real pages (FineWeb + Common Crawl), MiniLM, 1 window of 256 tokens, "
          f"cpu, {torch.get_num_threads()} threads, {dtype}")
    plain(folder, texts[:32], 32, dtype)  # warm-up: weights from disk, first-call allocations
    best = None
    for b in (8, 16, 32, 64, 128):
        s = plain(folder, texts, b, dtype)
        print(f"  plain sentence-transformers encode + head, batch {b:>3}: {n / s:7.1f} docs/s")
        best = max(best or (0, 0), (n / s, b))
    for bt in (1024, 2048, 4096, 8192, 32768):
        s = ours_in_memory(folder, texts, bt, dtype)
        print(f"  synthweb Classifier.score, batch_tokens {bt:>5}:      {n / s:7.1f} docs/s")
    s = stage(folder, src, dtype)
    print(f"  synthweb classify stage (read, score, write; 1 task; batch_tokens default): {n / s:7.1f} docs/s")
    print(f"  ratio stage / best plain (batch {best[1]}): {n / s / best[0]:.2f}")


if __name__ == "__main__":
    main()
