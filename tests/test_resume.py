"""kill -9 in the middle of a multi-task run, rerun: the same records as an uninterrupted run, once each."""

import os
import signal
import subprocess
import sys
import time

from tests.conftest import LEGAL, REPO, load_stats, need, read_rows, synthweb

LIGHT = [  # the resume logic does not depend on the filters: keep the two cheap ones
    "--set", "executor.tasks=8", "--set", "executor.workers=2", "--set", "input.limit=2400",
    "--set", "seeds.filters.gopher_repetition.enabled=false", "--set", "seeds.filters.c4.enabled=false",
    "--set", "seeds.filters.fineweb.enabled=false", "--no-progress",
]


def test_kill9_mid_run_then_rerun_gives_the_uninterrupted_result(tmp_path):
    src = str(need(LEGAL))
    ref = synthweb("seeds", "--input", src, "--output", str(tmp_path / "ref"), *LIGHT)
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "crash"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "seeds", "--input", src, "--output", str(out), *LIGHT],
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
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: CLI, pool workers, helpers
    proc.wait()
    done = len(list(completions.glob("*")))
    assert 2 <= done < 8 and not (out / "stats.json").exists()

    again = synthweb("seeds", "--input", src, "--output", str(out), *LIGHT)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout and f"{done}/8 tasks already complete" in again.stdout
    for tag in ("data", "removed"):
        got = [r["id"] for r in read_rows(out / tag)]
        want = [r["id"] for r in read_rows(tmp_path / "ref" / tag)]
        assert len(got) == len(set(got)), f"duplicates in {tag}"
        assert sorted(got) == sorted(want), f"{tag}: resumed run differs from the uninterrupted one"
    assert load_stats(out)["records_in"] == load_stats(tmp_path / "ref")["records_in"] == 2400
    assert not (out / "_parts").exists() and not list(out.rglob("*.tmp"))


def test_unfinished_run_of_another_config_is_not_mixed_in(tmp_path):
    out = tmp_path / "o"
    (out / "_logs").mkdir(parents=True)
    (out / "_logs" / "state.json").write_text('{"config_hash": "0123456789ab", "run_id": "x", "plan": null}')
    r = synthweb("seeds", "--input", str(need(LEGAL)), "--output", str(out), *LIGHT)
    assert r.returncode == 2 and "unfinished run of different settings (config 0123456789ab vs " in r.stderr
