"""Bad input: a clear one-line error (exit 2) or a counted skip; never a traceback, never a partial shard."""

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import (
    CC_SAMPLE,
    FAST,
    HTML,
    assert_no_partial_output,
    load_stats,
    need,
    run_group,
    synthweb,
)


def good_lines(n=40):
    with gzip.open(need(CC_SAMPLE), "rt") as f:
        return [f.readline() for _ in range(n)]


def run_seeds(inp, out, *extra):
    return synthweb("seeds", "--input", str(inp), "--output", str(out), *FAST, *extra)


def assert_user_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr[-2000:]
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_path(tmp_path):
    assert_user_error(run_seeds(tmp_path / "nope.jsonl", tmp_path / "o"), "input not found", "nope.jsonl")
    assert not (tmp_path / "o").exists()


def test_empty_file(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.jsonl").write_bytes(b"")
    assert_user_error(run_seeds(tmp_path / "in" / "empty.jsonl", tmp_path / "o"), "empty.jsonl: empty file")
    (tmp_path / "in" / "good.jsonl").write_text("".join(good_lines(20)))
    r = run_seeds(tmp_path / "in", tmp_path / "o2", "--set", "input.on_bad_record=skip")
    assert r.returncode == 0 and load_stats(tmp_path / "o2")["records_in"] == 20


@pytest.mark.parametrize("bad,what", [
    (b"{not json\n", "line 3: not valid JSON"),
    (b'{"text": "caf\xe9 au lait", "id": "x"}\n', "line 3: invalid UTF-8"),
    (b'{"body": "no text field here", "id": "y"}\n', "line 3: no 'text' field (fields: body, id)"),
    (b'{"text": 12345, "id": "z"}\n', "line 3: field 'text' is int"),
    (b'["a", "list"]\n', "line 3: expected a JSON object"),
])
def test_bad_jsonl_record_named_by_file_and_line_or_skipped(tmp_path, bad, what):
    lines = [ln.encode() for ln in good_lines(30)]
    path = tmp_path / "pages.jsonl"
    path.write_bytes(b"".join(lines[:2]) + bad + b"".join(lines[2:]))
    r = run_seeds(path, tmp_path / "o")
    assert_user_error(r, f"{path}:{what}", "on_bad_record=skip")
    assert_no_partial_output(tmp_path / "o")
    r = run_seeds(path, tmp_path / "o", "--force", "--set", "input.on_bad_record=skip")
    assert r.returncode == 0, r.stderr
    stats = load_stats(tmp_path / "o")
    assert stats["skipped_bad_records"] == {"bad_record": 1} and stats["records_in"] == 30
    assert "skipped bad record" in r.stdout


def test_empty_and_20mb_texts_are_counted_drops(tmp_path):
    lines = good_lines(10)
    big = json.dumps({"id": "huge", "text": ("word " * 4_000_000)})  # 20 MB of text
    empty = json.dumps({"id": "nothing", "text": ""})
    path = tmp_path / "edge.jsonl"
    path.write_text("".join(lines) + big + "\n" + empty + "\n")
    r = run_seeds(path, tmp_path / "o")
    assert r.returncode == 0, r.stderr
    stats = load_stats(tmp_path / "o")
    assert stats["records_in"] == 12
    assert stats["dropped_by_reason"]["too_long"] >= 1 and stats["dropped_by_reason"]["empty"] >= 1
    removed_ids = {r["id"]: r["filter_reason"] for r in pq.read_table(tmp_path / "o" / "removed").to_pylist()}
    assert removed_ids["huge"] == "too_long" and removed_ids["nothing"] == "empty"


def test_parquet_with_wrong_text_column_type(tmp_path):
    pq.write_table(pa.table({"id": ["a", "b"], "text": [1, 2]}), tmp_path / "bad.parquet")
    assert_user_error(run_seeds(tmp_path / "bad.parquet", tmp_path / "o"), "column 'text' has type int64, expected string")
    pq.write_table(pa.table({"id": ["a"], "body": ["hello"]}), tmp_path / "nocol.parquet")
    assert_user_error(run_seeds(tmp_path / "nocol.parquet", tmp_path / "o"), "no column 'text' (columns: id, body)")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    assert_user_error(run_seeds(tmp_path / "broken.parquet", tmp_path / "o"), "not a readable Parquet file")


def test_binary_garbage_html(tmp_path):
    import random

    folder = tmp_path / "site"
    folder.mkdir()
    for p in sorted((need(HTML) / "html").glob("*.html.gz"))[:6]:
        (folder / p.name).write_bytes(p.read_bytes())
    rng = random.Random(0)
    (folder / "garbage.html").write_bytes(bytes(rng.randrange(256) for _ in range(50_000)))
    r = run_seeds(folder, tmp_path / "o")
    assert_user_error(r, "garbage.html", "binary data")
    assert_no_partial_output(tmp_path / "o")
    r = run_seeds(folder, tmp_path / "o", "--force", "--set", "input.on_bad_record=skip")
    assert r.returncode == 0, r.stderr
    stats = load_stats(tmp_path / "o")
    assert stats["skipped_bad_records"] == {"bad_record": 1} and stats["records_in"] == 6


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("run:\n  output: x\nseeds:\n  language:\n    min_scor: 0.5\n")
    r = synthweb("seeds", "--config", str(cfg), "--input", str(CC_SAMPLE), "--output", str(tmp_path / "o"))
    assert_user_error(r, f"{cfg}:5", "unknown key 'seeds.language.min_scor'", "did you mean 'min_score'")
    r = synthweb("seeds", "--set", "executor.kind=kubernetes", "--output", str(tmp_path / "o"))
    assert_user_error(r, "--set executor.kind=kubernetes", "'local', 'slurm' or 'ray'")


def test_truncated_gzip_is_named(tmp_path):
    data = need(CC_SAMPLE).read_bytes()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    assert_user_error(run_seeds(path, tmp_path / "o"), "cut.jsonl.gz:line", "corrupt or truncated")
    assert_no_partial_output(tmp_path / "o")


def test_a_failed_run_is_shown_failed_and_resumes_once_its_input_is_fixed(tmp_path):
    """Before: `status` called a failed run "rerun to resume" (the rerun failed the same way), and after the bad
    line was fixed the rerun refused: "finished tasks read the old input" when no task had finished."""
    lines = [ln.encode() for ln in good_lines(30)]
    path = tmp_path / "pages.jsonl"
    path.write_bytes(b"".join(lines[:2]) + b"{not json\n" + b"".join(lines[2:]))
    out = tmp_path / "o"
    assert_user_error(run_seeds(path, out), "line 3: not valid JSON")
    st = synthweb("status", str(out))
    assert st.returncode == 0 and "failed" in st.stdout and "not valid JSON" in st.stdout, st.stdout
    assert "rerun the same command to resume" not in st.stdout
    path.write_bytes(b"".join(lines))  # the bad line fixed
    r = run_seeds(path, out)
    assert r.returncode == 0, r.stderr
    assert load_stats(out)["records_in"] == 30
    assert "done" in synthweb("status", str(out)).stdout


def test_an_output_the_user_cannot_write_is_one_line(tmp_path):
    """Run as a user without write permission (as root, CI's user, the run drops to nobody with setpriv: root
    writes anywhere, so a root-only run of this test would assert nothing), and into a read-only mount."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="synthweb-perm-"))  # outside pytest's 0700 tmp, so nobody can reach it
    try:
        base.chmod(0o755)
        pages = base / "pages.jsonl"
        pages.write_text("".join(good_lines(10)))
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        cmd = [sys.executable, "-m", "pipeline.cli", "seeds", "--input", str(pages), "--output", str(locked / "o"), *FAST]
        env = {**os.environ, "HOME": str(base), "HF_HUB_OFFLINE": "1"}
        if os.geteuid() == 0:
            if not shutil.which("setpriv"):
                pytest.fail("running as root needs setpriv (util-linux) to test as another user")
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        r = run_group(cmd, env=env)
        assert_user_error(r, f"--output {locked / 'o'}: no permission to write there")
        assert not (locked / "o").exists()
        if os.geteuid() == 0:  # a read-only file system: root is refused too
            ro = base / "ro"
            ro.mkdir()
            if subprocess.run(["mount", "--bind", "-o", "ro", str(locked), str(ro)], capture_output=True).returncode == 0:
                try:
                    r = run_seeds(pages, ro / "o")
                    assert_user_error(r, f"--output {ro / 'o'}: cannot write there (Read-only file system)")
                finally:
                    subprocess.run(["umount", str(ro)], capture_output=True)
    finally:
        (base / "locked").chmod(0o755) if (base / "locked").exists() else None
        shutil.rmtree(base, ignore_errors=True)
