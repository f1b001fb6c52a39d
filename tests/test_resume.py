"""kill -9 in the middle of a multi-task run, rerun: the same records as an uninterrupted run, once each."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import LEGAL, REPO, load_stats, need, read_rows, synthweb

LIGHT = [  # the resume logic does not depend on the filters: keep the two cheap ones
    "--set", "executor.tasks=8", "--set", "executor.workers=2", "--set", "input.limit=2400",
    "--set", "seeds.filters.gopher_repetition.enabled=false", "--set", "seeds.filters.c4.enabled=false",
    "--set", "seeds.filters.fineweb.enabled=false", "--no-progress",
]


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """The uninterrupted run both kill tests compare with."""
    out = tmp_path_factory.mktemp("ref") / "ref"
    r = synthweb("seeds", "--input", str(need(LEGAL)), "--output", str(out), *LIGHT)
    assert r.returncode == 0, r.stderr
    return out


def _start_and_kill(out, whole_group: bool) -> int:
    """Start seeds, kill -9 it after 2 of its 8 tasks finished; returns the tasks finished."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "seeds", "--input", str(need(LEGAL)), "--output", str(out), *LIGHT],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    completions = out / "_logs" / "completions"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        done = len(list(completions.glob("*"))) if completions.exists() else 0
        if done >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    if whole_group:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, pool workers, helpers
    else:
        os.kill(proc.pid, signal.SIGKILL)  # the CLI only: its workers are orphaned mid-task
    proc.wait()
    done = len(list(completions.glob("*")))
    assert 2 <= done < 8 and not (out / "stats.json").exists()
    return done


def _same_as(out, ref) -> None:
    for tag in ("data", "removed"):
        got = {r["id"]: r["text"] for r in read_rows(out / tag)}
        want = {r["id"]: r["text"] for r in read_rows(ref / tag)}
        assert len(got) == len(read_rows(out / tag)), f"duplicates in {tag}"
        assert got == want, f"{tag}: resumed run differs from the uninterrupted one (ids or texts)"
    assert load_stats(out)["records_in"] == load_stats(ref)["records_in"] == 2400
    assert not (out / "_parts").exists() and not list(out.rglob("*.tmp"))


def test_kill9_mid_run_then_rerun_gives_the_uninterrupted_result(tmp_path, ref):
    out = tmp_path / "crash"
    done = _start_and_kill(out, whole_group=True)
    # a worker killed inside a write leaves its temp file (CI hit it, by chance, on a progress counter): plant one
    (out / "_logs" / "progress").mkdir(parents=True, exist_ok=True)
    (out / "_logs" / "progress" / "00007.json.0f91dc.tmp").write_text('{"docs": 1')
    again = synthweb("seeds", "--input", str(need(LEGAL)), "--output", str(out), *LIGHT)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout and f"{done}/8 tasks already complete" in again.stdout
    _same_as(out, ref)


def test_kill9_of_the_parent_alone_leaves_no_worker_behind(tmp_path, ref):
    """Before: after kill -9 of the CLI alone its orphaned workers slept on and held the lock: the rerun was
    refused naming the dead parent, and status said "running". Now each worker follows its parent within a
    second, and the rerun at once resumes to the uninterrupted result."""
    import psutil

    out = tmp_path / "crash"
    _start_and_kill(out, whole_group=False)
    workers = [int(p.name) for p in (out / "_logs" / "workers").iterdir()]
    assert workers, "no worker registered itself"
    again = synthweb("seeds", "--input", str(need(LEGAL)), "--output", str(out), *LIGHT)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout
    assert not [p for p in workers if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    _same_as(out, ref)


def test_unfinished_run_of_another_config_is_not_mixed_in(tmp_path):
    out = tmp_path / "o"
    (out / "_logs").mkdir(parents=True)
    (out / "_logs" / "state.json").write_text('{"config_hash": "0123456789ab", "run_id": "x", "plan": null}')
    r = synthweb("seeds", "--input", str(need(LEGAL)), "--output", str(out), *LIGHT)
    assert r.returncode == 2 and "unfinished run of different settings (config 0123456789ab vs " in r.stderr
