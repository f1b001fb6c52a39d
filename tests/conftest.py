"""Shared helpers. Tests read real data from ../shared/data and skip with a clear message when absent."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

# pytest-xdist workers share the cores: each worker's processes (its own torch, the stages it launches,
# their Slurm jobs, which inherit the environment) take their share, not all of them. Two 2-thread torch
# processes on 2 cores spin against each other and took 2.3x as long as two 1-thread ones.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _share = str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # torch; numpy's BLAS
        os.environ.setdefault(_var, _share)
    if "torch" in sys.modules:  # a plugin imported it before this file: its thread pool is already sized
        sys.modules["torch"].set_num_threads(int(_share))

REPO = Path(__file__).resolve().parent.parent
SHARED = (REPO.parent / "shared" / "data").resolve()
CC_SAMPLE = SHARED / "web" / "commoncrawl-2019-sample.jsonl.gz"
LEGAL = SHARED / "web" / "fineweb-sample-legal-scored"
HTML = SHARED / "html" / "article-extraction-benchmark"

# small, fast runs: two tasks on two workers
FAST = ["--set", "executor.tasks=2", "--set", "executor.workers=2", "--no-progress"]
# Tests of provenance, routing, resume and the like cap replies at a few dozen tokens to stay fast; such a
# reply is no document (Gopher's quality filter wants 50 words), so they run without the quality gate.
# The gate has its own tests: planted degenerate replies (test_gate.py) and a default-size generation
# with the real model (test_generate.py::test_default_generation_passes_the_gate).
NO_GATE = ["--set", "quality_gate.enabled=false"]

# the cluster tests' small LLM stages: a generate of a few short textbooks (topics and personas on), and a
# `synthweb run` of seeds -> generate -> dedup -> tokenize; same arguments on the cluster and locally
SMALL_GENERATE = ["--set", "executor.tasks=2", "--set", "generate.num_prompts=3", "--set", "generate.max_tokens=24",
                  "--set", "generate.min_tokens=1", "--set", "generate.topics.sample_size=20",
                  "--set", "generate.topics.min_clusters=2", "--set", "generate.topics.max_clusters=3",
                  "--set", "generate.personas.from_seeds=2", *NO_GATE]
SMALL_RUN = ["--set", "run.stages=[seeds, generate, dedup, tokenize]", "--set", "executor.tasks=2",
             "--set", "generate.num_prompts=2", "--set", "generate.max_tokens=16", "--set", "generate.min_tokens=1",
             "--set", "generate.topics.enabled=false", "--set", "generate.personas.enabled=false", *NO_GATE,
             "--set", "generate.teachers=[]", "--set", "tokenize.validation_fraction=0"]
# runs a command and prints the peak RSS of its process tree's largest process: the launcher's memory
PEAK = """import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stdout.write(r.stdout); sys.stderr.write(r.stderr)
print("PEAK_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(r.returncode)"""


# a hang guard for one `synthweb` call, not a speed check: a run that takes 3 min alone took 15 beside a
# CPU-heavy job (the Ray run test); pytest's own guard (pyproject's timeout) is above it
CALL_TIMEOUT = 1800


def run_group(cmd: list[str], env: dict | None = None, timeout: float = CALL_TIMEOUT) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` in a process group of its own: when the call
    times out, or pytest's hang guard stops the test, the whole group is killed (the CLI, its workers, its
    forkserver), so a run cut short does not go on eating the CPU beside the rest of the suite."""
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def launcher_peak(*args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """`synthweb ARGS` as a user runs it, and the peak memory (MB) of that launching process."""
    r = run_group([sys.executable, "-c", PEAK, sys.executable, "-m", "pipeline.cli", *args],
                  env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    peak = int(r.stdout.split("PEAK_KB")[-1]) / 1024 if "PEAK_KB" in r.stdout else float("nan")
    return r, peak


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (../shared/data is absent in a user's fresh clone)")
    return path


def synthweb(*args: str, env: dict | None = None, timeout: float = CALL_TIMEOUT) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    return run_group([sys.executable, "-m", "pipeline.cli", *args], env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                     timeout=timeout)


def read_rows(folder: Path) -> list[dict]:
    files = sorted(folder.glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def load_stats(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


def assert_no_partial_output(out: Path) -> None:
    """After a failed run: no shard in the final layout and no temp file anywhere."""
    assert not list(out.glob("data/*.parquet")), "a failed run left shards in data/"
    assert not list(out.rglob("*.tmp")), "a failed run left temp files"


def real_pages(n: int, max_chars: int = 600) -> list[dict]:
    """The first n distinct real FineWeb pages (id, url, text cut to max_chars)."""
    need(LEGAL)
    seen, pages = set(), []
    for f in sorted(LEGAL.glob("*.parquet")):
        for r in pq.read_table(f, columns=["id", "url", "text"]).to_pylist():
            if r["id"] in seen:
                continue
            seen.add(r["id"])
            pages.append({"id": r["id"], "url": r["url"], "text": r["text"][:max_chars]})
            if len(pages) == n:
                return pages
    return pages


def write_prompts(path: Path, n: int, max_chars: int = 600) -> list[dict]:
    """A JSONL prompts file built from real pages: one 'summarise this page' request per page."""
    rows = [{"id": p["id"], "url": p["url"], "prompt": f"Summarise this web page in two sentences.\n\n{p['text']}"}
            for p in real_pages(n, max_chars)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


# The longest modules start first. With `--dist loadscope` a module runs whole on one worker, so a long one
# started last is the suite's tail: by file order the Slurm tests began last and left a core idle for ten
# minutes. Seconds of worker time per module, measured 2026-12-07 evening (two workers, the LLM in bf16;
# fp32 again since, so its modules take longer); only the order depends on them, a module not listed runs
# after these in file order. `make test` passes --no-loadscope-reorder.
MODULE_SECONDS = {"test_slurm": 620, "test_run": 360, "test_generate": 340, "test_filter": 330, "test_train": 260,
                  "test_ray": 230, "test_rephrase": 215, "test_identity": 170, "test_resume": 170, "test_bad_input": 150,
                  "test_llm": 85, "test_meaning": 80, "test_annotate": 55, "test_llm_resume": 52, "test_seeds": 50,
                  "test_decontaminate": 46, "test_llm_openai": 43, "test_dedup": 40, "test_publish": 30}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -MODULE_SECONDS.get(Path(str(item.fspath)).stem, 0))  # stable: a module's order stays
