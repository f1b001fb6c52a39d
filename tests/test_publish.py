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
