"""The seeds stage: read -> extract (HTML) -> normalise -> language id -> heuristic filters -> shards.

The heuristic filters are datatrove's Gopher, C4 and FineWeb filters with their published defaults
(C4's terminal-punctuation line filter off, as FineWeb runs it). Language id is py3langid, whose
model ships inside the package (datatrove's LanguageFilter downloads a fastText model at run time,
which fails offline). Every dropped document goes to ``removed/`` with its reason.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

import pyarrow as pa
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.extractors.base import ExtractorSandbox
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.formatters.base import BaseFormatter
from datatrove.utils.typeshelper import Languages
from pydantic import Field, model_validator

from pipeline.config import Config, Strict
from pipeline.gate_config import WebFilters
from pipeline.stages import Call, Stage
from pipeline.stages.base import StageContext
from pipeline.words import word_tokenizer


class ExtractConfig(Strict):
    favour_precision: bool = True
    timeout: float = Field(default=5.0, gt=0)
    deduplicate: bool = True


class NormaliseConfig(Strict):
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFC"
    fix_text: bool = False  # ftfy mojibake repair; slower
    collapse_whitespace: bool = True
    max_blank_lines: int = Field(default=1, ge=0)


class LanguageConfig(Strict):
    enabled: bool = True
    languages: list[str] = ["en"]
    min_score: float = Field(default=0.65, ge=0, le=1)


class FiltersConfig(WebFilters):
    min_chars: int = Field(default=1, ge=1)
    max_chars: int = Field(default=1_000_000, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> "FiltersConfig":
        if self.max_chars < self.min_chars:
            raise ValueError("max_chars must be >= min_chars")
        return self


class SeedsConfig(Strict):
    extract: ExtractConfig = ExtractConfig()
    normalise: NormaliseConfig = NormaliseConfig()
    language: LanguageConfig = LanguageConfig()
    filters: FiltersConfig = FiltersConfig()
    keep_removed: bool = True  # write dropped documents, with the reason, to OUTPUT/removed/


STAGE_FIELDS = [pa.field("language", pa.string()), pa.field("language_score", pa.float32())]
REMOVED_FIELDS = STAGE_FIELDS + [pa.field("filter_reason", pa.string())]


class HtmlExtract(BaseFilter):
    """Main-text extraction with trafilatura (datatrove's extractor and its time-limited sandbox).

    A filter rather than datatrove's extractor step so that pages that fail extraction go to the
    removed set with a reason instead of vanishing. Documents that are already text pass through.
    """

    name = "🛢 extract"

    def __init__(self, timeout: float, favour_precision: bool, deduplicate: bool, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.timeout = timeout
        self.extractor = Trafilatura(favour_precision=favour_precision, deduplicate=deduplicate, timeout=timeout)
        self._sandbox: ExtractorSandbox | None = None

    def filter(self, doc: Document):
        if doc.metadata.get("content_type") != "html":
            return True
        try:
            text = self._sandbox.process_document(doc.text, self.extractor.extract)
        except TimeoutError:
            return False, "extraction_timeout"
        except EOFError:
            return False, "extraction_crashed"
        except Exception:  # noqa: BLE001 - trafilatura raises many kinds on malformed markup
            return False, "extraction_error"
        if not text or not text.strip():
            return False, "extraction_empty"
        doc.text = text
        doc.metadata["content_type"] = "text"
        return True

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with ExtractorSandbox(timeout=self.timeout, warmup_text="") as sandbox:
            self._sandbox = sandbox
            yield from super().run(data, rank, world_size)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")


class Normalise(BaseFormatter):
    """Unicode normal form, optional mojibake repair, control characters out, whitespace tidied."""

    name = "✏ normalise"

    def __init__(self, unicode_form: str, fix_text: bool, collapse_whitespace: bool, max_blank_lines: int):
        super().__init__()
        self.unicode_form, self.fix_text = unicode_form, fix_text
        self.collapse_whitespace, self.max_blank_lines = collapse_whitespace, max_blank_lines

    def format(self, text: str) -> str:
        if self.fix_text:
            import ftfy

            text = ftfy.fix_text(text)
        if self.unicode_form != "none":
            text = unicodedata.normalize(self.unicode_form, text)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = _CONTROL.sub("", text)
        if self.collapse_whitespace:
            lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
            out, blanks = [], 0
            for line in lines:
                blanks = blanks + 1 if not line else 0
                if blanks <= self.max_blank_lines:
                    out.append(line)
            text = "\n".join(out)
        return text.strip()


class LengthFilter(BaseFilter):
    name = "📏 length"

    def __init__(self, min_chars: int, max_chars: int, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_chars, self.max_chars = min_chars, max_chars

    def filter(self, doc: Document):
        n = len(doc.text)
        if n == 0:
            return False, "empty"
        if n < self.min_chars:
            return False, "too_short"
        if n > self.max_chars:
            return False, "too_long"
        return True


class LanguageId(BaseFilter):
    """Offline language id (py3langid, model inside the package); records language + score."""

    name = "🌍 language"

    def __init__(self, languages: list[str], min_score: float, exclusion_writer=None, max_chars: int = 10_000):
        super().__init__(exclusion_writer)
        self.languages = set(languages)
        self.min_score, self.max_chars = min_score, max_chars
        self._model = None

    def filter(self, doc: Document):
        if self._model is None:
            from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

            self._model = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
        lang, score = self._model.classify(doc.text[: self.max_chars])
        doc.metadata["language"], doc.metadata["language_score"] = lang, round(float(score), 4)
        if self.languages and lang not in self.languages:
            self.stat_update(f"language_{lang}")
            return False, "wrong_language"
        if score < self.min_score:
            return False, "language_low_confidence"
        return True


def build(ctx: StageContext) -> list:
    cfg: Config = ctx.cfg
    s = cfg.seeds
    # one removed set per task, shared by every filter (the reason is on each row)
    removed = ctx.writer("removed", "filters", REMOVED_FIELDS) if s.keep_removed else None
    steps: list = [ctx.task_start(), ctx.reader(), ctx.progress()]
    if ctx.plan.format in ("html", "warc"):
        steps.append(HtmlExtract(s.extract.timeout, s.extract.favour_precision, s.extract.deduplicate, removed))
    n = s.normalise
    steps.append(Normalise(n.unicode_form, n.fix_text, n.collapse_whitespace, n.max_blank_lines))
    steps.append(LengthFilter(s.filters.min_chars, s.filters.max_chars, removed))
    if s.language.enabled:
        steps.append(LanguageId(s.language.languages, s.language.min_score, removed))
    f = s.filters
    for key, cls in (
        ("gopher_repetition", GopherRepetitionFilter),
        ("gopher_quality", GopherQualityFilter),
        ("c4", C4QualityFilter),
        ("fineweb", FineWebQualityFilter),
    ):
        toggle = getattr(f, key)
        if toggle.enabled:  # the filters share one warm spaCy tokenizer (same words, ~2.5x faster: pipeline/words.py)
            params = {**toggle.params, "language": word_tokenizer(toggle.params.get("language", Languages.english))}
            steps.append(cls(exclusion_writer=removed, **params))
    steps.append(ctx.writer("data", "main", STAGE_FIELDS))
    return steps


def main(cfg: Config, force: bool = False, progress: bool = True) -> dict:
    from pipeline.stages.base import run_stage

    return run_stage("seeds", cfg, build, force=force, progress=progress)


STAGE = Stage(
    settings={"seeds": SeedsConfig},
    sections=("run", "input", "executor", "writer", "seeds"), funnel="seeds",
    name="seeds", help="web pages -> cleaned, filtered seed shards",
    description="Read web pages (Hub dataset, Parquet, JSONL[.gz/.zst], WARC, HTML folder), extract main text, "
    "normalise, identify the language, apply Gopher/C4/FineWeb heuristic filters and write Parquet shards "
    "to OUTPUT/data plus the dropped pages with reasons to OUTPUT/removed and OUTPUT/stats.json.",
    main=main, summary=lambda cfg, stats: [f"wrote {cfg.run.output}"],
    input_help="a path (file or folder) or a Hub dataset name (sets input.source)",
    plan=lambda run: [Call(None, run.out / "seeds")],
)
