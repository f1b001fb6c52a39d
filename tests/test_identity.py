"""A run's identity is what shapes its rows: its inputs and the settings that change output.

Each test is a case measured on real Common Crawl pages that either threw finished work away or reused
stale output with exit 0 before: a stage over a redone input, a resume after changing workers or Slurm
time, an unfinished run folder read as input, an output folder inside an input folder, and a refusal
that named two hashes instead of the key that changed."""

from __future__ import annotations

import gzip
import json
import re
import shutil

import pytest

from tests.conftest import CC_SAMPLE, load_stats, need, read_rows, synthweb

FAST = ["--no-progress", "--set", "executor.tasks=2", "--set", "executor.workers=1"]


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Two files of distinct real Common Crawl pages (A: the first 120 records, B: the next 120)."""
    d = tmp_path_factory.mktemp("pages")
    recs = [json.loads(line) for _, line in zip(range(240), gzip.open(need(CC_SAMPLE), "rt"))]
    for name, part in (("a", recs[:120]), ("b", recs[120:])):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return d / "a.jsonl", d / "b.jsonl"


def _ids(folder):
    return sorted(r["id"] for r in read_rows(folder))


def test_a_stage_over_a_redone_input_refuses_its_stale_output(tmp_path, pages):
    """Before: seeds on A, dedup on its data/, seeds --force on B into the same folder, the same dedup again:
    "already complete; nothing to do", exit 0, its rows sharing no id with the seeds now in its input."""
    a, b = pages
    seeds, dd = tmp_path / "seeds", tmp_path / "dd"
    assert synthweb("seeds", "--input", str(a), "--output", str(seeds), *FAST).returncode == 0
    dedup = ["dedup", "--method", "exact", "--input", str(seeds / "data"), "--output", str(dd), *FAST]
    assert synthweb(*dedup).returncode == 0
    assert synthweb("seeds", "--input", str(b), "--output", str(seeds), "--force", *FAST).returncode == 0
    r = synthweb(*dedup)
    assert r.returncode == 2 and "its output is stale" in r.stderr and "--force" in r.stderr, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = synthweb(*dedup, "--force")
    assert r.returncode == 0
    assert set(_ids(dd / "data")) <= set(_ids(seeds / "data")) and _ids(dd / "data")


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    """The whole Common Crawl sample (697 pages) in 8 files, so that each of 8 tasks has work; and a clean
    seeds run of it (8 tasks, 1 worker)."""
    d = tmp_path_factory.mktemp("eight")
    recs = [line for line in gzip.open(need(CC_SAMPLE), "rt")]
    (d / "in").mkdir()
    for i in range(8):
        (d / "in" / f"part-{i}.jsonl").write_text("".join(recs[i::8]))
    r = synthweb("seeds", "--input", str(d / "in"), "--output", str(d / "clean"), *EIGHT)
    assert r.returncode == 0, r.stderr
    return d / "in", d / "clean"


EIGHT = ["--no-progress", "--set", "executor.tasks=8", "--set", "executor.workers=1"]


def _stop_after(args: list[str], out, tasks: int, sig: int) -> int:
    """Start `synthweb ARGS`, send SIG once ``tasks`` tasks are complete; returns the tasks complete then."""
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    done_dir = out / "_logs" / "completions"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and \
            (len(list(done_dir.glob("*"))) if done_dir.exists() else 0) < tasks:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be stopped"
    os.kill(proc.pid, sig)
    proc.wait(timeout=120)
    done = len(list(done_dir.glob("*")))
    assert tasks <= done < 8 and not (out / "stats.json").exists(), done
    return done


def test_resume_goes_on_after_a_change_that_does_not_shape_rows(tmp_path, eight):
    """As measured: `seeds` with 8 tasks stopped by SIGTERM after 5 of 8 tasks, rerun with executor.workers=2
    instead of 1 (and more Slurm time and memory, another server replica): before, "holds an unfinished run
    of a different config ... use --force", throwing the 5 finished tasks away. Now it resumes, runs only the
    tasks left, and gives the clean run's ids. A setting that shapes rows is still refused, naming the key."""
    import signal

    src, clean = eight
    out = tmp_path / "o"
    done = _stop_after(["seeds", "--input", str(src), "--output", str(out), *EIGHT], out, 5, signal.SIGTERM)
    r = synthweb("seeds", "--input", str(src), "--output", str(out), *EIGHT, "--set", "executor.workers=2",
                 "--set", "executor.slurm.time=08:00:00", "--set", "executor.slurm.mem_per_cpu_gb=8",
                 "--set", "llm.openai.base_url=http://replica-2:8000/v1")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout and f"{done}/8 tasks already complete" in r.stdout
    assert _ids(out / "data") == _ids(clean / "data") and _ids(out / "removed") == _ids(clean / "removed")
    assert load_stats(out)["records_in"] == load_stats(clean)["records_in"] == 697
    r = synthweb("seeds", "--input", str(src), "--output", str(out), *EIGHT, "--set", "seeds.filters.min_chars=300")
    assert r.returncode == 2 and "changed: seeds.filters.min_chars: 200 -> 300" in r.stderr, r.stderr


def test_an_unfinished_run_folder_is_not_an_input(tmp_path, eight):
    """As measured: `seeds` killed with kill -9 before it finished, then `dedup --input` that folder: it read the
    kept and removed rows of _parts/ alike (610 records where a finished run keeps 102), exit 0."""
    import signal

    src, _ = eight
    seeds = tmp_path / "seeds"
    _stop_after(["seeds", "--input", str(src), "--output", str(seeds), *EIGHT], seeds, 2, signal.SIGKILL)
    for folder in (seeds, seeds / "data"):
        r = synthweb("dedup", "--method", "exact", "--input", str(folder), "--output", str(tmp_path / "dd"), *FAST)
        assert r.returncode == 2 and "unfinished seeds run" in r.stderr and "rerun that stage" in r.stderr, r.stderr
        assert not (tmp_path / "dd" / "data").exists()
    r = synthweb("tokenize", "--input", str(seeds), "--output", str(tmp_path / "tok"))  # before: 58 documents, 5 kept
    assert r.returncode == 2 and "unfinished seeds run" in r.stderr, r.stderr


def test_an_output_folder_inside_an_input_folder_is_not_read_as_pages(tmp_path, pages):
    """Before: an output written inside the input folder was read whole on the next run over that folder (its
    data/ and removed/): 40 records for 20 pages, duplicate ids, exit 0."""
    a, _ = pages
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(a, folder / "pages.jsonl")
    n = sum(1 for _ in open(a))
    assert synthweb("seeds", "--input", str(folder), "--output", str(folder / "out"), *FAST).returncode == 0
    r = synthweb("seeds", "--input", str(folder), "--output", str(tmp_path / "again"), *FAST)
    assert r.returncode == 0, r.stderr
    assert load_stats(tmp_path / "again")["records_in"] == n and "left out 1 synthweb output folder" in r.stdout
    assert _ids(tmp_path / "again" / "data") == _ids(folder / "out" / "data")


def test_a_change_that_keeps_size_and_mtime_is_seen(tmp_path, pages):
    """Before: the fingerprint hashed the first and last 64 KiB with size and mtime, so an edit in the middle
    that keeps both (what `rsync -a` or `cp -p` of an edited file leave) was not seen: the finished stage
    said "nothing to do" over its changed input. A file only touched (same bytes) is the same input."""
    import os

    a, _ = pages
    src = tmp_path / "pages.jsonl"
    shutil.copy(a, src)
    out = tmp_path / "o"
    args = ("seeds", "--input", str(src), "--output", str(out), *FAST)
    assert synthweb(*args).returncode == 0
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))  # touched: same bytes
    assert synthweb(*args).returncode == 0
    st = src.stat()
    data = src.read_bytes()
    mid = len(data) // 2
    mid = data.index(b" the ", mid)  # one word of one page in the middle, same length
    src.write_bytes(data[:mid] + b" THE " + data[mid + 5:])
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert src.stat().st_size == st.st_size and src.stat().st_mtime_ns == st.st_mtime_ns
    r = synthweb(*args)
    assert r.returncode == 2 and "changed content" in r.stderr and "its output is stale" in r.stderr, r.stderr


def test_synthweb_run_redoes_what_is_downstream_of_a_changed_input(tmp_path, pages):
    """`synthweb run` over an input file edited since the last run: seeds redoes its work (its input changed),
    and every stage after it finds its own input redone and redoes itself instead of refusing or reusing
    stale rows; a third run reuses everything."""
    from tests.conftest import SMALL_RUN

    a, b = pages
    src = tmp_path / "pages.jsonl"
    shutil.copy(a, src)
    out = tmp_path / "run"
    args = ("run", "--output", str(out), "--until", "tokenize", "--set", f"input.source={src}", *SMALL_RUN, "--no-progress")
    r = synthweb(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    tokens_before = json.loads((out / "tokens" / "textbooks" / "tokens.json").read_text())
    shutil.copy(b, src)  # the same path, other pages
    r = synthweb(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    for stage in ("seeds", "generate", "dedup", "tokenize"):
        assert re.search(rf"^run: {stage}: .*: redoing it$", r.stdout, re.M), (stage, r.stdout[-3000:])
    seeds = set(_ids(out / "seeds" / "data"))
    assert seeds and seeds <= {json.loads(x)["id"] for x in open(b)}
    assert {row["seed_id"] for row in read_rows(out / "generate" / "data")} <= seeds
    assert {row["id"] for row in read_rows(out / "dedup" / "textbooks" / "data")} <= set(_ids(out / "generate" / "data"))
    tokens_after = json.loads((out / "tokens" / "textbooks" / "tokens.json").read_text())
    assert tokens_after["data_fingerprint"] != tokens_before["data_fingerprint"]
    m = json.loads((out / "run.json").read_text())
    assert all(m["stages"][s]["status"] == "ran" for s in ("seeds", "generate", "dedup", "tokenize")), m["stages"]
    r = synthweb(*args)
    assert r.returncode == 0 and "redoing" not in r.stdout
    m = json.loads((out / "run.json").read_text())
    assert all(m["stages"][s]["status"] == "reused" for s in ("seeds", "generate", "dedup", "tokenize")), m["stages"]
