"""Benchmark items and the words they are compared by (decontaminate's n-gram passes, its paraphrase pass)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_WORD = re.compile(r"\w+", re.UNICODE)
# a hyphen, soft hyphen or apostrophe inside a word joins it ("well-known" = "wellknown", "don't" = "dont"):
# a copy with its punctuation deleted must read the same as the original
_JOINER = re.compile(r"(?<=\w)[\-\u00ad\u2010\u2011'\u2019\u02bc`´](?=\w)")
_PUNCT = re.compile(r"[^\w\s]+")


@dataclass
class Item:
    benchmark: str
    key: str
    text: str
    answer: str = ""  # the gold answer's text, when the layout has one (the paraphrase pass looks for it)


def words_of(text: str) -> list[str]:
    """Lower-case words after Unicode compatibility folding (NFKC: full-width forms, ligatures) and joining
    hyphenated/apostrophised words; dashes, quotes and other punctuation separate words."""
    return _WORD.findall(_JOINER.sub("", unicodedata.normalize("NFKC", text).lower()))


def _squashed_words(text: str) -> list[str]:
    """The words a copy with *every* punctuation mark deleted would have ("1990-1995" -> "19901995")."""
    return _PUNCT.sub("", unicodedata.normalize("NFKC", text).lower()).split()
