"""The seeds stage end to end through the real CLI, on real pages."""

import collections
import json
import re

import pyarrow.parquet as pq

from tests.conftest import CC_SAMPLE, FAST, HTML, load_stats, need, read_rows, synthweb


def test_seeds_on_commoncrawl_sample(tmp_path):
    out = tmp_path / "cc"
    r = synthweb("seeds", "--input", str(need(CC_SAMPLE)), "--output", str(out), "--set", "input.limit=null", *FAST)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout and "records in" in r.stdout
    stats = load_stats(out)
    kept, removed = read_rows(out / "data"), read_rows(out / "removed")
    assert stats["records_in"] == 697 == len(kept) + len(removed)  # nothing silently disappears
    assert stats["records_out"] == len(kept) > 50
    assert sum(stats["dropped_by_reason"].values()) == len(removed)
    assert collections.Counter(r["filter_reason"] for r in removed) == collections.Counter(stats["dropped_by_reason"])
    assert {"id", "text", "url", "language"} <= set(kept[0]) and all(r["language"] == "en" for r in kept)
    assert len({r["id"] for r in kept}) == len(kept)
    assert all(h["stage"] == "seeds" and h["config_hash"] == stats["config_hash"] for r in kept for h in r["history"])
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert "executor:" in (out / "config.yaml").read_text()  # resolved config next to the output
    # a rerun of a complete stage does nothing
    again = synthweb("seeds", "--input", str(CC_SAMPLE), "--output", str(out), "--set", "input.limit=null", *FAST)
    assert again.returncode == 0 and "already complete" in again.stdout
    # the same folder with another config is refused, not mixed
    other = synthweb("seeds", "--input", str(CC_SAMPLE), "--output", str(out), "--set", "input.limit=10", *FAST)
    assert other.returncode == 2 and "different settings (changed: input.limit: null -> 10)" in other.stderr, other.stderr


def _token_f1(pred: str, gold: str) -> float:
    tok = lambda s: collections.Counter(re.findall(r"\w+", s.lower()))  # noqa: E731
    p, g = tok(pred), tok(gold)
    common = sum((p & g).values())
    if not common:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(g.values())
    return 2 * precision * recall / (precision + recall)


def test_html_extraction_matches_gold_article_bodies(tmp_path):
    out = tmp_path / "html"
    r = synthweb("seeds", "--input", str(need(HTML) / "html"), "--output", str(out),
                 "--set", f"input.url_map={HTML / 'ground-truth.json'}", *FAST)
    assert r.returncode == 0, r.stderr
    gold = json.loads((HTML / "ground-truth.json").read_text())
    kept, removed = read_rows(out / "data"), read_rows(out / "removed")
    assert len(kept) + len(removed) == 181
    extracted = kept + [r for r in removed if not r["filter_reason"].startswith("extraction")]
    scores = [_token_f1(r["text"], gold[r["id"]]["articleBody"]) for r in extracted]
    mean_f1 = sum(scores) / len(scores)
    print(f"\nmean token-F1 vs gold articleBody: {mean_f1:.3f} over {len(scores)} extracted pages "
          f"({sum(_token_f1(r['text'], gold[r['id']]['articleBody']) for r in kept) / len(kept):.3f} over {len(kept)} kept)")
    assert mean_f1 >= 0.85
    assert all(r["url"] == gold[r["id"]]["url"] for r in kept)
    assert pq.read_schema(next((out / "data").glob("*.parquet"))).field("text").type == "string"


def test_the_warm_word_tokenizer_gives_datatroves_words_and_sentences_with_bounded_memory():
    """pipeline/words.py keeps the first pages' words in spaCy's vocabulary (2.65x faster); on 300
    real pages, across its cap, every page's words, sentences and sentence spans are datatrove's own
    tokenizer's, and past the cap the vocabulary stops growing (datatrove's memory zone again)."""
    from datatrove.utils.word_tokenizers import SpaCyTokenizer

    from pipeline.words import WarmSpaCyTokenizer, word_tokenizer
    from tests.conftest import real_pages

    assert isinstance(word_tokenizer("eng"), WarmSpaCyTokenizer) and word_tokenizer("jpn") == "jpn"
    plain, warm = SpaCyTokenizer("en"), WarmSpaCyTokenizer("en", max_lexemes=10_000)
    sizes = []
    for i, page in enumerate(real_pages(300, 20000)):
        text = page["text"]
        assert warm.word_tokenize(text) == plain.word_tokenize(text), page["id"]
        assert warm.span_tokenize(text) == plain.span_tokenize(text), page["id"]
        assert warm.sent_tokenize(text) == plain.sent_tokenize(text), page["id"]
        if i in (199, 299):
            sizes.append(len(warm.tokenizer.vocab.strings))
    assert sizes[0] >= 10_000 and sizes[1] == sizes[0], sizes
