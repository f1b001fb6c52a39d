"""Decontamination on real pages with real benchmark items planted in them (whole and lightly
paraphrased), every benchmark layout of ../shared/data/benchmarks, and the bad inputs."""

from __future__ import annotations

import json
import random

import pytest

from pipeline.errors import UserError
from pipeline.stages.decontaminate import benchmark_files, load_benchmark
from tests.conftest import SHARED, load_stats, need, read_rows, real_pages, synthweb

BENCH = SHARED / "benchmarks"


def paraphrase(text: str) -> str:
    """Lightly: lower case, punctuation gone, one word near the end replaced."""
    words = [w.strip(".,;:?!\"'") for w in text.lower().split()]
    words[-2] = "something"
    return " ".join(w for w in words if w)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    need(BENCH)
    rng = random.Random(7)
    items = {b: [it for it in load_benchmark(str(BENCH / f"{b}.jsonl")) if len(it.text.split()) >= 16]
             for b in ("arc_easy", "piqa")}
    pages = real_pages(60, 3000)
    docs, truth = [], {}
    for i, p in enumerate(pages):
        text = p["text"]
        if i < 20:
            bench = "arc_easy" if i % 2 else "piqa"
            item = rng.choice(items[bench])
            body = item.text if i < 10 else paraphrase(item.text)
            cut = len(text) // 2
            text = f"{text[:cut]}\n{body}\n{text[cut:]}"
            truth[p["id"]] = (bench, item.key)
        docs.append({"id": p["id"], "text": text})
    docs += [{"id": "no-words", "text": "!!! ??? ..."}, {"id": "greek", "text": "Η φωτοσύνθεση είναι η διαδικασία " * 20}]
    d = tmp_path_factory.mktemp("decont")
    (d / "docs.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in docs))
    out = d / "out"
    # the n-gram passes against all 11 files (29k items); the paraphrase pass has its own test below, on ARC (its
    # embedding of 29k items costs minutes on 2 cores once, then comes from the user cache)
    r = synthweb("decontaminate", "--input", str(d / "docs.jsonl"), "--output", str(out), "--benchmarks", str(BENCH),
                 "--set", "executor.tasks=2", "--set", "decontaminate.paraphrase.enabled=false", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    return out, truth, len(docs), r


def test_planted_items_are_found_and_clean_pages_kept(planted):
    out, truth, n, _ = planted
    removed = {r["id"]: r for r in read_rows(out / "removed")}
    kept = {r["id"] for r in read_rows(out / "data")}
    assert set(removed) == set(truth), "every planted page (whole or paraphrased) is caught, no clean page is"
    assert len(kept) == n - len(truth)
    for doc_id, (bench, key) in truth.items():
        r = removed[doc_id]
        assert (r["contamination_benchmark"], r["contamination_item"]) == (bench, key)
        assert r["filter_reason"] == "contaminated" and 0.5 <= r["contamination_overlap"] <= 1
    assert {"no-words", "greek"} <= kept  # odd text passes through


def test_report_counts_hits_per_benchmark(planted):
    out, truth, _, r = planted
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["benchmarks"]) >= {"arc_easy", "piqa", "hellaswag_val_full", "winogrande", "lambada_openai", "boolq"}
    for bench in ("arc_easy", "piqa"):
        planted_here = [k for b, k in truth.values() if b == bench]
        b = rep["benchmarks"][bench]
        assert b["hits"] == len(planted_here) and b["unique_items"] == len(set(planted_here))
        assert b["examples"] and b["examples"][0]["item_text"]
    assert rep["benchmarks"]["winogrande"]["hits"] == 0
    assert "arc_easy: 10 documents hit (0 as paraphrases)" in r.stdout
    stats = load_stats(out)
    assert stats["records_out"] == len(read_rows(out / "data"))


def test_paraphrased_items_are_found_and_on_topic_text_kept(tmp_path):
    """The semantic pass on the default config: hand-written paraphrases of 20 ARC items (reworded question, same
    answer) and, for each, an on-topic hard negative (text on the item's subject that is not the item), each
    planted into a real page, among verbatim and edited copies and clean pages. Recall >= 0.8 on the paraphrases,
    no hard negative and no clean page removed, the copies still all caught (by the n-gram passes)."""
    from tests.planting import planted_corpus, planted_paraphrases

    copies, copy_truth = planted_corpus(per_form=5, negatives=0, clean=30, seed=3, benches=("arc_easy", "arc_challenge"))
    docs, truth, items = planted_paraphrases(skip=len(copies))  # on the pages after those
    docs += copies
    truth.update(copy_truth)
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp_path / "out"
    r = synthweb("decontaminate", "--input", str(src), "--output", str(out), "--benchmarks", str(need(BENCH) / "arc_easy.jsonl"),
                 "--benchmarks", str(BENCH / "arc_challenge.jsonl"), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    removed = {x["id"]: x for x in read_rows(out / "removed")}
    paraphrases = [i for i, f in truth.items() if f == "paraphrase"]
    found = [i for i in paraphrases if i in removed]
    wrong = [(truth[i], removed[i]["contamination_item_text"][:80]) for i in removed
             if truth[i] in ("topic_negative", "clean")]
    print(f"\nparaphrase pass: {len(found)}/{len(paraphrases)} paraphrases found; {len(wrong)} negatives removed")
    assert len(found) >= 0.8 * len(paraphrases), [i for i in paraphrases if i not in removed]
    assert not wrong, wrong
    for i in found:  # the right item, named as a paraphrase with its similarity
        x = removed[i]
        assert (x["contamination_benchmark"], x["contamination_item"]) == items[i]
        if x["contamination_method"] == "paraphrase":
            assert x["contamination_similarity"] >= 0.7
    copied = [i for i, f in truth.items() if f in ("verbatim", "options", "lower_nopunct", "edited")]
    assert all(i in removed and removed[i]["contamination_method"] == "ngram" for i in copied)
    assert load_stats(out)["records_out"] == len(docs) - len(removed)


def test_an_empty_benchmark_file_is_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "a", "text": "Some page text about arithmetic."}) + "\n")
    r = synthweb("decontaminate", "--input", str(docs), "--output", str(tmp_path / "o"), "--benchmarks", str(empty))
    assert r.returncode == 2 and "no items in it" in r.stderr


def test_every_shared_benchmark_layout_loads():
    files = benchmark_files([str(need(BENCH))])
    assert len(files) == 11
    for f in files:
        items = load_benchmark(f)
        assert len(items) >= 100 and all(it.text.strip() for it in items), f


def test_unknown_columns_name_what_was_found(tmp_path):
    bad = tmp_path / "mine.csv"
    bad.write_text("prompt_id,stem,solution\n1,What is two plus two?,four\n")
    with pytest.raises(UserError, match=r"columns found: prompt_id, stem, solution"):
        load_benchmark(str(bad))
    assert load_benchmark(str(bad), ["stem", "solution"])[0].text == "What is two plus two? four"
    with pytest.raises(UserError, match=r"no column answer \(columns found: prompt_id, stem, solution\)"):
        load_benchmark(str(bad), ["stem", "answer"])
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "a", "text": "Some page text about arithmetic."}) + "\n")
    r = synthweb("decontaminate", "--input", str(docs), "--output", str(tmp_path / "o"), "--benchmarks", str(bad))
    assert r.returncode == 2 and "columns found: prompt_id, stem, solution" in r.stderr


def test_planted_forms_on_every_shared_benchmark():
    """Per form recall >= 0.95, precision >= 0.99, no hard negative removed (the index holds all 11 files)."""
    from pipeline.stages.decontaminate import BenchmarkIndex, DecontaminateConfig
    from tests.planting import FORMS, planted_corpus

    d = DecontaminateConfig()
    docs, truth = planted_corpus(per_form=100, negatives=200, clean=100, seed=11)
    items = [it for f in benchmark_files([str(need(BENCH))]) for it in load_benchmark(f)]
    index = BenchmarkIndex(items, d.ngram, d.min_item_words, d.short_ngram, d.max_gram_items)
    removed = {doc["id"] for doc in docs if index.match(doc["text"], d.min_overlap)}
    recall = {f: sum(i in removed for i, g in truth.items() if g == f) / sum(g == f for g in truth.values()) for f in FORMS}
    assert all(r >= 0.95 for r in recall.values()), recall
    assert not [i for i in removed if truth[i] == "negative"], "a page sharing one 6-word phrase with an item was removed"
    assert sum(truth[i] in FORMS for i in removed) / len(removed) >= 0.99


def test_hyphens_quotes_and_width_do_not_change_words():
    from pipeline.stages.items import words_of

    assert words_of("A well-known “result”—don’t ｍｉｓｓ it") == words_of("a wellknown \"result\" - dont miss it")
    assert words_of("1990–1995") == ["1990", "1995"]


def test_headerless_mmlu_csv_with_a_bom_maps_the_answer_letter_to_its_option(tmp_path):
    rows = [json.loads(line) for line in (need(BENCH) / "arc_easy.jsonl").read_text().splitlines()[:50]]
    rows = [r for r in rows if len(r["choices"]) == 4]
    f = tmp_path / "mmlu_like.csv"
    import csv as _csv

    with open(f, "w", newline="", encoding="utf-8-sig") as out:  # the BOM Excel writes
        w = _csv.writer(out)
        for r in rows:
            w.writerow([r["query"].removeprefix("Question: "), *r["choices"], "ABCD"[r["gold"]]])
    items = load_benchmark(str(f))
    assert len(items) == len(rows)
    assert items[0].text == f"{rows[0]['query'].removeprefix('Question: ')} {rows[0]['choices'][rows[0]['gold']]}"
    assert items[0].key == "1"  # line numbers count from 1 when there is no header

    header = tmp_path / "with_header.csv"
    header.write_text("\ufeffquestion,A,B,C,D,answer\nWhat melts ice fastest in winter?,salt,sand,gravel,snow,A\n",
                      encoding="utf-8")
    (item,) = load_benchmark(str(header))
    assert item.text == "What melts ice fastest in winter? salt" and item.key == "2"

    odd = tmp_path / "odd.csv"
    odd.write_text("What melts ice fastest in winter?,salt is the answer\n")
    with pytest.raises(UserError, match=r"odd.csv:1: the first row is neither a header.*csv_columns"):
        load_benchmark(str(odd))
    (item,) = load_benchmark(str(odd), csv_columns=["question", "answer"])
    assert item.text == "What melts ice fastest in winter? salt is the answer"
    short = tmp_path / "short.csv"
    short.write_text("question,answer\nWhat melts ice?\n")
    with pytest.raises(UserError, match=r"short.csv:2: 1 fields, expected 2"):
        load_benchmark(str(short))


def test_hub_layouts_map_answers_to_option_text():
    from pipeline.stages.decontaminate import _item_text

    arc = {"question": "Which gas do plants take in?", "choices": {"text": ["oxygen", "carbon dioxide"], "label": ["A", "B"]},
           "answerKey": "B"}
    mmlu = {"question": "Which gas do plants take in?", "subject": "biology", "choices": ["oxygen", "carbon dioxide"], "answer": 1}
    for row in (arc, mmlu):
        assert _item_text(row, [], "x") == "Which gas do plants take in? carbon dioxide"
