import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datatrove.data import Document

from pipeline.io import writer as writer_mod
from pipeline.io.writer import ShardWriter, TaskStart, finalize
from pipeline.records import CORE_FIELDS, build_schema, document_to_row, row_to_document

EXPECTED_CORE = [
    ("id", "string"), ("text", "string"), ("url", "string"), ("source", "string"),
    ("history", "list<element: struct<stage: string, run_id: string, config_hash: string, time: timestamp[ms, tz=UTC]>>"),
    ("metadata", "string"),
]


def test_core_schema_is_stable():
    assert [(f.name, str(f.type)) for f in CORE_FIELDS] == EXPECTED_CORE
    schema = build_schema([pa.field("language", pa.string())])
    assert schema.names[-1] == "language" and schema.metadata[b"synthweb.schema_version"] == b"1"
    with pytest.raises(ValueError, match="clashes"):
        build_schema([pa.field("text", pa.string())])


def test_row_round_trip_keeps_typed_and_free_metadata():
    schema = build_schema([pa.field("language", pa.string())])
    doc = Document(text="hello", id="a1", metadata={"url": "http://x", "language": "en", "warc_date": "2019", "n": 3})
    row = document_to_row(doc, schema)
    assert row["url"] == "http://x" and row["language"] == "en"
    assert json.loads(row["metadata"]) == {"warc_date": "2019", "n": 3}
    back = row_to_document(row)
    assert back.id == "a1" and back.metadata["warc_date"] == "2019" and back.metadata["language"] == "en"


def docs(n, prefix="d"):
    return [Document(text=f"text {i} " * 5, id=f"{prefix}{i}", metadata={"url": f"http://e/{i}"}) for i in range(n)]


def make_writer(out, **kw):
    return ShardWriter(str(out), "test", "run1", "hash1", **kw)


def test_writer_splits_shards_and_names_them_like_the_hub(tmp_path):
    w = make_writer(tmp_path, max_rows_per_shard=4, row_group_rows=2)
    for rank in range(2):
        list(TaskStart(str(tmp_path)).run(None, rank, 2))
        list(w.run(iter(docs(5, f"r{rank}-")), rank, 2))
    assert finalize(str(tmp_path)) == {"data": 10}
    files = sorted(p.name for p in (tmp_path / "data").glob("*.parquet"))
    assert files == [f"train-0000{i}-of-00004.parquet" for i in range(4)]
    meta = pq.read_metadata(tmp_path / "data" / files[0])
    assert meta.num_rows == 4 and meta.num_row_groups == 2
    assert meta.row_group(0).column(1).compression == "ZSTD"
    rows = [r for f in files for r in pq.read_table(tmp_path / "data" / f).to_pylist()]
    assert sorted(r["id"] for r in rows) == sorted(f"r{k}-{i}" for k in range(2) for i in range(5))
    assert rows[0]["history"][0]["stage"] == "test" and not (tmp_path / "_parts").exists()


def test_interrupted_attempt_leaves_nothing_behind(tmp_path):
    """A task killed mid-write leaves a .tmp part and no manifest; its rerun starts clean."""
    w = make_writer(tmp_path, max_rows_per_shard=3, row_group_rows=1)
    w.__enter__()
    for d in docs(5):  # one complete part (3 rows) and an open .tmp part: then the "kill"
        w.write(d, rank=0)
    parts = list((tmp_path / "_parts" / "data").iterdir())
    assert any(p.suffix == ".tmp" for p in parts) and any(p.suffix == ".parquet" for p in parts)
    list(TaskStart(str(tmp_path)).run(None, 0, 1))  # the rerun of task 0
    list(make_writer(tmp_path, max_rows_per_shard=3).run(iter(docs(5)), 0, 1))
    assert finalize(str(tmp_path)) == {"data": 5}
    ids = [r["id"] for f in sorted((tmp_path / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sorted(ids) == sorted(f"d{i}" for i in range(5))


def test_finalize_resumes_after_a_crash_half_way(tmp_path, monkeypatch):
    for rank in range(3):
        list(make_writer(tmp_path).run(iter(docs(2, f"r{rank}-")), rank, 3))
    real_replace, calls = os.replace, []

    def crash_after_first(src, dst):  # a crash we cannot cause for real at this exact point
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(writer_mod.os, "replace", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        finalize(str(tmp_path))
    monkeypatch.setattr(writer_mod.os, "replace", real_replace)
    assert finalize(str(tmp_path)) == {"data": 6}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]


def test_a_task_with_nothing_to_write_still_completes(tmp_path):
    list(make_writer(tmp_path).run(iter([]), 0, 2))  # nothing written and no folder made yet
    list(make_writer(tmp_path).run(iter(docs(3)), 1, 2))
    assert finalize(str(tmp_path)) == {"data": 3}
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["train-00000-of-00001.parquet"]
