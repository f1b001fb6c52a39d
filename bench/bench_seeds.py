"""Seeds-stage benchmark: docs/s and peak RSS at 1x and 4x the input, against datatrove run directly.

The baseline is the same work wired by hand from datatrove parts (its JsonlReader, the same filters,
its ParquetWriter, its LocalPipelineExecutor) on the same files with the same tasks/workers, in the
same run. Both sides are separate processes; peak RSS is the whole process tree, sampled every 50 ms.
Usage: python bench/bench_seeds.py [--input FILE.jsonl.gz] [--tasks 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = REPO.parent / "shared" / "data" / "web" / "commoncrawl-2019-sample.jsonl.gz"
OUT = REPO / "bench" / "out" / "seeds"


def make_input(src: Path, copies: int, n_files: int) -> tuple[Path, int]:
    """`copies` x the source pages (ids made unique), split over n_files .jsonl.gz files."""
    folder = OUT / f"input-{copies}x"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with gzip.open(src, "rt") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    files = [gzip.open(folder / f"part-{i}.jsonl.gz", "wt") for i in range(n_files)]
    n = 0
    for c in range(copies):
        for rec in lines:
            rec = dict(rec, id=f"{rec.get('id')}-{c}")
            files[n % n_files].write(json.dumps(rec) + "\n")
            n += 1
    for f in files:
        f.close()
    return folder, n


def measure(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a command and all its children."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed: {' '.join(cmd)}\n{proc.stderr.read().decode()[-3000:]}")
    return wall, peak / 2**20


def baseline(input_dir: str, output: str, tasks: int, workers: int) -> None:
    """datatrove alone: its reader, executor and writer around the same filters."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import ParquetWriter

    from pipeline.stages.seeds import LanguageId, LengthFilter, Normalise

    pipeline = [
        JsonlReader(input_dir),
        Normalise("NFC", False, True, 1),
        LengthFilter(200, 1_000_000),
        LanguageId(["en"], 0.65),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
        # datatrove's writer infers the schema per batch and fails on pages whose metadata differ,
        # so the baseline writes the three contract columns only
        ParquetWriter(output + "/data", adapter=lambda self, doc: {"id": doc.id, "text": doc.text, "url": doc.metadata.get("url")}),
    ]
    LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=output + "/logs").run()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=str(DEFAULT_INPUT))
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline-run", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_run:
        return baseline(*args.baseline_run, args.tasks, args.workers)
    src = Path(args.input)
    if not src.exists():
        sys.exit(f"benchmark input not found: {src} (needs ../shared/data, or pass --input)")
    rows = []
    for copies in (1, 4):
        folder, n = make_input(src, copies, args.tasks)
        ours_out, base_out = OUT / f"ours-{copies}x", OUT / f"datatrove-{copies}x"
        for d in (ours_out, base_out):
            shutil.rmtree(d, ignore_errors=True)
        ours = measure([sys.executable, "-m", "pipeline.cli", "seeds", "--input", str(folder), "--output", str(ours_out),
                        "--set", "input.limit=null", "--set", f"executor.tasks={args.tasks}",
                        "--set", f"executor.workers={args.workers}", "--no-progress"])
        base = measure([sys.executable, __file__, "--tasks", str(args.tasks), "--workers", str(args.workers),
                        "--baseline-run", str(folder), str(base_out)])
        rows.append((copies, n, n / ours[0], n / base[0], ours[1], base[1]))
    print(f"\nseeds stage, {args.tasks} tasks on {args.workers} workers, input {src.name}")
    print(f"{'input':>6} {'docs':>6} {'ours docs/s':>12} {'datatrove docs/s':>17} {'ratio':>6} {'ours peak MiB':>14} {'datatrove peak MiB':>19}")
    for copies, n, ours_rate, base_rate, ours_mem, base_mem in rows:
        print(f"{copies:>5}x {n:>6} {ours_rate:>12.1f} {base_rate:>17.1f} {ours_rate / base_rate:>6.2f} {ours_mem:>14.0f} {base_mem:>19.0f}")
    growth = rows[1][4] / rows[0][4]
    print(f"peak RSS 4x/1x: ours {growth:.2f}, datatrove {rows[1][5] / rows[0][5]:.2f} (flat ~1.0 = memory does not grow with the corpus)")


if __name__ == "__main__":
    main()
