"""synthweb publish: the Hub layout from real stage runs, loaded back with datasets; bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import CC_SAMPLE, FAST, need, read_rows, synthweb


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two real stage runs on Common Crawl pages: seeds, and MinHash dedup of those seeds."""
    need(CC_SAMPLE)
    tmp = tmp_path_factory.mktemp("runs")
    seeds, dedup = tmp / "seeds", tmp / "dedup"
    r = synthweb("seeds", "--input", str(CC_SAMPLE), "--output", str(seeds), "--set", "input.limit=300", *FAST)
    assert r.returncode == 0, r.stderr
    r = synthweb("dedup", "--input", str(seeds / "data"), "--output", str(dedup), *FAST)
    assert r.returncode == 0, r.stderr
    return {"seeds": seeds, "dedup": dedup}


def test_dry_run_layout_loads_with_datasets(runs, tmp_path):
    from datasets import load_dataset

    out = tmp_path / "repo"
    r = synthweb("publish", "--subset", f"filtered-web={runs['seeds']}", "--subset", f"deduped={runs['dedup']}/data",
                 "--repo-id", "someone/synthweb-demo", "--dry-run", str(out), "--set", "publish.max_rows_per_shard=40")
    assert r.returncode == 0, r.stderr
    expected = {"filtered-web": len(read_rows(runs["seeds"] / "data")), "deduped": len(read_rows(runs["dedup"] / "data"))}
    assert 0 < expected["deduped"] <= expected["filtered-web"]
    for name, n in expected.items():
        files = sorted((out / "data" / name).glob("*.parquet"))
        k = len(files)
        assert [f.name for f in files] == [f"train-{i:05d}-of-{k:05d}.parquet" for i in range(k)]
        assert k == -(-n // 40)  # max_rows_per_shard
        assert load_dataset("parquet", data_dir=str(out / "data" / name), split="train").num_rows == n
        # through the card's configs, as load_dataset(repo_id, name) reads them on the Hub
        ds = load_dataset(str(out), name, split="train")
        assert ds.num_rows == n and "history" in ds.column_names and "text" in ds.column_names
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert [c["config_name"] for c in meta["configs"]] == ["filtered-web", "deduped"]
    assert meta["license"] and meta["language"] == ["en"] and meta["size_categories"] == ["n<1K"]
    assert "made by the `seeds` stage" in card and "made by the `dedup` stage" in card
    assert "dropped, by reason" in card and "someone/synthweb-demo" in card
    assert not list(out.rglob("*.tmp"))


def test_run_with_no_final_shards(tmp_path):
    empty = tmp_path / "run"
    (empty / "data").mkdir(parents=True)
    r = synthweb("publish", "--subset", f"web={empty}", "--dry-run", str(tmp_path / "out"))
    assert r.returncode == 2 and "holds no final shards" in r.stderr
    assert not (tmp_path / "out").exists()


def test_invalid_repo_id(runs, tmp_path):
    r = synthweb("publish", "--subset", f"web={runs['seeds']}", "--repo-id", "me/bad name!", "--dry-run", str(tmp_path / "o"))
    assert r.returncode == 2 and "invalid repo id 'me/bad name!'" in r.stderr


def test_missing_token_says_how_to_log_in(runs, tmp_path):
    env = {"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN_PATH": str(tmp_path / "hf-home" / "token")}
    r = synthweb("publish", "--subset", f"web={runs['seeds']}", "--repo-id", "me/data", env=env)
    assert r.returncode == 2 and "no Hugging Face token" in r.stderr and "hf auth login" in r.stderr


TOKEN = "hf_synthwebtest0123456789"


def _env(hub, tmp_path, token=TOKEN) -> dict:
    # HF_HUB_DISABLE_XET: with hf_xet installed, huggingface_hub sends every large file by Xet, which this
    # server does not speak; the LFS path is the one under test (see the note in publish.transfer_mode)
    return {"HF_TOKEN": token, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(tmp_path / "hf-home")}


def _push(runs, tmp_path, hub, *extra, repo="someone/pushed", token=TOKEN):
    return synthweb("publish", "--subset", f"filtered-web={runs['seeds']}", "--repo-id", repo,
                    "--set", f"run.output={tmp_path / 'work'}", *extra, env=_env(hub, tmp_path, token))


def _same_bytes(hub, repo_id: str, folder: Path) -> None:
    import hashlib

    local = {f.relative_to(folder).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
             for f in folder.rglob("*") if f.is_file() and f.name != "publish.json"}
    remote = {p: hashlib.sha256(b).hexdigest() for p, b in hub.repos[repo_id]["files"].items()}
    assert local == remote


def test_push_through_the_lfs_path(runs, tmp_path):
    """The real push (huggingface_hub's create_repo + create_commit) against a local server that answers
    `lfs` for data files: LFS batch, PUT of the bytes, verify, a commit of pointers. A 503 on the first
    commit is retried; the token travels only in the Authorization header of Hub API calls (never to the
    upload URL, never in output or files); the repository rebuilt from the server loads with datasets
    with the same bytes."""
    from datasets import load_dataset

    from tests.hub_server import Hub

    with Hub(TOKEN, fail={"commit": [503]}) as hub:
        r = _push(runs, tmp_path, hub, "--set", "publish.private=true", "--set", "publish.max_rows_per_shard=40")
        assert r.returncode == 0, r.stderr[-3000:]
        assert "HTTP 503, retrying" in r.stdout + r.stderr
        assert TOKEN not in r.stdout + r.stderr
        assert not [p for p in (tmp_path / "work").rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
        kinds = [q["kind"] for q in hub.requests if q["kind"] != "other"]  # other: the client's agent-harness lookup
        assert kinds[0] == "create" and "validate-yaml" in kinds and "preupload" in kinds and kinds.count("commit") == 2
        shards = sorted((tmp_path / "work" / "_publish" / "data" / "filtered-web").glob("*.parquet"))
        assert len(shards) >= 2 and kinds.count("lfs-put") == len(shards) and kinds.count("lfs-verify") == len(shards)
        assert all(q["authorization"] == f"Bearer {TOKEN}" for q in hub.requests
                   if q["kind"] not in ("lfs-put", "validate-yaml", "other"))
        assert all(q["authorization"] is None for q in hub.requests if q["kind"] == "lfs-put")
        repo = hub.repos["someone/pushed"]
        assert repo["lfs_paths"] == {f"data/filtered-web/{f.name}" for f in shards}
        assert repo["private"] and len(repo["commits"]) == 1 and repo["commits"][0].startswith("synthweb")
        assert "publish.json" not in repo["files"] and "README.md" in repo["files"]
        _same_bytes(hub, "someone/pushed", tmp_path / "work" / "_publish")
        clone = hub.checkout("someone/pushed", tmp_path / "clone")
    n = len(read_rows(runs["seeds"] / "data"))
    assert load_dataset(str(clone), "filtered-web", split="train").num_rows == n


def test_push_in_regular_mode(runs, tmp_path):
    """A server that takes every file inside the commit (no LFS) gets the same repository."""
    from datasets import load_dataset

    from tests.hub_server import Hub

    with Hub(TOKEN, lfs=False) as hub:
        r = _push(runs, tmp_path, hub)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "lfs-batch" not in [q["kind"] for q in hub.requests] and not hub.repos["someone/pushed"]["lfs_paths"]
        _same_bytes(hub, "someone/pushed", tmp_path / "work" / "_publish")
        clone = hub.checkout("someone/pushed", tmp_path / "clone")
    assert load_dataset(str(clone), "filtered-web", split="train").num_rows == len(read_rows(runs["seeds"] / "data"))


def test_a_killed_push_resumes_without_resending(runs, tmp_path):
    """Commits of 2 files; the server stalls the 4th upload and the push is killed there. The rerun
    skips the committed files (preupload names their oids) and the stored object, and completes."""
    import signal
    import subprocess
    import sys
    import time

    from tests.hub_server import Hub

    with Hub(TOKEN, hold_after_puts=3) as hub:
        cmd = [sys.executable, "-m", "pipeline.cli", "publish", "--subset", f"filtered-web={runs['seeds']}", "--repo-id",
               "someone/big", "--set", f"run.output={tmp_path / 'work'}", "--set", "publish.max_rows_per_shard=5",
               "--set", "publish.files_per_commit=2"]
        import os

        proc = subprocess.Popen(cmd, env={**os.environ, **_env(hub, tmp_path)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while hub.puts < 4 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert hub.puts >= 4, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        hub.hold_after_puts = None
        hub.release.set()
        stored, committed = set(hub.objects), list(hub.repos["someone/big"]["files"])
        assert len(committed) == 2 and len(stored) == 3  # one commit of two, and one more object uploaded
        before = len(hub.requests)
        r = _push(runs, tmp_path, hub, "--set", "publish.max_rows_per_shard=5", "--set", "publish.files_per_commit=2",
                  repo="someone/big")
        assert r.returncode == 0, r.stderr[-3000:]
        resent = [q["path"].rsplit("/", 1)[1] for q in hub.requests[before:] if q["kind"] == "lfs-put"]
        assert not set(resent) & stored, "the rerun sent an object the server already had"
        shards = list((tmp_path / "work" / "_publish" / "data" / "filtered-web").glob("*.parquet"))
        assert len(resent) == len(shards) - len(stored)
        _same_bytes(hub, "someone/big", tmp_path / "work" / "_publish")


def test_push_faults_say_one_line_and_a_rerun_completes(runs, tmp_path):
    from tests.hub_server import Hub

    # the server refuses the repo id (403): one line, nothing half-done; the rerun completes
    with Hub(TOKEN, fail={"create": [403]}) as hub:
        r = _push(runs, tmp_path, hub)
        assert r.returncode == 2 and "HTTP 403" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert _push(runs, tmp_path, hub).returncode == 0
        _same_bytes(hub, "someone/pushed", tmp_path / "work" / "_publish")

    # a data file changes between preupload and upload: the server refuses the bytes, one line; a rerun
    # rebuilds the layout from the runs and completes
    def change(req, done=[]):
        if not done:
            done.append(1)
            shard = sorted((tmp_path / "work" / "_publish" / "data" / "filtered-web").glob("*.parquet"))[0]
            shard.write_bytes(shard.read_bytes() + b"changed")

    with Hub(TOKEN, on_batch=change) as hub:
        r = _push(runs, tmp_path, hub)
        assert r.returncode == 2 and "sha256 mismatch" in r.stderr and "rerun the same command" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert not hub.repos["someone/pushed"]["commits"]
        assert _push(runs, tmp_path, hub).returncode == 0
        _same_bytes(hub, "someone/pushed", tmp_path / "work" / "_publish")

    # the connection drops in the middle of an upload: retried, the push completes
    with Hub(TOKEN, drop_puts=1) as hub:
        r = _push(runs, tmp_path, hub)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "lfs-put-dropped" in [q["kind"] for q in hub.requests]
        _same_bytes(hub, "someone/pushed", tmp_path / "work" / "_publish")


def test_push_with_a_refused_token(runs, tmp_path):
    from tests.hub_server import Hub

    with Hub("hf_the_right_one") as hub:
        env = {"HF_TOKEN": "hf_a_wrong_one", "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(tmp_path / "hf-home")}
        r = synthweb("publish", "--subset", f"web={runs['seeds']}", "--repo-id", "me/data",
                     "--set", f"run.output={tmp_path / 'work'}", env=env)
    assert r.returncode == 2 and "refused the token" in r.stderr and "hf auth login" in r.stderr
    assert "hf_a_wrong_one" not in r.stdout + r.stderr


def test_republishing_with_another_shard_count_leaves_no_old_shard(runs, tmp_path, monkeypatch):
    """Before: a second publish with another shard count left the first one's train-*-of-* files in the repo,
    and the card's glob then loaded old and new rows together. Now the last commit deletes them; a file the
    user added beside the data stays."""
    from datasets import load_dataset
    from huggingface_hub import HfApi

    from tests.hub_server import Hub

    # this process's own client talks to the local Hub below: a caller's HF_HUB_OFFLINE=1 (read at import)
    # must not refuse it, as the pushes' subprocesses get HF_HUB_OFFLINE=0
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with Hub(TOKEN) as hub:
        r = _push(runs, tmp_path, hub, "--set", "publish.max_rows_per_shard=20")
        assert r.returncode == 0, r.stderr[-3000:]
        first = {p for p in hub.repos["someone/pushed"]["files"] if p.endswith(".parquet")}
        HfApi(endpoint=hub.url, token=TOKEN).upload_file(path_or_fileobj=b"mine", path_in_repo="LICENSE.txt",
                                                         repo_id="someone/pushed", repo_type="dataset")
        r = _push(runs, tmp_path / "again", hub, "--set", "publish.max_rows_per_shard=1000")
        assert r.returncode == 0, r.stderr[-3000:]
        files = hub.repos["someone/pushed"]["files"]
        now = {p for p in files if p.endswith(".parquet")}
        assert len(first) > len(now) >= 1 and not (first - now) & set(files)
        assert files.pop("LICENSE.txt") == b"mine"
        assert "deleted in the last commit" in r.stdout
        _same_bytes(hub, "someone/pushed", tmp_path / "again" / "work" / "_publish")
        clone = hub.checkout("someone/pushed", tmp_path / "clone")
    assert load_dataset(str(clone), "filtered-web", split="train").num_rows == len(read_rows(runs["seeds"] / "data"))
