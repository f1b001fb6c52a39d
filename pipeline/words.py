"""datatrove's spaCy word tokenizer with a warm vocabulary: the same words and sentences, 2.65x faster.

datatrove tokenizes every document inside a spaCy memory zone (so that memory stays bounded), which means
that each word outside the blank English vocabulary (764 entries) is rebuilt, affixes, shape and all, in
every document that uses it: two thirds of the seeds stage's time on web pages. Here the first documents
of a process are tokenized outside a zone, so their words stay in the vocabulary (and spaCy's chunk
cache), until it holds ``max_lexemes``; from then on it is datatrove's tokenizer, zone and all. Which
tokens and sentence spans come out does not depend on the vocabulary (it memoises what the rules
compute), so the filters decide as before; memory is bounded by ``max_lexemes``. bench/bench_words.py
measures it: 2.65x on 2,800 FineWeb pages, with a digest of every output compared.
"""

from __future__ import annotations

import contextlib
import functools
import sys

from datatrove.utils.word_tokenizers import SpaCyTokenizer, load_word_tokenizer

MAX_LEXEMES = 100_000  # reached after 1,000-2,000 FineWeb pages; +56 MiB of RSS (bench/bench_words.py)
_CUSTOM = ("ja", "zh", "vi")  # spaCy tokenizers with their own state: left exactly as datatrove runs them


def import_spacy():
    """spaCy without torch. thinc (spaCy's ML library) imports torch whenever it is installed, for the torch
    models a blank tokenizer never runs: 1.7-2.8 CPU s in every process that tokenizes words and holds no
    model (a seeds stage's forkserver, a Slurm or Ray task). While spaCy loads, ``import torch`` fails, so
    thinc records "no torch"; a later ``import torch`` (a model step) works as usual. A process that already
    has torch, or spaCy, imports as it always did."""
    if "spacy" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]  # import torch -> ImportError, for this while
        try:
            import spacy
        finally:
            del sys.modules["torch"]
    import spacy

    return spacy


@functools.cache
def _warm_nlp(language: str, max_lexemes: int):
    import_spacy()  # before datatrove's SpaCyTokenizer imports it
    nlp = SpaCyTokenizer(language).tokenizer  # built by datatrove (blank model + sentencizer)
    zone = nlp.memory_zone

    def memory_zone(mem=None):
        return contextlib.nullcontext() if len(nlp.vocab) < max_lexemes else zone(mem)

    nlp.memory_zone = memory_zone
    return nlp


class WarmSpaCyTokenizer(SpaCyTokenizer):
    """One spaCy pipeline per process and language, shared by every filter (and every task's copy)."""

    def __init__(self, language: str, max_lexemes: int = MAX_LEXEMES):
        super().__init__(language)
        self.max_lexemes = max_lexemes

    @property
    def tokenizer(self):
        return _warm_nlp(self.language, self.max_lexemes)

    @property
    def preload(self) -> tuple[str, ...]:  # for the forkserver of a stage's workers (pipeline/executor.py)
        return ("pipeline.spacy_import", f"spacy.lang.{self.language}")  # in this order: spaCy without torch

    # equal for the same language: datatrove's split_into_parts memoises on (text, mode, tokenizer), so
    # the filters of one document share one tokenization even after each task deep-copies its pipeline
    def __eq__(self, other):
        return type(other) is type(self) and (other.language, other.max_lexemes) == (self.language, self.max_lexemes)

    def __hash__(self):
        return hash((type(self).__name__, self.language, self.max_lexemes))


def word_tokenizer(language: str):
    """What to pass as a datatrove filter's ``language``: the warm tokenizer where datatrove would use
    spaCy for that language, else the language code itself (datatrove's own choice stands)."""
    try:
        base = load_word_tokenizer(language)
    except ValueError:  # no tokenizer for it: datatrove's filter says so when it runs
        return language
    if type(base) is SpaCyTokenizer and base.language not in _CUSTOM:
        return WarmSpaCyTokenizer(base.language)
    return language
