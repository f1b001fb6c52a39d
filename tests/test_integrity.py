"""Nothing lost, nothing mixed: one run per output folder, a changed input is never resumed into, a run
that failed validation does not block its own fix, and output mistakes get one line, not a traceback.
Each test reproduces a case that lost or mixed data with exit 0 (or crashed) before."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq

from tests.conftest import (
    CC_SAMPLE,
    FAST,
    REPO,
    SHARED,
    need,
    read_rows,
    real_pages,
    synthweb,
)


def _popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            start_new_session=True)


def _ids(folder) -> list[str]:
    return sorted(r["id"] for r in read_rows(folder))


def test_two_runs_into_one_folder_at_once(tmp_path):
    """Before: both exited 0 and the folder was marked complete with 25 of 102 kept ids."""
    args = ["seeds", "--input", str(need(CC_SAMPLE)), "--output", str(tmp_path / "o"), *FAST]
    a, b = _popen(*args), _popen(*args)
    (_, err_a), (_, err_b) = a.communicate(timeout=600), b.communicate(timeout=600)
    codes = sorted([a.returncode, b.returncode])
    assert codes == [0, 2], (err_a[-2000:], err_b[-2000:])
    refused = err_a if a.returncode == 2 else err_b
    assert "is in use by a running synthweb" in refused and '"pid"' in refused and len(refused.strip().splitlines()) == 1
    single = synthweb("seeds", "--input", str(CC_SAMPLE), "--output", str(tmp_path / "single"), *FAST)
    assert single.returncode == 0
    assert _ids(tmp_path / "o" / "data") == _ids(tmp_path / "single" / "data")
    assert _ids(tmp_path / "o" / "removed") == _ids(tmp_path / "single" / "removed")
    # the lock was released: the same command again is a no-op, not a refusal
    again = synthweb(*args)
    assert again.returncode == 0 and "already complete" in again.stdout


def test_a_changed_input_is_not_resumed_into(tmp_path):
    """Before: seeds stopped at a bad JSONL line 4; the user deleted the line and reran: 41 rows for 40
    records, 10 ids twice, 9 missing, exit 0."""
    pages = real_pages(40, 3000)
    lines = [json.dumps(p) for p in pages]
    lines.insert(3, "{not json")
    src = tmp_path / "pages.jsonl"
    src.write_text("\n".join(lines) + "\n")
    args = ["seeds", "--input", str(src), "--output", str(tmp_path / "o"), "--no-progress",
            "--set", "executor.tasks=1", "--set", "seeds.filters.min_chars=1"]
    r = synthweb(*args)
    assert r.returncode == 2 and "pages.jsonl:line 4" in r.stderr
    lines.pop(3)
    src.write_text("\n".join(lines) + "\n")
    r = synthweb(*args)
    assert r.returncode == 2 and "pages.jsonl changed" in r.stderr and "--force" in r.stderr, r.stderr
    r = synthweb(*args, "--force")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "o"
    ids = [x["id"] for x in read_rows(out / "data") + (read_rows(out / "removed") if (out / "removed").exists() else [])]
    assert sorted(ids) == sorted(p["id"] for p in pages)  # every record once, none twice


def test_a_run_that_failed_validation_does_not_block_its_fix(tmp_path):
    """Before: it left _logs/state.json, so the corrected command was refused ('different config')."""
    bench = need(SHARED / "benchmarks" / "arc_easy.jsonl")
    src = tmp_path / "pages.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in real_pages(20, 1500)))
    bad = tmp_path / "bench.jsonl"
    bad.write_text('{"foo": "what", "bar": 1}\n')
    out = tmp_path / "o"
    r = synthweb("decontaminate", "--input", str(src), "--output", str(out), "--benchmarks", str(bad), *FAST)
    assert r.returncode == 2 and "bench.jsonl" in r.stderr
    r = synthweb("decontaminate", "--input", str(src), "--output", str(out), "--benchmarks", str(bench), *FAST)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "stats.json").read_text())["records_in"] == 20


def test_output_mistakes_are_one_line(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for stage in ("seeds", "dedup"):
        r = synthweb(stage, "--input", str(need(CC_SAMPLE)), "--output", str(a_file), *FAST)
        assert r.returncode == 2 and "is a file, not a folder" in r.stderr and "Traceback" not in r.stderr, r.stderr
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root writes anywhere: nothing to refuse
            return
        r = synthweb("seeds", "--input", str(CC_SAMPLE), "--output", str(ro / "out"), *FAST)
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    finally:
        ro.chmod(0o700)


def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path):
    """kill -9 of the run (its process group, as a scheduler or Ctrl-C does) leaves the lock file behind;
    the kernel released the lock with the processes, so the rerun takes it over and resumes. (Workers
    that outlive a killed parent still hold it: a rerun then refuses instead of writing beside them.)"""
    args = ["seeds", "--input", str(need(CC_SAMPLE)), "--output", str(tmp_path / "o"), *FAST]
    p = _popen(*args)
    lock = tmp_path / "o" / ".synthweb.lock"
    import time

    for _ in range(300):
        if lock.exists() and lock.read_text().strip():
            break
        time.sleep(0.1)
    holder = json.loads(lock.read_text())
    assert holder["pid"] == p.pid and holder["stage"] == "seeds"
    import signal

    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    r = synthweb(*args)
    assert r.returncode == 0, r.stderr
    kept = sum(pq.read_metadata(f).num_rows for f in (tmp_path / "o" / "data").glob("*.parquet"))
    assert kept == len(set(_ids(tmp_path / "o" / "data")))


def test_sigterm_stops_like_ctrl_c(tmp_path):
    """Before: SIGTERM printed BrokenPipe tracebacks and left an orphaned multiprocess Manager (parent 1)."""
    import signal
    import time

    args = ["seeds", "--input", str(need(CC_SAMPLE)), "--output", str(tmp_path / "o"), *FAST]
    p = _popen(*args)
    lock = tmp_path / "o" / ".synthweb.lock"
    for _ in range(300):
        if (tmp_path / "o" / "_logs" / "progress").exists():
            break
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "Traceback" not in err and "terminated (SIGTERM)" in err, err[-3000:]
    import psutil

    time.sleep(1)
    left = []  # nothing of the run is left alive: no worker, no Manager, no extraction sandbox
    for x in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if os.getpgid(x.pid) == p.pid and x.info["status"] != psutil.STATUS_ZOMBIE:
                left.append(" ".join(x.info["cmdline"] or []))
        except (ProcessLookupError, psutil.Error):
            pass
    assert not left, f"processes left behind: {left}"
    assert lock.exists() and not lock.read_text().strip()  # released: the holder's record is cleared
    r = synthweb(*args)
    assert r.returncode == 0, r.stderr


def test_the_request_cache_keys_on_the_model_weights_not_its_name(tmp_path):
    """Before: the key held the model's name, so a shared cache served an older model's answers."""
    from pipeline.llm.models import model_identity
    from pipeline.llm.types import Request

    m = tmp_path / "my-model"
    m.mkdir()
    (m / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')
    (m / "model.safetensors").write_bytes(b"\x00" * 1000)
    first = model_identity(str(m))
    assert first == model_identity(str(m)) and first.startswith(str(m) + "#")
    (m / "model.safetensors").write_bytes(b"\x01" * 1000)  # retrained in place, same name, same size
    second = model_identity(str(m))
    assert second != first
    req = Request("r", [{"role": "user", "content": "hi"}])
    assert req.cache_key(first) != req.cache_key(second)
    assert model_identity("someone/some-model-not-cached") == "someone/some-model-not-cached"


def test_empty_files_skipped_are_counted(tmp_path):
    """Before: 0-byte files under on_bad_record: skip were left out uncounted."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text("".join(json.dumps(p) + "\n" for p in real_pages(10, 1500)))
    (src / "b.jsonl").write_text("")
    r = synthweb("seeds", "--input", str(src), "--output", str(tmp_path / "o"), *FAST, "--set", "input.on_bad_record=skip")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert s["skipped_bad_records"] == {"empty_file": 1} and s["records_in"] == 10
