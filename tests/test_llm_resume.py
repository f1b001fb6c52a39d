"""kill -9 a generation run halfway, rerun: every request that had completed comes from the cache
(never re-sent), and the output is complete with each request once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from pipeline.llm.types import Result
from tests.conftest import CALL_TIMEOUT, REPO, load_stats, read_rows, run_group, write_prompts

N = 24


def cached(db) -> dict[str, Result]:
    if not db.exists():
        return {}
    con = sqlite3.connect(str(db), timeout=30)
    try:
        return {r.request_id: r for r in (Result.from_json(x) for (x,) in con.execute("SELECT result FROM results"))}
    except sqlite3.OperationalError:  # table not created yet
        return {}
    finally:
        con.close()


def test_kill9_then_rerun_serves_completed_requests_from_the_cache(tmp_path):
    src = tmp_path / "prompts.jsonl"
    rows = write_prompts(src, N)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "pipeline.cli", "infer", "--input", str(src), "--output", str(out),
            "--set", "input.text_key=prompt", "--set", "llm.sampling.max_tokens=32", "--set", "llm.chunk_size=4",
            "--set", "executor.tasks=1", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    db = out / "_llm_cache" / "requests.sqlite"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and len(cached(db)) < 8:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = cached(db)
    assert 8 <= len(before) < N, len(before)
    assert not (out / "stats.json").exists() and not list(out.glob("data/*.parquet"))

    # resumed with other executor settings and another endpoint (none of them shapes a row): it goes on
    other = ["--set", "executor.workers=2", "--set", "executor.slurm.time=12:00:00", "--set", "llm.openai.concurrency=8",
             "--set", "llm.openai.base_url=http://replica-2:8000/v1", "--set", "llm.cost_per_gpu_hour=3.5"]
    again = run_group(args + other, env=env)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout
    llm = load_stats(out)["llm"]
    assert llm["cache_hits"] == len(before), "a request completed before the kill was not served from the cache"
    assert llm["sent"] == N - len(before), "a completed request was sent again"
    got = read_rows(out / "data")
    ids = [r["id"] for r in got]
    assert len(ids) == len(set(ids)) == N and set(ids) == {r["id"] for r in rows}
    by_id = {r["id"]: r for r in got}
    for rid, res in before.items():  # the cached answers are the ones in the output
        assert by_id[rid]["text"] == res.text


def test_a_batch_log_shows_answers_written_while_the_engine_works(tmp_path):
    """Before: `make generate > log` said "documents 24/24 100%" after 30 s and then nothing for 5 minutes
    ("tasks 0/2, 424 tok" the whole time): it counted documents read, not answers. Now, with no TTY, a line
    comes every SYNTHWEB_PROGRESS_EVERY_S seconds (30 by default) with the answers written against those
    asked, and it moves inside one engine call (16 requests in one chunk, sub-batches of 4); `synthweb status`
    shows the same line while the stage runs."""
    import re

    src = tmp_path / "prompts.jsonl"
    write_prompts(src, 16)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "pipeline.cli", "infer", "--input", str(src), "--output", str(out),
            "--set", "input.text_key=prompt", "--set", "llm.sampling.max_tokens=24", "--set", "llm.chunk_size=16",
            "--set", "llm.transformers.batch_size=4", "--set", "executor.tasks=1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SYNTHWEB_PROGRESS_EVERY_S": "1"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    from pipeline.stages.status import lines
    from pipeline.stages.status import status as status_of

    status = ""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not re.search(r"answers [1-9]", status):
        time.sleep(0.5)
        try:
            status = "\n".join(lines(None, {"stages": status_of(out)}))
        except Exception:  # noqa: BLE001 - the folder is still being set up
            status = ""
    _, err = proc.communicate(timeout=CALL_TIMEOUT)
    assert proc.returncode == 0, err[-2000:]
    answers = [(int(a), int(b)) for a, b in re.findall(r"answers (\d+)/(\d+) asked", err)]
    assert answers and answers[-1][0] <= 16 and all(b == 16 for _, b in answers), err[-2000:]
    assert any(0 < a < 16 for a, _ in answers), f"no line while the engine worked: {answers}"
    assert [a for a, _ in answers] == sorted(a for a, _ in answers)  # it only moves forward
    assert "out tok/s" in err and "ETA" in err
    assert "progress: " in status and "answers" in status, status
