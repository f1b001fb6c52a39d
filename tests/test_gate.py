"""The quality gate on planted degenerate replies among good real texts, and the audit that sees them.

Good texts: real English FineWeb pages that pass the seeds' web filters. Degenerate ones are built from
those same pages in the forms the first release shipped: loops (a sentence or a phrase cycling to the
end), homoglyph gibberish (Cyrillic letters inside English words), prompt echo (talk about "the
extract", or the extract copied back), another language (real Latin-script pages in es/it/fr/de/pt),
and replies cut mid-sentence at max_tokens. Each must be removed with its own reason; every good text
must pass. Recall per kind and precision are printed (pytest -s) for the issue note.
"""

from __future__ import annotations

import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.gate import (
    QualityGate,
    ends_mid_sentence,
    longest_loop,
    script_stats,
    trim_to_sentence,
)
from pipeline.stages import load_config
from pipeline.stages.generate import PromptBuilder, extract_of
from tests.conftest import CC_SAMPLE, need, real_pages, synthweb

HOMOGLYPHS = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "y": "у", "i": "і"}


def _sentences(text: str) -> list[str]:
    import re

    return [s for s in re.split(r"(?<=[.!?])\s+", text.replace("\n", " ")) if len(s.split()) >= 6]


# Function words of each language: with the page's country domain, a label that owes nothing to the gate's
# language model (py3langid), so that the wrong-language plants are not chosen by the model under test.
FUNCTION_WORDS = {
    "it": "il la di che e per non una sono del della le gli", "de": "der die und ist nicht das mit ein eine den auf für",
    "fr": "le la les des et est une dans pour que qui pas", "es": "el la los las que y en por una para con es",
    "pt": "o a os as que e em não uma para com do da", "nl": "de het een en van is niet dat op te voor met",
    "ro": "și în este care pentru nu cu o din la", "cs": "a je v se na že to s z pro",
    "en": "the and of to is that for with this are not",
}
COUNTRY_LANGUAGE = {"it": "it", "de": "de", "fr": "fr", "es": "es", "cat": "es", "ar": "es", "mx": "es", "uy": "es",
                    "br": "pt", "pt": "pt", "nl": "nl", "ro": "ro", "cz": "cs"}


def labelled_foreign_pages() -> list[str]:
    """Common Crawl pages whose country domain names a language and whose function words agree with it."""
    import re

    out = []
    for line in gzip.open(need(CC_SAMPLE), "rt"):
        r = json.loads(line)
        host = re.match(r"https?://([^/:]+)", r["metadata"].get("warc_url") or "")
        lang = COUNTRY_LANGUAGE.get(host.group(1).rsplit(".", 1)[-1]) if host else None
        if lang is None or len(r["text"]) < 1500:
            continue
        words = re.findall(r"\w+", r["text"].lower())
        share = {k: sum(w in set(v.split()) for w in words) / len(words) for k, v in FUNCTION_WORDS.items()}
        if max(share, key=share.get) == lang and share[lang] > 0.08:
            out.append(r["text"][:4000])
    return out


@pytest.fixture(scope="module")
def corpus():
    cfg = load_config()
    # Cosmopedia's textbook prompt (its extract between <extract> tags, which the echo plants copy back)
    builder = PromptBuilder(load_config(None, ["generate.formats={textbook_narrative: 1}"]), [])
    pages = real_pages(400, 6000)
    good, prompts = [], []
    for p in pages:
        text = p["text"].strip()
        # "good" = a real FineWeb page of some length (English by FineWeb's own fastText language filter, which
        # is not the gate's model), chosen without asking the gate: its false removals are counted, not designed away
        if len(text.split()) >= 150 and len(_sentences(text)) >= 8:
            good.append(text)
        if len(good) == 60:
            break
    for i, g in enumerate(good):
        other = good[(i + 1) % len(good)]  # each good text answers a prompt about another page
        prompts.append(builder.build(str(i), extract_of(other, 1000), None)["prompt"])
    foreign = labelled_foreign_pages()
    assert len(good) >= 40 and len(foreign) >= 20
    return cfg, good, prompts, foreign[:30]


def planted(good: list[str], prompts: list[str], foreign: list[str]) -> dict[str, list[tuple[str, str | None, str | None]]]:
    """kind -> [(reply, echo source, finish_reason)]"""
    rng = random.Random(0)
    kinds: dict[str, list] = {k: [] for k in ("loop", "mixed_script", "prompt_echo", "wrong_language", "cut_at_max_tokens")}
    for i, g in enumerate(good[:30]):
        s = _sentences(g)
        # loops: the T=0.3 failure (one sentence to the end) and a phrase cycling
        if i % 2 == 0:
            kinds["loop"].append((" ".join(s[:2] + [s[2]] * 8), prompts[i], "length"))
        else:
            phrase = " ".join(s[1].split()[:7])
            kinds["loop"].append((" ".join(s[:3]) + " " + " ".join([phrase] * 6), prompts[i], "length"))
        # homoglyph gibberish: Cyrillic look-alikes inside one word in eight
        words = g.split()
        for k in range(0, len(words), 8):
            w = words[k]
            j = next((x for x, ch in enumerate(w) if ch in HOMOGLYPHS), None)
            if j is not None and len(w) > 2:
                words[k] = w[:j] + HOMOGLYPHS[w[j]] + w[j + 1:]
        kinds["mixed_script"].append((" ".join(words), prompts[i], "stop"))
        # prompt echo: talk about the extract, or the extract copied back
        extract = prompts[i].split("<extract>")[1].split("</extract>")[0].strip()
        if i % 2 == 0:
            kinds["prompt_echo"].append((f"The extract is a document that provides information about {s[0][:80].lower()} "
                                         + " ".join(s[1:6]), prompts[i], "stop"))
        else:
            kinds["prompt_echo"].append((extract + "\n\n" + " ".join(s[:2]), prompts[i], "stop"))
        # cut mid-sentence at max_tokens: the reply stops inside a word run, with little before it
        words = " ".join(s[:2]).split()
        kinds["cut_at_max_tokens"].append((" ".join(s[:1]).rstrip(".") + " " + " ".join(words[:3]) + " and the", prompts[i], "length"))
    for f in foreign:
        kinds["wrong_language"].append((f, None, "stop"))
    rng.shuffle(kinds["loop"])
    return kinds


def test_gate_removes_each_planted_kind_and_keeps_good_texts(corpus):
    cfg, good, prompts, foreign = corpus
    gate = QualityGate(cfg.quality_gate.model_copy(update={"truncation": cfg.quality_gate.truncation.model_copy(
        update={"action": "drop"})}))
    kept_good = [gate.check(g, echo_source=p, finish_reason="stop") for g, p in zip(good, prompts)]
    false_pos = [(v.reason, v.detail()) for v in kept_good if not v.passed]
    removed_total = len(false_pos)
    report = {}
    for kind, items in planted(good, prompts, foreign).items():
        vs = [gate.check(t, echo_source=p, finish_reason=f) for t, p, f in items]
        caught = sum(not v.passed for v in vs)
        right = sum(kind in v.reasons for v in vs)
        removed_total += caught
        report[kind] = {"planted": len(items), "removed": caught, "with_its_reason": right,
                        "recall": round(right / len(items), 3)}
        missed = [(t[:120], v.reasons, v.metrics) for (t, _, _), v in zip(items, vs) if kind not in v.reasons]
        assert right / len(items) >= 0.95, (kind, missed[:3])
    precision = (removed_total - len(false_pos)) / removed_total
    report["good_texts"] = {"n": len(good), "wrongly_removed": len(false_pos), "precision": round(precision, 3)}
    print("\ngate planted test:", json.dumps(report, indent=1))
    # measured: 8 of these 60 real pages (13%) fail a form check (7 Gopher's share of alphabetic words: tables,
    # figures, code; 1 FineWeb's line punctuation) -- the price of datatrove's web filters on real text; the
    # planted kinds above are all caught. Before, "good" meant "passes the gate" and this read 0%.
    assert len(false_pos) <= 0.15 * len(good), false_pos[:5]


def test_gate_trims_cut_replies_and_its_pieces(corpus):
    cfg, good, _, _ = corpus
    gate = QualityGate(cfg.quality_gate)
    text = good[0]
    cut = text[: int(len(text) * 0.9)].rsplit(" ", 1)[0]
    assert ends_mid_sentence(cut)
    v = gate.check(cut, finish_reason="length")
    assert v.trimmed and v.text == trim_to_sentence(cut) and not ends_mid_sentence(v.text)
    assert "cut_at_max_tokens" not in v.reasons
    # the same reply that stopped by itself is not touched
    assert gate.check(cut, finish_reason="stop").text == cut
    assert longest_loop("a b c a b c a b c d".split(), 5) == (9, 3, 3)
    assert longest_loop("x y z a b c d e f g h".split(), 5, 2) == (0, 0, 0)
    assert script_stats("the cаt sat", {"LATIN"})[1] == 1  # a Cyrillic а inside 'cat'
    assert script_stats("Ελληνικά and English", {"LATIN", "GREEK"})[1] == 0
    assert script_stats("a 5µm cell", {"LATIN"})[1:3] == (0, 0.0)  # the micro sign belongs to no alphabet
    short = gate.check("A retired nurse who volunteers at a community garden.", kind="short")
    assert short.passed  # a persona is not a document: the web filters do not judge it


def _shard(path, rows: list[dict]) -> None:
    hist = [[{"stage": "generate", "run_id": "r", "config_hash": "h", "time": None}] for _ in rows]
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    pq.write_table(pa.table({"id": [str(i) for i in range(len(rows))], **cols, "history": hist}), path)


def test_audit_reports_degeneration(tmp_path, corpus):
    """synthweb audit on a folder of degenerate rows (as the first release wrote them) and of good rows."""
    cfg, good, prompts, foreign = corpus
    kinds = planted(good, prompts, foreign)
    bad = [{"text": t, "prompt": p or "", "finish_reason": f} for k in ("loop", "mixed_script", "prompt_echo")
           for t, p, f in kinds[k][:8]]
    (tmp_path / "bad" / "data").mkdir(parents=True)
    _shard(tmp_path / "bad" / "data" / "train-00000-of-00001.parquet", bad)
    (tmp_path / "good" / "data").mkdir(parents=True)
    _shard(tmp_path / "good" / "data" / "train-00000-of-00001.parquet",
           [{"text": g, "prompt": p, "finish_reason": "stop"} for g, p in zip(good[:24], prompts)])
    reps = {}
    for name in ("bad", "good"):
        r = synthweb("audit", "--input", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        reps[name] = json.loads((tmp_path / name / "audit.json").read_text())
        assert "degeneration:" in r.stdout and "openings not rated" in r.stdout
    d, g = reps["bad"]["overall"]["degeneration"], reps["good"]["overall"]["degeneration"]
    assert d["checked"] == 24 and d["gate_pass_rate"] <= 0.1
    assert min(d["loop_share"], d["mixed_script_share"], d["prompt_echo_share"]) >= 0.33
    assert d["hit_max_tokens_share"] > 0 and d["mean_top_4gram_share"] > g["mean_top_4gram_share"]
    # the real pages: the audit's pass rate is the gate's own verdict on them (some fail a web filter, see above)
    gate = QualityGate(cfg.quality_gate)
    expected = sum(gate.check(t, echo_source=p, finish_reason="stop").passed for t, p in zip(good[:24], prompts)) / 24
    assert g["gate_pass_rate"] == pytest.approx(expected, abs=1e-3) and g["loop_share"] == 0 and g["mixed_script_share"] == 0
    # 24 documents: the openings share is not reported as a figure
    o = reps["bad"]["overall"]
    assert o["top20_openings_share"] is None and "means nothing below 300" in o["openings_note"]
    assert reps["bad"]["by_stage"]["generate"]["degeneration"]["checked"] == 24
    assert list(reps["bad"]["by_shard"]) == ["data/train-00000-of-00001.parquet"]
