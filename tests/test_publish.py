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


def test_push_to_a_local_hub_server(runs, tmp_path):
    """The real push (huggingface_hub's create_repo + upload_folder) against a local server that speaks
    the Hub's repo/preupload/commit API: a 503 on the first commit is retried, the token travels only in
    the Authorization header, and the committed repository loads with datasets."""
    from datasets import load_dataset

    from tests.hub_server import Hub

    token = "hf_synthwebtest0123456789"
    with Hub(token, fail={"commit": [503]}) as hub:
        env = {"HF_TOKEN": token, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(tmp_path / "hf-home")}
        r = synthweb("publish", "--subset", f"filtered-web={runs['seeds']}", "--repo-id", "someone/pushed",
                     "--set", "publish.private=true", "--set", f"run.output={tmp_path / 'work'}", env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "HTTP 503, retrying" in r.stdout + r.stderr
        assert token not in r.stdout + r.stderr
        assert not [p for p in (tmp_path / "work").rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
        kinds = [q["kind"] for q in hub.requests]
        assert kinds[0] == "create" and kinds.count("commit") >= 2 and "preupload" in kinds
        assert all(q["authorization"] == f"Bearer {token}" for q in hub.requests)
        repo = hub.repos["someone/pushed"]
        assert repo["private"] and len(repo["commits"]) == 1 and repo["commits"][0].startswith("synthweb")
        assert "publish.json" not in repo["files"] and "README.md" in repo["files"]
        clone = hub.checkout("someone/pushed", tmp_path / "clone")
    n = len(read_rows(runs["seeds"] / "data"))
    assert load_dataset(str(clone), "filtered-web", split="train").num_rows == n


def test_push_with_a_refused_token(runs, tmp_path):
    from tests.hub_server import Hub

    with Hub("hf_the_right_one") as hub:
        env = {"HF_TOKEN": "hf_a_wrong_one", "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(tmp_path / "hf-home")}
        r = synthweb("publish", "--subset", f"web={runs['seeds']}", "--repo-id", "me/data",
                     "--set", f"run.output={tmp_path / 'work'}", env=env)
    assert r.returncode == 2 and "refused the token" in r.stderr and "hf auth login" in r.stderr
    assert "hf_a_wrong_one" not in r.stdout + r.stderr
