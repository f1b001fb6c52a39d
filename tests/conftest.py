"""Shared helpers. Tests read real data from ../shared/data and skip with a clear message when absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

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


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (../shared/data is absent in a user's fresh clone)")
    return path


def synthweb(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


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
