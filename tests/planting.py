"""Benchmark items planted into real pages, for the decontamination test and benchmark.

Forms a contaminated page takes in practice (each planted mid-page into a distinct real FineWeb page):
  verbatim      the question and its gold answer as written;
  options       the question with every option lettered (A. ... D.), as exam dumps print it;
  lower_nopunct lower-cased with every punctuation mark deleted ("well-known" -> "wellknown");
  edited        one or two words replaced;
and hard negatives: a page sharing one 6-word phrase with an item, which must stay.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from pipeline.stages.decontaminate import question_parts
from tests.conftest import SHARED, need, real_pages

BENCH = SHARED / "benchmarks"
FORMS = ("verbatim", "options", "lower_nopunct", "edited")
FILLER = ("river", "yellow", "machine", "quietly", "seven", "garden", "ticket", "winter", "copper", "later")


def _items(bench: str) -> list[tuple[str, str, list[str]]]:
    """(verbatim text, question, options) of every item of a ../shared/data benchmark file."""
    out = []
    path = need(BENCH) / f"{bench}.jsonl"
    for line in path.read_text().splitlines():
        row = json.loads(line)
        parts = question_parts(row)
        if parts and parts[2] is not None:
            q, opts, gold = parts
            out.append((f"{q} {opts[gold]}", q, opts))
        elif "context_options" in row:
            out.append((f"{row['context_options'][int(row['gold'])]} {row['continuation']}", "", []))
    return out


def _edit(text: str, rng: random.Random) -> str:
    words = text.split()
    spots = [i for i, w in enumerate(words) if len(w) > 3 and w.isalpha()] or list(range(len(words)))
    for i in rng.sample(spots, min(len(spots), rng.choice((1, 2)))):
        words[i] = rng.choice([f for f in FILLER if f != words[i].lower()])
    return " ".join(words)


def planted_corpus(per_form: int, negatives: int, clean: int, seed: int = 7,
                   benches=("arc_easy", "arc_challenge", "openbook_qa", "commonsense_qa", "siqa", "piqa", "winogrande"),
                   min_words: int = 12) -> tuple[list[dict], dict[str, str]]:
    """Documents and {doc id: form} for planted pages (the negatives' form is "negative", clean pages "clean")."""
    rng = random.Random(seed)
    pool = [it for b in benches for it in _items(b) if len(it[0].split()) >= min_words]
    rng.shuffle(pool)
    n_pages = per_form * len(FORMS) + negatives + clean
    pages = real_pages(n_pages, 3000)
    assert len(pages) == n_pages, f"need {n_pages} distinct real pages, found {len(pages)}"
    docs, truth = [], {}
    mc = [it for it in pool if it[2]]
    plans = [(f, it) for f in FORMS for it in (mc if f == "options" else pool)[:per_form]]
    rng.shuffle(pool)
    plans += [("negative", it) for it in pool[:negatives]] + [("clean", None)] * clean
    for page, (form, it) in zip(pages, plans):
        text = page["text"]
        if it is not None:
            verbatim, q, opts = it
            if form == "verbatim":
                body = verbatim
            elif form == "options":
                body = q + "\n" + "\n".join(f"{'ABCDEFGHIJ'[i]}. {o}" for i, o in enumerate(opts))
            elif form == "lower_nopunct":
                body = re.sub(r"[^\w\s]", "", verbatim.lower())
            elif form == "edited":
                body = _edit(verbatim, rng)
            else:  # one 6-word phrase of the item, inside a sentence of the page's own
                words = verbatim.split()
                i = rng.randrange(0, max(1, len(words) - 6))
                body = f"As they say, {' '.join(words[i:i + 6])}, and so on."
            stop = text.find(". ", len(text) // 2)
            cut = stop + 2 if stop >= 0 else len(text) // 2
            text = f"{text[:cut]}{body}\n{text[cut:]}"
        docs.append({"id": page["id"], "text": text})
        truth[page["id"]] = form
    return docs, truth


def write_jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    return path


PARAPHRASES = Path(__file__).parent / "data" / "paraphrased_items.jsonl"


def planted_paraphrases(skip: int = 0) -> tuple[list[dict], dict[str, str], dict[str, tuple[str, str]]]:
    """Hand-written paraphrases of 20 ARC items (reworded question, same answer) and, for each, an on-topic
    hard negative (text on the item's subject that is not the item), each planted mid-page into a distinct
    real page (after the first ``skip`` pages). Documents, {id: form}, {id: (benchmark, item key)}."""
    rows = [json.loads(line) for line in PARAPHRASES.read_text().splitlines() if line.strip()]
    pages = real_pages(skip + 2 * len(rows), 3000)[skip:]
    docs, truth, items = [], {}, {}
    for i, r in enumerate(rows):
        for form, page in (("paraphrase", pages[2 * i]), ("topic_negative", pages[2 * i + 1])):
            text = page["text"]
            stop = text.find(". ", len(text) // 2)
            cut = stop + 2 if stop >= 0 else len(text) // 2
            docs.append({"id": page["id"], "text": f"{text[:cut]}{r['paraphrase' if form == 'paraphrase' else 'negative']}\n{text[cut:]}"})
            truth[page["id"]] = form
            items[page["id"]] = (r["benchmark"], r["key"])
    return docs, truth, items
