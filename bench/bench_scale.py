"""Scale benchmark: a corpus of N documents through seeds -> exact dedup -> MinHash dedup -> classify -> tokenize.

Corpus (built from the real pages in ../shared/data; ids unique): each document is 3-8 real paragraphs (lines of
12+ words ending a sentence) drawn from the LLM-scored FineWeb pages and the Common Crawl sample, so documents are
distinct real text with real line structure; then 3% planted exact copies and 5% planted near-duplicates (2% of
their words changed), shuffled among the others, in 16 JSONL files. Each stage runs as its own `synthweb`
command on the local executor with all cores (8 tasks), as a user runs it; for each: documents in, wall seconds,
docs/s, docs/s per core and the peak RSS of its whole process tree (sampled every 50 ms). Run at two sizes (default
20,000 and 200,000): memory must not grow with the corpus (ratio of peaks <= 1.1).

classify uses a MiniLM classifier (frozen encoder, MLP head) trained once on 400 LLM-scored pages with one
256-token window per page (the default of 4 windows costs ~4x). On a CPU it is by far the slowest stage
(~20 docs/s per 2 cores), so --classify-max skips it above that many documents (tokenize then reads the MinHash
output) and says so. Usage: python bench/bench_scale.py [--docs 20000 200000] [--classify-max N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out" / "scale"
TASKS = 8
STAGES = ["seeds", "exact dedup", "MinHash dedup", "classify", "tokenize"]


def paragraph_pool() -> list[str]:
    import pyarrow.parquet as pq

    from tests.conftest import CC_SAMPLE, LEGAL, need

    texts = list(dict.fromkeys(t for f in sorted(need(LEGAL).glob("*.parquet"))
                               for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()))
    texts += [json.loads(line)["text"] for line in gzip.open(need(CC_SAMPLE), "rt")]
    lines = (line.strip() for t in texts for line in t.splitlines())
    return list(dict.fromkeys(p for p in lines if len(p.split()) >= 12 and p[-1] in ".!?\"'"))


def build_corpus(n: int, pool: list[str]) -> tuple[Path, dict]:
    folder = OUT / f"corpus-{n}"
    meta = folder / "corpus.json"
    if meta.exists():
        return folder, json.loads(meta.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(n)
    n_exact, n_near = int(n * 0.03), int(n * 0.05)
    base = n - n_exact - n_near
    texts = ["\n".join(rng.sample(pool, rng.randint(3, 8))) for _ in range(base)]
    for _ in range(n_exact):
        texts.append(texts[rng.randrange(base)])
    for _ in range(n_near):
        lines = [line.split(" ") for line in texts[rng.randrange(base)].split("\n")]
        spots = [(i, k) for i, ws in enumerate(lines) for k in range(len(ws))]
        for i, k in rng.sample(spots, max(1, len(spots) // 50)):
            lines[i][k] = "changed"
        texts.append("\n".join(" ".join(ws) for ws in lines))
    order = list(range(n))
    rng.shuffle(order)
    files = [open(folder / f"part-{i:02d}.jsonl", "w") for i in range(16)]
    for j, i in enumerate(order):
        files[j % 16].write(json.dumps({"id": f"s{i:07d}", "text": texts[i]}) + "\n")
    for f in files:
        f.close()
    info = {"documents": n, "exact_copies": n_exact, "near_duplicates": n_near,
            "bytes": sum(f.stat().st_size for f in folder.glob("*.jsonl"))}
    meta.write_text(json.dumps(info))
    return folder, info


def classifier() -> Path:
    from bench.bench_classify import OUT as CLF_OUT
    from bench.bench_classify import classifier as train

    folder = train()
    assert folder.parent == CLF_OUT
    return folder


def rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f in folder.glob("*.parquet"))


def run_scale(n: int, pool: list[str], clf: Path, classify_max: int | None, only: list[str] | None = None,
              before: dict | None = None) -> dict:
    """Every stage on n documents; with ``only``, just those stages again (each reads what the stage before
    it wrote in the last run; the others keep their figures from ``before``)."""
    from bench.bench_seeds import measure

    src, info = build_corpus(n, pool)
    out = OUT / f"run-{n}"
    if not only:
        shutil.rmtree(out, ignore_errors=True)
    from pipeline.stages import get

    cores = os.cpu_count() or 1
    common = ["--set", "input.limit=null", "--set", f"executor.tasks={TASKS}", "--set", f"executor.workers={cores}"]
    plan = [("seeds", src, ["seeds"]),
            ("exact dedup", out / "seeds" / "data", ["dedup", "--set", "dedup.method=exact"]),
            ("MinHash dedup", out / "exact dedup" / "data", ["dedup"])]
    if classify_max is None or n <= classify_max:
        plan.append(("classify", out / "MinHash dedup" / "data", ["classify", "--set", f"classify.classifiers=[{clf}]"]))
    plan.append(("tokenize", out / plan[-1][0] / "data", ["tokenize"]))
    result = {"corpus": info, "stages": {}}
    for name, inp, args in plan:
        if only and name not in only:
            if (before or {}).get("stages", {}).get(name):
                result["stages"][name] = before["stages"][name]
            continue
        docs = info["documents"] if name == "seeds" else rows(inp)
        dest = out / name
        shutil.rmtree(dest, ignore_errors=True)
        quiet = ["--no-progress"] if get(args[0]).progress else []
        wall, peak = measure([sys.executable, "-m", "pipeline.cli", *args[:1], "--input", str(inp), "--output", str(dest),
                              *args[1:], *common, *quiet])
        kept = rows(dest / "data") if (dest / "data").is_dir() else None
        result["stages"][name] = {"docs_in": docs, "docs_out": kept, "seconds": round(wall, 1),
                                  "docs_per_s": round(docs / wall, 1), "per_core": round(docs / wall / cores, 1),
                                  "peak_mib": round(peak)}
        print(f"  {n:,} docs, {name}: {docs:,} in, {kept if kept is not None else '-'} out, {wall:.0f} s, "
              f"{docs / wall:.0f} docs/s, peak {peak:.0f} MiB", flush=True)
    return result


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    mem = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) / 2**20
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--classify-max", type=int, default=None, help="skip classify above this many documents")
    ap.add_argument("--table", action="store_true", help="print the table of the last run (bench/out/scale/results.json)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, help="run only these stages again, on the last run's outputs "
                    "(the other stages' figures stay); e.g. --stages seeds after a change to the seeds stage")
    args = ap.parse_args()
    saved = json.loads((OUT / "results.json").read_text()) if (OUT / "results.json").exists() else {"results": {}}
    if args.table:
        print(f"scale benchmark on {saved['machine']}")
        return table({int(n): r for n, r in saved["results"].items()})
    pool = paragraph_pool()
    clf = classifier()
    print(f"scale benchmark on {machine()}; local executor, {TASKS} tasks on {os.cpu_count()} workers; "
          f"{len(pool):,} distinct real paragraphs", flush=True)
    results = {n: run_scale(n, pool, clf, args.classify_max, args.stages, saved["results"].get(str(n)))
               for n in args.docs}
    if args.stages:  # the sizes not rerun stay in the table
        results = dict(sorted({**{int(k): v for k, v in saved["results"].items()}, **results}.items()))
    (OUT / "results.json").write_text(json.dumps({"machine": machine(), "results": results}, indent=2))
    table(results)


def table(results: dict) -> None:
    """Per stage and size: seconds, docs/s, docs/s per core, peak MiB; the ratio of the two largest sizes' peaks."""
    sizes = list(results)
    head = "".join(f" | {n:>7,} docs: s   docs/s  /core  peak MiB" for n in sizes)
    print(f"\n{'stage':<14}{head} | peak ratio, largest two sizes")
    for name in results[sizes[0]]["stages"]:
        cells, peaks = "", []
        for n in sizes:
            st = results[n]["stages"].get(name)
            if st is None:
                cells += f" | {'(skipped: --classify-max)':>37}"
                continue
            cells += f" | {st['seconds']:>11.0f} {st['docs_per_s']:>8.0f} {st['per_core']:>6.0f} {st['peak_mib']:>9,d}"
            peaks.append((n, st["peak_mib"]))
        ratio = f"{peaks[-1][1] / peaks[-2][1]:.2f} ({peaks[-2][0]:,} -> {peaks[-1][0]:,})" if len(peaks) > 1 else "-"
        print(f"{name:<14}{cells} | {ratio}")
    for n in sizes:
        st, c = results[n]["stages"], results[n]["corpus"]
        exact = st["seeds"]["docs_out"] - st["exact dedup"]["docs_out"]
        near = st["exact dedup"]["docs_out"] - st["MinHash dedup"]["docs_out"]
        print(f"{n:,} docs: {c['bytes'] / 2**20:.0f} MiB of JSONL; seeds kept {st['seeds']['docs_out']:,}; exact dedup "
              f"removed {exact:,} (planted {c['exact_copies']:,} before seeds), MinHash removed {near:,} "
              f"(planted {c['near_duplicates']:,})")
    slow = min(results[sizes[-1]]["stages"].items(), key=lambda kv: kv[1]["docs_per_s"])
    print(f"bottleneck at {sizes[-1]:,}: {slow[0]} ({slow[1]['per_core']:.0f} docs/s per core)")


if __name__ == "__main__":
    main()
