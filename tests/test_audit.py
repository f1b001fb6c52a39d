"""The synthetic-text audit on real pages with planted LLM-isms, per stage and per shard."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.stages import load_config
from pipeline.stages.audit import Auditor
from tests.conftest import real_pages, synthweb


def shard(path, texts, stage):
    hist = [[{"stage": stage, "run_id": "r", "config_hash": "h", "time": None}] for _ in texts]
    pq.write_table(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts, "history": hist}), path)


def test_audit_per_stage_and_shard(tmp_path):
    pages = [p["text"] for p in real_pages(40, 2000)]
    synthetic = [f"It is important to note that {p[:300]} Let us delve deeper. In conclusion, a testament to effort."
                 for p in pages[:20]]
    refusals = ["I'm sorry, but I can't help with that request.", "As an AI language model, I cannot browse."]
    (tmp_path / "run" / "data").mkdir(parents=True)
    shard(tmp_path / "run" / "data" / "seeds.parquet", pages, "seeds")
    shard(tmp_path / "run" / "data" / "generate.parquet", synthetic + refusals, "generate")
    r = synthweb("audit", "--input", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "run" / "audit.json").read_text())
    gen, seeds = rep["by_stage"]["generate"], rep["by_stage"]["seeds"]
    assert gen["documents"] == 22 and seeds["documents"] == 40
    assert gen["proxy_phrase_doc_rate"] == round(21 / 22, 4)  # 20 planted + "as an AI language model"
    assert gen["proxy_phrase_counts"]["delve"] == 20 and gen["proxy_phrase_counts"]["it is important to note"] == 20
    assert gen["refusal_rate"] == round(2 / 22, 4) and seeds["refusal_rate"] < 0.05
    assert gen["most_common_openings"][0] == {"opening": "it is important", "documents": 20}
    assert seeds["proxy_phrase_doc_rate"] < gen["proxy_phrase_doc_rate"]
    assert set(rep["by_shard"]) == {"data/seeds.parquet", "data/generate.parquet"}
    assert rep["overall"]["documents"] == 62
    assert "generate: 22 documents" in r.stdout


def test_audit_edge_cases(tmp_path):
    a = Auditor(load_config(None).audit)
    assert a.texts([]) == {"documents": 0}
    r = a.texts(["", "Η φωτοσύνθεση είναι η διαδικασία", "delves and delved"])
    assert r["empty_documents"] == 1 and r["proxy_phrase_counts"] == {"delve": 2}
    bad = synthweb("audit", "--input", str(tmp_path / "nothing"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    (tmp_path / "empty").mkdir()
    bad = synthweb("audit", "--input", str(tmp_path / "empty"))
    assert bad.returncode == 2 and "no Parquet shards" in bad.stderr
