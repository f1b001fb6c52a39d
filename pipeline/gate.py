"""The quality gate: every LLM reply a stage keeps passes it first.

Two kinds of check. The web-document filters the seeds stage runs (datatrove's Gopher repetition and
quality, C4, FineWeb filters, called as they are, never rewritten) judge a reply as a document. The
degeneration checks catch what web filters were never built for, because web pages rarely do it:

- ``loop``: a unit of words repeated back to back (``the the the``, a sentence cycling to the end),
  or one sentence said more often than ``max_sentence_repeats`` times anywhere in the reply;
- ``mixed_script``: words that mix alphabets (Cyrillic homoglyphs inside English words), and
  ``other_script``: too many letters outside the target language's alphabets;
- ``wrong_language``: py3langid (the seeds' language id) says another language, for the whole reply or,
  sure of it, for one window of it (a reply that switches language mid-way);
- ``prompt_echo``: the reply talks about the prompt ("The extract is a document that ...") or copies
  it (a large share of its word n-grams appear in the instructions or the extract);
- ``cut_at_max_tokens``: the reply stopped at ``max_tokens`` in the middle of a sentence. With
  ``truncation.action: trim`` it is cut back to its last full sentence when enough remains.

And the meaning checks (pipeline/meaning.py), on a reply as a document: ``off_topic`` (far from its
source by the encoder), ``incoherent`` (its halves far from each other) and, with a classifier,
``quality_drop`` (scored well below its source).

``check_many`` returns a verdict per reply with every failing check (the first is the row's
``filter_reason``) and the measurements behind them (``semantic``: faithfulness, coherence, quality),
which the audit and ``synthweb gate`` reuse on any folder of shards.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from datatrove.data import Document

from pipeline.config import EncoderConfig
from pipeline.gate_config import DATATROVE_FILTERS, QualityGateConfig
from pipeline.meaning import MEANING_CHECKS, Meaning

# check names, in the order they run; filter_reason is "gate_<name>"
FORM_CHECKS = ("cut_at_max_tokens", "loop", "mixed_script", "other_script", "wrong_language", "prompt_echo",
               "gopher_repetition", "gopher_quality", "c4", "fineweb")
CHECKS = FORM_CHECKS + MEANING_CHECKS
DOCUMENT_ONLY = ("cut_at_max_tokens", "gopher_repetition", "gopher_quality", "c4", "fineweb") + MEANING_CHECKS

_WORD = re.compile(r"\w+", re.UNICODE)
_SENT_END = re.compile(r"[.!?…](?:[\"'”’)\]*_]*)(?=\s|$)")
_SENT_SPLIT = re.compile(r"(?<=[.!?…])\s+|\n+")


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # failing checks, in CHECKS order
    details: dict[str, str] = field(default_factory=dict)  # check -> what failed (e.g. datatrove's reason)
    metrics: dict[str, float | str | None] = field(default_factory=dict)
    semantic: dict[str, float | None] = field(default_factory=dict)  # faithfulness, coherence, quality (pipeline/meaning.py)
    text: str = ""  # the reply as kept (trimmed to its last sentence when it was cut at max_tokens)
    trimmed: bool = False
    seconds: float = 0.0  # the check's own time (the gate's cost is reported against the stage's wall time)

    @property
    def reason(self) -> str | None:
        return f"gate_{self.reasons[0]}" if self.reasons else None

    def detail(self) -> str:
        return "; ".join(f"{r}: {self.details[r]}" if self.details.get(r) else r for r in self.reasons)

    def record(self) -> str:
        """The row's ``gate`` column: pass/fail, failing checks and the form measurements."""
        import json

        return json.dumps({"passed": self.passed, "failed": self.reasons, **self.metrics})


@lru_cache(maxsize=64)
def _script(ch: str) -> str:
    """The alphabet of a letter, from its Unicode name ("CYRILLIC SMALL LETTER O" -> CYRILLIC)."""
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return "UNKNOWN"
    head = name.split(" ", 1)[0]
    if head in ("CJK", "HIRAGANA", "KATAKANA"):
        return "CJK"
    # letters of no alphabet of their own (MICRO SIGN in "5µm", ORDINAL INDICATORS, ...) mix with any
    return head if head in _ALPHABETS else "COMMON"


_ALPHABETS = {"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "HEBREW", "ARABIC", "SYRIAC", "THAANA", "DEVANAGARI", "BENGALI",
              "GURMUKHI", "GUJARATI", "ORIYA", "TAMIL", "TELUGU", "KANNADA", "MALAYALAM", "SINHALA", "THAI", "LAO",
              "TIBETAN", "MYANMAR", "GEORGIAN", "HANGUL", "ETHIOPIC", "CHEROKEE", "KHMER", "MONGOLIAN", "CJK"}


def script_stats(text: str, allowed: set[str]) -> tuple[int, int, float, list[str]]:
    """(words, words mixing alphabets, share of letters outside ``allowed``, a few mixed words)."""
    words = mixed = letters = other = 0
    examples: list[str] = []
    for w in _WORD.findall(text):
        scripts = {_script(c) for c in w if c.isalpha()} - {"COMMON"}
        if not scripts:
            continue
        words += 1
        n = sum(1 for c in w if c.isalpha())
        letters += n
        if scripts - allowed:
            other += sum(1 for c in w if c.isalpha() and _script(c) not in allowed | {"COMMON"})
        if len(scripts) > 1:
            mixed += 1
            if len(examples) < 3:
                examples.append(w)
    return words, mixed, (other / letters if letters else 0.0), examples


def longest_loop(words: list[str], max_period: int, min_repeats: int = 2) -> tuple[int, int, int]:
    """The longest back-to-back repetition of a unit of at most ``max_period`` words, repeated at
    least ``min_repeats`` times: (words it covers, period in words, repeats); zeros when none."""
    best = (0, 0, 0)
    n = len(words)
    for p in range(1, min(max_period, n // 2) + 1):
        run = 0
        for i in range(n - p):
            if words[i] == words[i + p]:
                run += 1
                cover = run + p
                if cover // p >= min_repeats and cover > best[0]:
                    best = (cover, p, cover // p)
            else:
                run = 0
    return best


def repeated_sentence(text: str, min_words: int) -> tuple[int, str]:
    """The most repeated sentence of at least ``min_words`` words: (times, sentence)."""
    sents = [" ".join(_WORD.findall(s.lower())) for s in _SENT_SPLIT.split(text)]
    counts = Counter(s for s in sents if len(s.split()) >= min_words)
    if not counts:
        return 0, ""
    s, k = counts.most_common(1)[0]
    return k, s


def ngram_overlap(text: str, source: str, n: int) -> float:
    """Share of the text's word n-grams that occur in ``source`` (lower-cased words)."""
    w = [x.lower() for x in _WORD.findall(text)]
    if len(w) < n:
        return 0.0
    sw = [x.lower() for x in _WORD.findall(source)]
    src = {tuple(sw[i:i + n]) for i in range(len(sw) - n + 1)}
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return sum(g in src for g in grams) / len(grams)


def top_ngram_share(words: list[str], text_len: int, n: int) -> float:
    """Gopher's top n-gram character fraction (datatrove's own helpers)."""
    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_top_duplicate,
        get_n_grams,
    )

    grams = get_n_grams(words, n)
    return find_top_duplicate(grams) / text_len if grams and text_len else 0.0


def trim_to_sentence(text: str) -> str:
    """The text up to its last sentence end or, in a list, its last complete line ('' if neither)."""
    ends = [m.end() for m in _SENT_END.finditer(text)]
    cut = max(ends[-1] if ends else 0, text.rstrip().rfind("\n"))
    return text[:max(cut, 0)].rstrip()


_BLANKS = re.compile(r"\n{3,}")


def tidy(text: str) -> str:
    """What the seeds' normaliser does to web text, done to a reply before it is judged and kept:
    no trailing spaces on a line ("end. " would read as a line without terminal punctuation to the
    FineWeb filter), at most one blank line in a row."""
    return _BLANKS.sub("\n\n", "\n".join(line.rstrip() for line in text.strip().splitlines()))


def ends_mid_sentence(text: str) -> bool:
    t = text.rstrip()
    return bool(t) and not _SENT_END.search(t[-4:] if len(t) >= 4 else t) and not t.endswith(("```", ":"))


def _windows(text: str, chars: int) -> list[str]:
    """The text in consecutive windows of about ``chars`` characters, cut at spaces (a short tail joins none)."""
    out, cur, size = [], [], 0
    for w in text.split():
        cur.append(w)
        size += len(w) + 1
        if size >= chars:
            out.append(" ".join(cur))
            cur, size = [], 0
    if cur and size >= chars // 2:
        out.append(" ".join(cur))
    return out if len(out) > 1 else []


class QualityGate:
    """Built once per task; ``check`` is pure (no state between replies)."""

    def __init__(self, cfg: QualityGateConfig, encoder: EncoderConfig | None = None):
        import importlib

        self.cfg = cfg
        self.meaning = Meaning(cfg.meaning, encoder) if cfg.meaning.enabled else None
        self.allowed = {s.upper() for s in cfg.script.scripts}
        self.phrases = [re.compile(p, re.IGNORECASE) for p in cfg.echo.phrases]
        from pipeline.words import word_tokenizer

        self.filters = {}
        for key, path in DATATROVE_FILTERS.items():
            toggle = getattr(cfg.filters, key)
            if toggle.enabled:
                mod, cls = path.rsplit(".", 1)
                params = {**toggle.params, "language": word_tokenizer(toggle.params.get("language", "eng"))}
                self.filters[key] = getattr(importlib.import_module(mod), cls)(**params)
        self._lang = None

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    def _language(self, text: str) -> tuple[str, float]:
        if self._lang is None:
            from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

            self._lang = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
        lang, score = self._lang.classify(text[:10_000])
        return lang, float(score)

    def check_many(self, texts: list[str], *, sources: list[str | None] | None = None,
                   echo_sources: list[str | None] | None = None, finish_reasons: list[str | None] | None = None,
                   kind: str = "document") -> list[Verdict]:
        """Gate a batch of replies: the form checks one by one, then the meaning checks in one batch
        (``sources``: what each reply is about, e.g. its seed extract; without one, faithfulness is
        not measured). The meaning time is shared out over the verdicts' ``seconds``."""
        import time

        n = len(texts)
        vs = [self.check(t, echo_source=(echo_sources or [None] * n)[i], finish_reason=(finish_reasons or [None] * n)[i],
                         kind=kind) for i, t in enumerate(texts)]
        if self.meaning is None or kind != "document" or not vs:
            return vs
        t0 = time.perf_counter()
        measures = self.meaning.measure([v.text for v in vs], sources)
        each = (time.perf_counter() - t0) / n
        for v, m in zip(vs, measures):
            v.semantic = m
            fails = self.meaning.failures(m)
            if fails:
                v.details.update(fails)
                v.reasons = [k for k in CHECKS if k in v.reasons or k in fails]
                v.passed = False
            v.seconds += each
        return vs

    def check(self, text: str, *, echo_source: str | None = None, finish_reason: str | None = None,
              kind: str = "document") -> Verdict:
        """The form checks of one reply (``check_many`` adds the meaning checks). ``kind``: ``document``
        (every check) or ``short`` (a persona, a label: the degeneration checks only). ``echo_source``:
        the text a copy of which is an echo (the prompt, or only its instructions where copying the
        source is the task)."""
        import time

        t0 = time.perf_counter()
        c = self.cfg
        text = tidy(text)
        v = Verdict(True, text=text)
        raw = text
        m = v.metrics
        fails: dict[str, str] = {}
        # a reply cut at max_tokens: trimmed back to its last sentence, or failed
        m["hit_max_tokens"] = finish_reason == "length"
        if kind == "document" and c.truncation.enabled and finish_reason == "length" and ends_mid_sentence(text):
            trimmed = trim_to_sentence(text) if c.truncation.action == "trim" else ""
            if trimmed and len(trimmed) >= c.truncation.min_kept_share * len(text):
                v.text, v.trimmed = trimmed, True
            else:
                fails["cut_at_max_tokens"] = "ends mid-sentence at max_tokens"
        raw_words = _WORD.findall(text)
        text = v.text
        words = _WORD.findall(text)
        if c.loops.enabled and raw_words:  # on the raw reply: a trimmed-off looping tail is still a loop
            cover, period, reps = longest_loop([w.lower() for w in raw_words], c.loops.max_period, c.loops.min_repeats)
            m["loop_words"], m["loop_period"] = cover, period
            k, sent = repeated_sentence(raw, c.loops.sentence_min_words)
            m["max_sentence_repeats"] = k
            if reps >= c.loops.min_repeats and cover >= c.loops.min_words:
                fails["loop"] = f"{period}-word unit repeated {reps}x back to back ({cover} words)"
            elif k > c.loops.max_sentence_repeats:
                fails["loop"] = f"sentence repeated {k}x: {sent[:80]!r}"
        if c.script.enabled:
            nw, mixed, other, ex = script_stats(text, self.allowed)
            m["mixed_script_words"], m["other_script_share"] = mixed, round(other, 4)
            if mixed > c.script.max_mixed_words:
                fails["mixed_script"] = f"{mixed} words mix alphabets, e.g. {', '.join(ex)}"
            if other > c.script.max_other_script_share:
                fails["other_script"] = f"{other:.1%} of letters outside {', '.join(sorted(self.allowed))}"
        if c.language.enabled and c.language.languages and len(text) >= c.language.min_chars:
            lang, score = self._language(text)
            m["language"], m["language_score"] = lang, round(score, 4)
            if lang not in c.language.languages or score < c.language.min_score:
                fails["wrong_language"] = f"{lang} ({score:.2f})"
            else:
                for w in _windows(text, c.language.window_chars):
                    lang, score = self._language(w)
                    if lang not in c.language.languages and score >= c.language.window_min_score:
                        fails["wrong_language"] = f"switches to {lang} ({score:.2f}) mid-text: {w[:80]!r}"
                        break
        if c.echo.enabled:
            head = text[: c.echo.opening_chars]
            hits = sum(len(p.findall(text)) for p in self.phrases)
            m["echo_phrases"] = hits
            opening = any(p.search(head) for p in self.phrases)
            overlap = ngram_overlap(text, echo_source, c.echo.ngram) if echo_source else None
            m["prompt_overlap"] = round(overlap, 4) if overlap is not None else None
            if opening or hits > c.echo.max_phrase_hits:
                fails["prompt_echo"] = "talks about the prompt" + (" in its opening" if opening else f" {hits}x")
            elif overlap is not None and overlap > c.echo.max_prompt_overlap:
                fails["prompt_echo"] = f"{overlap:.0%} of its {c.echo.ngram}-grams copied from the prompt"
        if words and len(text) > 0:
            lw = [w.lower() for w in words]
            for n in (2, 4):
                m[f"top_{n}gram_share"] = round(top_ngram_share(lw, len(text), n), 4)
        if kind == "document":
            for key, f in self.filters.items():
                doc = Document(text=text, id="gate", metadata={"language": "en"})
                try:
                    ok = f.filter(doc)
                except Exception as e:  # noqa: BLE001 - a filter crashing on odd text is a failure of that text
                    ok = (False, f"error: {type(e).__name__}")
                if ok is not True and not (isinstance(ok, tuple) and ok[0]):
                    fails[key] = ok[1] if isinstance(ok, tuple) else "failed"
        v.reasons = [k for k in CHECKS if k in fails]
        v.details = fails
        v.passed = not v.reasons
        v.seconds = time.perf_counter() - t0
        return v


def stat_keys(v: Verdict, teacher: str | None = None) -> list[tuple[str, int]]:
    """The datatrove stat counters of one verdict (``pipeline.stages.base.gate_summary`` reads them)."""
    keys = ["gate_checked"] + (["gate_passed"] if v.passed else [])
    if teacher:
        keys += [f"gate_checked_by_{teacher}"] + ([f"gate_passed_by_{teacher}"] if v.passed else [])
    keys += [f"gate_failed_{r}" for r in v.reasons] + (["gate_trimmed"] if v.trimmed else [])
    return [(k, 1) for k in keys] + [("gate_us", int(v.seconds * 1e6))]


def counts(verdicts: list[Verdict]) -> dict:
    """Pass rate and the share failing each check, over a set of verdicts."""
    n = len(verdicts)
    by = Counter(r for v in verdicts for r in v.reasons)
    return {"checked": n, "passed": sum(v.passed for v in verdicts),
            "pass_rate": round(sum(v.passed for v in verdicts) / n, 4) if n else None,
            "fail_share_by_check": {k: round(by[k] / n, 4) for k in CHECKS if by[k]} if n else {}}
