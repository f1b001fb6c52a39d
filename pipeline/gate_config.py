"""The ``quality_gate`` section: the checks every kept LLM reply passes (pipeline/gate.py runs them),
and datatrove's web filters they share with the seeds stage.

A module of its own (not gate.py) so the meaning measures can import their settings without the gate."""

from __future__ import annotations

import inspect
import re
from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.config import Strict


def _check_params(cls_path: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate keyword params against the real datatrove filter signature, so typos fail early."""
    module, name = cls_path.rsplit(".", 1)
    cls = getattr(__import__(module, fromlist=[name]), name)
    sig = inspect.signature(cls.__init__)
    allowed = {p: v.default for p, v in sig.parameters.items() if p not in ("self", "exclusion_writer", "kwargs")}
    for key, value in params.items():
        if key not in allowed:
            raise ValueError(f"unknown parameter {key!r} for {name} (allowed: {', '.join(sorted(allowed))})")
        default = allowed[key]
        if default not in (None, inspect.Parameter.empty) and value is not None:
            ok = isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int))
            if isinstance(default, bool) != isinstance(value, bool):
                ok = False
            if not ok:
                raise ValueError(f"{name}.{key} expects {type(default).__name__}, got {value!r}")
    return params


DATATROVE_FILTERS = {
    "gopher_repetition": "datatrove.pipeline.filters.GopherRepetitionFilter",
    "gopher_quality": "datatrove.pipeline.filters.GopherQualityFilter",
    "c4": "datatrove.pipeline.filters.C4QualityFilter",
    "fineweb": "datatrove.pipeline.filters.FineWebQualityFilter",
}


class FilterToggle(Strict):
    enabled: bool = True
    params: dict[str, Any] = {}


class WebFilters(Strict):
    """datatrove's web-document filters, on/off with their parameters (checked against its signatures)."""

    gopher_repetition: FilterToggle = FilterToggle()
    gopher_quality: FilterToggle = FilterToggle()
    c4: FilterToggle = FilterToggle(params={"filter_no_terminal_punct": False})
    fineweb: FilterToggle = FilterToggle()

    @field_validator("gopher_repetition", "gopher_quality", "c4", "fineweb")
    @classmethod
    def _params(cls, v: FilterToggle, info) -> FilterToggle:
        _check_params(DATATROVE_FILTERS[info.field_name], v.params)
        return v


class GateFilters(WebFilters):
    """The seeds' web-document filters (datatrove's, with their published defaults), on LLM replies;
    C4's curly-bracket rule is off (textbooks show code)."""

    c4: FilterToggle = FilterToggle(params={"filter_no_terminal_punct": False, "filter_curly_bracket": False})


class LoopCheck(Strict):
    enabled: bool = True
    max_period: int = Field(default=40, ge=1)  # words in the repeating unit looked for
    min_repeats: int = Field(default=3, ge=2)  # back-to-back repeats of the unit ...
    min_words: int = Field(default=24, ge=2)  # ... covering at least this many words
    sentence_min_words: int = Field(default=5, ge=1)  # sentences this long are counted ...
    max_sentence_repeats: int = Field(default=2, ge=1)  # ... and one said more often than this is a loop


class ScriptCheck(Strict):
    enabled: bool = True
    scripts: list[str] = ["LATIN"]  # Unicode script names of the target language (Cyrillic homoglyphs are not)
    max_mixed_words: int = Field(default=0, ge=0)  # words mixing two alphabets ("cоmputer" with a Cyrillic о)
    max_other_script_share: float = Field(default=0.02, ge=0, le=1)  # letters outside `scripts`


class GateLanguageCheck(Strict):
    enabled: bool = True
    languages: list[str] = ["en"]  # py3langid codes, as seeds.language
    min_score: float = Field(default=0.5, ge=0, le=1)
    min_chars: int = Field(default=200, ge=1)  # language id is not trusted on shorter replies
    # a reply that switches language mid-way (English, then a Spanish tail) reads as English as a whole: every
    # window of this many characters is identified too; 1% of real FineWeb pages hold such a window (they do mix)
    window_chars: int = Field(default=300, ge=50)
    window_min_score: float = Field(default=0.95, ge=0, le=1)  # a window this sure of another language fails


class EchoCheck(Strict):
    enabled: bool = True
    # talk about the prompt instead of doing the task ("The extract is a document that provides ...")
    phrases: list[str] = [r"\b(?:the|this|that|given|provided|above)\s+(?:web\s+)?(?:extract|excerpt)s?\b",
                          r"\bthe\s+(?:given|provided|above|following)\s+(?:text|passage|document|web\s*page|prompt)\b",
                          r"\b(?:the|this|these|your)\s+(?:prompt|instructions?\s+(?:require|ask|say|tell|want)s?)\b",
                          # the assistant talking to its user ("let me try again", "here's how you could rephrase ...")
                          r"\b(?:let me|I'll|I will|I'm going to|I am going to)\s+(?:try again|help you|rephrase|rewrite)\b",
                          r"\bhere(?:'s| is)\s+how\s+you\s+(?:could|can|might)\s+(?:rephrase|rewrite|summari[sz]e)\b",
                          r"\bhere goes\b", r"\bI hope (?:this|that) helps\b"]
    opening_chars: int = Field(default=300, ge=0)  # a phrase here fails the reply
    max_phrase_hits: int = Field(default=1, ge=0)  # more phrases than this anywhere fail it
    ngram: int = Field(default=8, ge=2)
    max_prompt_overlap: float = Field(default=0.5, ge=0, le=1)  # share of the reply's n-grams copied from the prompt

    @field_validator("phrases")
    @classmethod
    def _regex(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"{p!r} is not a regular expression ({e})") from None
        return v


class TruncationCheck(Strict):
    enabled: bool = True
    action: Literal["trim", "drop"] = "trim"  # trim: back to the last full sentence; drop: to removed/
    min_kept_share: float = Field(default=0.5, ge=0, le=1)  # trim keeps at least this share, else the reply fails


class QualityScore(Strict):
    """A classifier that scores every output and its source (FinePhrase logs both): a train-classifier
    folder, a Hugging Face sequence classifier (Hub ID or folder, e.g. HuggingFaceFW/fineweb-edu-classifier)
    or fasttext:PATH[#LABEL] (classifiers/scorer.py). synthweb run sets its own trained classifier."""

    classifier: str | None = None
    max_drop: float | None = Field(default=None, ge=0)  # gate_quality_drop: output scores more than this below its source
    device: str = "auto"


class MeaningCheck(Strict):
    """Is the reply about its source, does it hold together (MiniLM by default: the encoder section)?
    Thresholds from real web text (bench/bench_meaning.py): a page's next 300 words against its first 150
    reach 0.30 on 97% of FineWeb and 96% of Common Crawl pages; the halves of those 300 words reach 0.15 on
    99%. On the 135M model's replies read by hand, 0.30 removes 27 of 30 off-topic ones and 1 of 19 about
    their seed; a coherence level of 0.20 removed 2 more of those 19 and no nonsense that 0.30 kept."""

    enabled: bool = True
    min_faithfulness: float = Field(default=0.30, ge=-1, le=1)  # cosine(source, reply) below: gate_off_topic
    min_coherence: float = Field(default=0.15, ge=-1, le=1)  # cosine(first half, second half) below: gate_incoherent
    coherence_words: int = Field(default=300, ge=20)  # the halves are cut from the reply's first this many words
    min_words: int = Field(default=80, ge=10)  # shorter replies: coherence is not measured
    quality: QualityScore = QualityScore()


class QualityGateConfig(Strict):
    """Every LLM reply a stage keeps passes these checks first (pipeline/gate.py); failures go to
    removed/ with filter_reason gate_<check> and the raw reply."""

    enabled: bool = True
    meaning: MeaningCheck = MeaningCheck()
    filters: GateFilters = GateFilters()
    loops: LoopCheck = LoopCheck()
    script: ScriptCheck = ScriptCheck()
    language: GateLanguageCheck = GateLanguageCheck()
    echo: EchoCheck = EchoCheck()
    truncation: TruncationCheck = TruncationCheck()
