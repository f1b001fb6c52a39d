"""Readers on real data: every format, sharding, limits, the Hub path and the offline fallback."""

import gzip
import io
import json
import shutil

import pyarrow.parquet as pq
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.config import InputConfig
from pipeline.errors import UserError
from pipeline.io.readers import _hub_reachable, make_reader, plan_input
from tests.conftest import CC_SAMPLE, FAST, HTML, LEGAL, need, synthweb


def read_all(cfg: InputConfig, world: int = 1) -> list:
    plan = plan_input(cfg)
    return [d for rank in range(world) for d in make_reader(plan, cfg).run(None, rank, world)]


def test_jsonl_gz_real_pages_keep_ids_and_urls():
    docs = read_all(InputConfig(source=str(need(CC_SAMPLE)), url_key="metadata.url"))
    assert len(docs) == 697 and len({d.id for d in docs}) == 697
    assert sum(1 for d in docs if d.metadata["url"]) > 690
    assert "warc_date" in docs[0].metadata


@pytest.mark.parametrize("world", [2, 3])
def test_single_file_is_dealt_out_by_record_across_tasks(world):
    cfg = InputConfig(source=str(need(CC_SAMPLE)))
    plan = plan_input(cfg)
    per_task = [[d.id for d in make_reader(plan, cfg).run(None, r, world)] for r in range(world)]
    flat = [i for ids in per_task for i in ids]
    assert len(flat) == len(set(flat)) == 697 and all(len(ids) > 697 // world - 2 for ids in per_task)


def test_global_limit_is_exact_across_tasks():
    cfg = InputConfig(source=str(need(CC_SAMPLE)), limit=101)
    assert len(read_all(cfg, world=4)) == 101
    cfg = InputConfig(source=str(need(LEGAL)), limit=250)  # 65 files: sharded by file
    assert len(read_all(cfg, world=4)) == 250


def test_parquet_folder_real_scored_pages():
    docs = read_all(InputConfig(source=str(need(LEGAL))), world=3)
    assert len(docs) == 6500
    d = docs[0]
    assert d.metadata["url"].startswith("http") and "score" in d.metadata and d.metadata["source"].startswith(str(LEGAL))


def test_html_folder_with_url_map_and_canonical_links():
    cfg = InputConfig(source=str(need(HTML) / "html"), url_map=str(HTML / "ground-truth.json"))
    docs = read_all(cfg, world=2)
    gold = json.loads((HTML / "ground-truth.json").read_text())
    assert len(docs) == 181 and all(d.metadata["content_type"] == "html" for d in docs)
    assert all(d.metadata["url"] == gold[d.id]["url"] for d in docs)
    no_map = read_all(InputConfig(source=str(HTML / "html")))
    assert sum(1 for d in no_map if d.metadata["url"]) > 100  # from <link rel=canonical> / og:url


def test_warc_built_from_real_pages(tmp_path):
    src = sorted((need(HTML) / "html").glob("*.html.gz"))[:12]
    gold = json.loads((HTML / "ground-truth.json").read_text())
    path = tmp_path / "crawl.warc.gz"
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        for p in src:
            body = gzip.decompress(p.read_bytes())
            key = p.name.split(".")[0]
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(gold[key]["url"], "response", payload=io.BytesIO(body), http_headers=headers))
    docs = read_all(InputConfig(source=str(path)))
    assert len(docs) == 12 and {d.metadata["url"] for d in docs} == {gold[p.name.split(".")[0]]["url"] for p in src}
    assert all(d.metadata["content_type"] == "html" and "<" in d.text for d in docs)


def test_hub_reader_streams_a_dataset_by_name_or_folder(tmp_path):
    # A dataset folder is loaded by the same datasets.load_dataset(name, split=..., streaming=True) call
    # as a Hub name; this machine cannot reach the Hub, so a real local dataset stands in for it.
    ds = tmp_path / "my-dataset" / "data"
    ds.mkdir(parents=True)
    for f in sorted(need(LEGAL).glob("*.parquet"))[:3]:
        shutil.copy(f, ds / f.name)
    cfg = InputConfig(source=str(tmp_path / "my-dataset"), format="hf", hf_name=None, limit=120, streaming=True)
    docs = read_all(cfg, world=2)
    assert len(docs) == 120 and len({d.id for d in docs}) == 120
    assert docs[0].metadata["url"].startswith("http") and docs[0].metadata["source"].startswith("hf://datasets/")


def test_offline_hub_falls_back_to_python_docs(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = InputConfig(limit=50)
    plan = plan_input(cfg)
    assert plan.format == "python-docs" and "offline demo corpus" in plan.notice
    docs = read_all(cfg, world=2)
    assert len(docs) == 50 and all(len(d.text) >= 300 for d in docs)
    with pytest.raises(UserError, match="offline_fallback is none"):
        plan_input(InputConfig(offline_fallback="none"))


def test_a_mistyped_path_is_never_replaced_by_the_demo_corpus(tmp_path, monkeypatch):
    """Issue: `--input myseeds/pages.jsonl` or `--input runs/data` (paths that do not exist) were taken as
    Hub names and, offline, replaced by the Python-docs demo corpus with exit 0."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="input not found: myseeds/pages.jsonl"):
        plan_input(InputConfig(source="myseeds/pages.jsonl"))
    with pytest.raises(UserError, match="runs/data.*no local path of that name.*only the default source"):
        plan_input(InputConfig(source="runs/data"))
    for args in (["seeds", "--input", "myseeds/pages.jsonl"], ["dedup", "--input", "runs/data"]):
        r = synthweb(*args, "--output", str(tmp_path / "o"), "--no-progress")
        assert r.returncode == 2 and "demo corpus" not in r.stdout and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not list((tmp_path / "o").glob("data/*.parquet"))


def test_a_run_folder_as_input_means_its_kept_rows(tmp_path):
    """Issue: dedup on a seeds run folder read its removed/ pages too (697 = 102 kept + 595 dropped)."""
    out = tmp_path / "seeds"
    r = synthweb("seeds", "--input", str(need(CC_SAMPLE)), "--output", str(out), *FAST)
    assert r.returncode == 0, r.stderr
    kept = sum(pq.read_metadata(f).num_rows for f in (out / "data").glob("*.parquet"))
    assert (out / "removed").exists() and kept < 697
    plan = plan_input(InputConfig(source=str(out)))
    assert plan.files and all("/data/" in f for f in plan.files) and "not removed/" in plan.notice
    r = synthweb("dedup", "--input", str(out), "--output", str(tmp_path / "d"), *FAST)
    assert r.returncode == 0, r.stderr
    assert "reading its kept rows" in r.stdout
    assert json.loads((tmp_path / "d" / "stats.json").read_text())["records_in"] == kept


def test_unreachable_endpoint_is_detected_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    ok, why = _hub_reachable(timeout=2)
    assert not ok and "127.0.0.1" in why


def test_jsonl_plain_and_zstd(tmp_path):
    import zstandard

    with gzip.open(need(CC_SAMPLE), "rb") as f:
        raw = b"".join(f.readline() for _ in range(25))
    (tmp_path / "plain.jsonl").write_bytes(raw)
    (tmp_path / "pages.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    plain = read_all(InputConfig(source=str(tmp_path / "plain.jsonl")))
    zst = read_all(InputConfig(source=str(tmp_path / "pages.jsonl.zst")))
    assert len(plain) == len(zst) == 25 and [d.id for d in plain] == [d.id for d in zst]
