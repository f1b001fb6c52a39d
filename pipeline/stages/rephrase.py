"""``synthweb rephrase``: web pages rewritten by the LLM in WRAP and Nemotron-CC styles.

Each page is cut into chunks that fit a style's input budget (paragraphs, then lines, then
sentences; a single sentence over the budget is dropped and counted, never cut mid-way), counted
with the generator's own tokenizer. A page's styles come from its quality (``quality_bucket`` from
an ensemble classify run, else ``int_score``) through ``rephrase.routing``; a page without scores
draws from ``rephrase.mix``. Every (chunk, style) is one request; the reply is cleaned (expected
prefix, markdown fences, stray quotes), QA styles must hold Question/Answer pairs, and a
faithfulness check drops rephrases whose embedding is far from their source chunk. Everything
dropped goes to ``removed/`` with its reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from datatrove.data import Document
from pydantic import Field, field_validator

from pipeline.config import Config, Strict
from pipeline.errors import UserError
from pipeline.llm.engine import sampling_for
from pipeline.llm.step import LLMStep, cpu_threads
from pipeline.llm.types import Request
from pipeline.prompts import load_yaml, template
from pipeline.stages import Call, Option, Stage
from pipeline.stages.base import StageContext


def routing_covers_buckets(cfg) -> None:
    """Named quality buckets in rephrase.routing must map every bucket classify gives (a check across sections)."""
    names = [k for k in cfg.rephrase.routing if not k.isdigit()]
    missing = [b for b in cfg.classify.buckets if b not in cfg.rephrase.routing]
    if names and missing:
        raise ValueError(f"rephrase.routing leaves quality bucket {', '.join(repr(b) for b in missing)} unmapped "
                         f"(classify.buckets: {', '.join(cfg.classify.buckets)}); map it, to [] for no rephrase")


class StyleBudget(Strict):
    input_tokens: int | None = Field(default=None, ge=16)  # source tokens per chunk
    max_tokens: int | None = Field(default=None, ge=8)  # output budget


NEMOTRON_STYLES = ["diverse_qa", "distill", "extract_knowledge", "knowledge_list"]


class RephraseConfig(Strict):
    """``synthweb rephrase``: pages cut into token-budgeted chunks and rewritten by the LLM in WRAP and
    Nemotron-CC styles (prompts/rephrase/styles.yaml), routed by the page's quality when it has one."""

    # documents with neither a quality_bucket nor an int_score: styles drawn by weight per chunk
    mix: dict[str, float] = {"wrap_medium": 1, "wrap_qa": 1}
    styles_per_chunk: int = Field(default=1, ge=1)
    # quality -> styles applied to every chunk; keys are quality buckets (classify.buckets) and/or
    # int_scores 0-5; a document uses its quality_bucket, else its int_score (an empty list: no rephrase)
    routing: dict[str, list[str]] = {
        "low": ["wrap_medium"], "medium_low": ["wrap_medium"], "medium": ["wrap_medium", "wrap_qa"],
        "medium_high": NEMOTRON_STYLES, "high": NEMOTRON_STYLES,
        "0": ["wrap_medium"], "1": ["wrap_medium"], "2": ["wrap_medium", "wrap_qa"],
        "3": NEMOTRON_STYLES, "4": NEMOTRON_STYLES, "5": NEMOTRON_STYLES,
    }
    route_by: Literal["auto", "mix"] = "auto"  # mix: ignore quality columns, always draw from the mix
    budgets: dict[str, StyleBudget] = {}  # per style, over the defaults of styles.yaml
    prefill: bool = True  # write each style's prefix as the start of the reply (openai backend: vLLM/SGLang servers)
    require_prefix: bool = True  # without prefill: a reply that does not start with its prefix is dropped
    keep_actual: bool = True  # also pass each source document on, as kind "actual" (Nemotron-CC keeps both)
    min_tokens: int = Field(default=20, ge=0)  # shorter rephrases are dropped (too_short)
    min_similarity: float = Field(default=0.5, ge=-1, le=1)  # source chunk vs rephrase cosine (encoder section)
    max_chunks_per_doc: int | None = Field(default=None, ge=1)  # the first N chunks of each page (null: all)
    tokenizer: str | None = None  # token counts for the budgets; default: the generator's own
    limit: int | None = Field(default=None, ge=1)  # rephrase at most this many documents
    prompts_dir: str | None = None

    @field_validator("routing", mode="before")
    @classmethod
    def _keys(cls, v):
        return {str(k): val for k, val in v.items()} if isinstance(v, dict) else v

    @field_validator("routing")
    @classmethod
    def _scores(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        ints = [k for k in v if k.isdigit()]
        missing = [str(i) for i in range(6) if str(i) not in v]
        if ints and missing:
            raise ValueError(f"routing maps int_scores {', '.join(ints)} but leaves int_score {', '.join(missing)} "
                             "unmapped (map it, to [] for no rephrase)")
        return v

    @field_validator("mix")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in v.values()) or not any(w > 0 for w in v.values()):
            raise ValueError("mix needs weights >= 0, at least one > 0")
        return v


REPHRASE_FIELDS = [
    pa.field("kind", pa.string()),  # actual (the source page) | synthetic
    pa.field("style", pa.string()),
    pa.field("source_id", pa.string()),
    pa.field("source_url", pa.string()),
    pa.field("chunk_index", pa.int32()),
    pa.field("chunks_in_source", pa.int32()),
    pa.field("source_chunk", pa.string()),
    pa.field("source_tokens", pa.int32()),
    pa.field("dropped_source_tokens", pa.int32()),  # tokens of sentences over the budget, left out of every chunk
    pa.field("routed_by", pa.string()),  # quality_bucket | int_score | mix
    pa.field("source_score", pa.float32()),
    pa.field("source_int_score", pa.int32()),
    pa.field("source_bucket", pa.string()),
    pa.field("similarity", pa.float32()),
    pa.field("qa_pairs", pa.int32()),
    pa.field("prompt_hash", pa.string()),
    pa.field("template", pa.string()),
    pa.field("model", pa.string()),
    pa.field("engine", pa.string()),
    pa.field("sampling", pa.string()),
    pa.field("prompt_tokens", pa.int32()),
    pa.field("completion_tokens", pa.int32()),
    pa.field("text_tokens", pa.int32()),
    pa.field("finish_reason", pa.string()),
    pa.field("gate", pa.string()),  # JSON: the quality gate's measurements of the reply (pipeline/gate.py)
    pa.field("semantic", pa.string()),  # JSON: faithfulness to the source chunk, coherence, quality (pipeline/meaning.py)
    pa.field("trimmed_at_max_tokens", pa.bool_()),
]
REMOVED_FIELDS = REPHRASE_FIELDS + [
    pa.field("filter_reason", pa.string()),
    pa.field("error_detail", pa.string()),
    pa.field("raw_reply", pa.string()),
]

_SENTENCE = re.compile(r"(?<=[.!?…])\s+")
_QA = re.compile(r"Question\s*:\s*(?P<q>.+?)\s*Answer\s*:\s*(?P<a>.*?)(?=\s*Question\s*:|\Z)", re.S | re.I)
_FENCE = re.compile(r"^```[\w-]*\s*\n(?P<body>.*?)\n?```\s*$", re.S)
_QUOTES = {'"': '"', "'": "'", "“": "”", "«": "»"}


# ------------------------------------------------------------------ styles


@dataclass(frozen=True)
class Style:
    name: str
    template: str
    system: str
    prefix: str
    input_tokens: int
    max_tokens: int
    keep_prefix: bool = False
    qa: bool = False
    append_to_source: bool = False
    words_per_pair: int = 60


def load_styles(cfg: Config) -> dict[str, Style]:
    """The styles of prompts/rephrase/styles.yaml with the config's budgets over their defaults; every
    style the config names must exist (an unknown name is an error listing the known ones)."""
    r = cfg.rephrase
    raw = load_yaml("rephrase", "styles.yaml", r.prompts_dir)
    known = sorted(raw)
    styles = {}
    for name, spec in raw.items():
        try:
            budget = r.budgets.get(name)
            spec = {**spec, **({k: v for k, v in budget.model_dump().items() if v is not None} if budget else {})}
            styles[name] = Style(name=name, **spec)
        except TypeError as e:
            raise UserError(f"prompts/rephrase/styles.yaml: style {name!r}: {e}") from None
    named = [("rephrase.mix", s) for s in r.mix] + [(f"rephrase.routing.{k}", s) for k, v in r.routing.items() for s in v] \
        + [("rephrase.budgets", s) for s in r.budgets]
    for where, s in named:
        if s not in styles:
            import difflib

            close = difflib.get_close_matches(s, known, n=1)
            raise UserError(f"{where}: unknown rephrase style {s!r} (known: {', '.join(known)})"
                            + (f"; did you mean {close[0]!r}?" if close else ""))
    for s in styles.values():
        template("rephrase", s.template, r.prompts_dir)  # a missing or broken template fails before any model loads
    return styles


# ------------------------------------------------------------------ chunking


def segments(text: str, budget: int, count) -> tuple[list[tuple[str, int]], int]:
    """Pieces of ``text`` that fit ``budget`` tokens each: paragraphs, split into lines and then into
    sentences only where needed. Returns (piece, tokens) pairs and the tokens of pieces dropped because
    a single sentence is over the budget."""
    out: list[tuple[str, int]] = []
    dropped = 0
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    todo = [(p, 0) for p in paragraphs]
    counts = count([p for p, _ in todo])
    stack = list(zip(todo, counts))[::-1]
    while stack:
        (piece, depth), n = stack.pop()
        if n <= budget:
            out.append((piece, n))
            continue
        if depth == 0:
            parts = [x.strip() for x in piece.split("\n") if x.strip()]
        elif depth == 1:
            parts = [x.strip() for x in _SENTENCE.split(piece) if x.strip()]
        else:
            parts = []
        if len(parts) <= 1 and depth < 2:  # nothing to split at this level: try the next one
            stack.append(((piece, depth + 1), n))
            continue
        if not parts:
            dropped += n
            continue
        stack.extend(list(zip([(p, depth + 1) for p in parts], count(parts)))[::-1])
    return out, dropped


def chunk_text(text: str, budget: int, count, sep: str = "\n\n") -> tuple[list[tuple[str, int]], int]:
    """Consecutive segments joined greedily up to ``budget`` tokens: [(chunk, tokens)], dropped tokens."""
    segs, dropped = segments(text, budget, count)
    sep_tokens = count([sep])[0] if segs else 0
    chunks: list[list[tuple[str, int]]] = []
    size = 0
    for seg, n in segs:
        if chunks and size + sep_tokens + n <= budget:
            chunks[-1].append((seg, n))
            size += sep_tokens + n
        else:
            chunks.append([(seg, n)])
            size = n
    joined = [sep.join(s for s, _ in c) for c in chunks]
    exact = count(joined) if joined else []
    out = []
    for c, text_c, n in zip(chunks, joined, exact):
        if n > budget and len(c) > 1:  # tokenisation across a join differed: split this one in two
            half = len(c) // 2
            for part in (c[:half], c[half:]):
                t = sep.join(s for s, _ in part)
                out.append((t, count([t])[0]))
        else:
            out.append((text_c, n))
    return out, dropped


def token_counter(tokenizer):
    def count(texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return count


# ------------------------------------------------------------------ replies


def clean_reply(text: str, style: Style, prefilled: bool) -> tuple[str | None, str | None]:
    """(cleaned text, None) or (None, reason). Strips markdown fences, stray wrapping quotes and the
    expected prefix (a prefilled reply that repeats it too); without prefill, a reply missing its
    prefix returns the reason ``missing_prefix``."""
    t = text.strip()
    m = _FENCE.match(t)
    if m:
        t = m.group("body").strip()
    pre = style.prefix.strip()
    for attempt in range(2):  # a prefilled reply sometimes repeats its prefix
        bare = re.sub(r"^[*_#>\s]+", "", t)  # "**Question:**", "## Here is ..."
        if bare.lower().startswith(pre.lower()):
            t = bare[len(pre):].lstrip("*_ :\t").strip()
        elif attempt == 0 and not prefilled:
            return None, "missing_prefix"
        else:
            break
    if len(t) >= 2 and t[0] in _QUOTES and t[-1] == _QUOTES[t[0]] and t[0] not in t[1:-1]:
        t = t[1:-1].strip()
    if style.keep_prefix:
        t = f"{pre} {t}".strip()
    return t, None


def qa_pairs(text: str) -> list[tuple[str, str]]:
    """The complete Question/Answer pairs of a reply (an unanswered question is not a pair)."""
    pairs = []
    for m in _QA.finditer(text):
        q, a = m.group("q").strip(" \t\n*_"), m.group("a").strip(" \t\n*_")
        if q and a and "\n\n" not in q:  # a question that runs on over paragraphs is not one
            pairs.append((q, a))
    return pairs


def format_pairs(pairs: list[tuple[str, str]]) -> str:
    return "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in pairs)


# ------------------------------------------------------------------ the step


class RephraseStep(LLMStep):
    name = "🤖 rephrase"

    def __init__(self, cfg: Config, output: str, failures=None, threads=None):
        super().__init__(cfg.llm, cfg.run.seed, output, failures, threads)
        self.cfg, self.r = cfg, cfg.rephrase
        self.styles = load_styles(cfg)
        self._count = None
        self._encoder = None
        self._gate = None
        self._instructions: dict[str, str] = {}

    def _gate_batch(self, staged: list[tuple]) -> list:
        """The quality gate on the generated parts of a chunk's replies, in one batch: form one by one
        (copying the source is the task here, so only a copy of the instructions counts as an echo),
        meaning against each reply's source chunk. None per reply when the gate is off."""
        if self._gate is None:
            from pipeline.gate import QualityGate

            self._gate = QualityGate(self.cfg.quality_gate, self.cfg.encoder)
        if not self._gate.enabled or not staged:
            return [None] * len(staged)
        for _, style, *_ in staged:
            if style.name not in self._instructions:  # the prompt without its source text (a required variable)
                hole = "\x00source\x00"
                t = template("rephrase", style.template, self.r.prompts_dir).render(text=hole, prefix=style.prefix)
                self._instructions[style.name] = f"{style.system}\n{t.replace(hole, '')}"
        from pipeline.gate import stat_keys

        verdicts = self._gate.check_many([x[3] for x in staged], sources=[x[0].metadata["source_chunk"] for x in staged],
                                         echo_sources=[self._instructions[x[1].name] for x in staged],
                                         finish_reasons=[x[4] for x in staged])
        for v in verdicts:
            for key, n in stat_keys(v):
                self.stat_update(key, value=n)
        return verdicts

    def _counter(self, engine):
        if self._count is None:
            tok = None
            if self.r.tokenizer:
                from transformers import AutoTokenizer

                from pipeline.llm.models import resolve_model

                try:
                    tok = AutoTokenizer.from_pretrained(resolve_model(self.r.tokenizer, self.llm.model_cache_dir))
                except OSError as e:
                    raise UserError(f"rephrase.tokenizer {self.r.tokenizer!r}: cannot load it ({str(e).splitlines()[0]})") from None
            else:
                tok = getattr(engine, "tokenizer", None)
            if tok is None:
                raise UserError("rephrase counts its budgets in the generator's tokens, but this backend has no "
                                "local tokenizer: set rephrase.tokenizer to the model's Hub ID or a local folder")
            self._count = token_counter(tok)
        return self._count

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            from pipeline.embed import encoder_from

            e = self.cfg.encoder
            self._encoder = encoder_from(e)
        return self._encoder.encode(texts)

    def route(self, doc: Document) -> tuple[list[str], str]:
        """The styles of a page and what chose them."""
        meta, r = doc.metadata, self.r
        if r.route_by == "auto":
            bucket = meta.get("quality_bucket")
            if bucket is not None:
                if bucket not in r.routing:
                    raise UserError(f"document {doc.id}: quality bucket {bucket!r} has no entry in rephrase.routing "
                                    f"(mapped: {', '.join(k for k in r.routing if not k.isdigit())})")
                return list(r.routing[bucket]), "quality_bucket"
            score = meta.get("int_score")
            if score is None and isinstance(meta.get("score"), (int, float)):  # e.g. an LLM-scored set with score only
                score = min(5, max(0, int(float(meta["score"]) + 0.5)))
            if score is not None:
                key = str(int(score))
                if key not in r.routing:
                    raise UserError(f"document {doc.id}: int_score {key} has no entry in rephrase.routing")
                return list(r.routing[key]), "int_score"
        return [], "mix"

    def _mix(self, doc_id: str, k: int) -> list[str]:
        rng = random.Random(f"{self.run_seed}:{doc_id}:{k}")
        names = [s for s, w in self.r.mix.items() if w > 0]
        weights = [self.r.mix[s] for s in names]
        picked: list[str] = []
        while names and len(picked) < self.r.styles_per_chunk:
            s = rng.choices(names, weights=weights, k=1)[0]
            i = names.index(s)
            names.pop(i), weights.pop(i)
            picked.append(s)
        return picked

    def _sampling(self, style: Style, rid: str):
        return sampling_for(self.llm, rid, self.run_seed, max_tokens=style.max_tokens)

    def _drop(self, doc: Document, reason: str, detail: str = "", raw: str | None = None) -> None:
        self.stat_update("dropped")
        self.stat_update(f"dropped_{reason}")
        if self.failures is not None:
            doc.metadata.update(filter_reason=reason, error_detail=detail[:2000], raw_reply=raw)
            self.failures.write(doc, rank=self._rank)

    def _plan(self, engine, doc: Document) -> tuple[list[tuple[Document, Style, Request]], Document | None]:
        """The requests of one page, and the page itself as an 'actual' row."""
        count = self._counter(engine)
        meta = doc.metadata
        src = {"source_id": str(doc.id), "source_url": meta.get("url"), "source_score": meta.get("score"),
               "source_int_score": meta.get("int_score"), "source_bucket": meta.get("quality_bucket"),
               "history": meta.get("history"), "url": meta.get("url")}
        if not doc.text.strip():
            self._drop(Document(text=doc.text, id=str(doc.id), metadata={**src, "kind": "actual"}), "empty_document")
            return [], None
        routed, how = self.route(doc)
        src["routed_by"] = how
        actual = None
        if self.r.keep_actual:
            actual = Document(text=doc.text, id=str(doc.id), metadata={**src, "kind": "actual", "source": meta.get("source"),
                                                                       "text_tokens": count([doc.text])[0]})
        by_budget: dict[int, tuple[list, int]] = {}
        plan = []
        candidates = sorted(set(routed)) if how != "mix" else [s for s, w in self.r.mix.items() if w > 0]
        for style_name in candidates:
            style = self.styles[style_name]
            if style.input_tokens not in by_budget:
                by_budget[style.input_tokens] = chunk_text(doc.text, style.input_tokens, count)
                self.stat_update("chunks", value=len(by_budget[style.input_tokens][0]))
                if by_budget[style.input_tokens][1]:
                    self.stat_update("source_tokens_dropped_over_budget", value=by_budget[style.input_tokens][1])
            chunks, dropped = by_budget[style.input_tokens]
            limit = self.r.max_chunks_per_doc or len(chunks)
            for k, (chunk, n) in enumerate(chunks[:limit]):
                if how == "mix" and style_name not in self._mix(str(doc.id), k):
                    continue
                rid = f"{doc.id}/rephrase/{style_name}/{k}"
                prompt = template("rephrase", style.template, self.r.prompts_dir).render(text=chunk, prefix=style.prefix)
                messages = [{"role": "system", "content": style.system}, {"role": "user", "content": prompt}]
                if self.r.prefill:
                    messages.append({"role": "assistant", "content": style.prefix})
                m = {**src, "kind": "synthetic", "style": style_name, "chunk_index": k, "chunks_in_source": len(chunks),
                     "source_chunk": chunk, "source_tokens": n, "dropped_source_tokens": dropped,
                     "prompt_hash": hashlib.sha256(json.dumps(messages).encode()).hexdigest()[:16],
                     "template": f"rephrase/{style.template}.j2", "source": "synthweb/rephrase"}
                plan.append((Document(text="", id=rid, metadata=m), style,
                             Request(rid, messages, self._sampling(style, rid))))
        if not plan and how != "mix":
            self.stat_update("routed_to_no_style")
            if actual is None:  # nothing of the page goes on: it is a removal with its reason, not a silent loss
                self._drop(Document(text=doc.text, id=str(doc.id), metadata={**src, "kind": "actual"}), "routed_to_no_style",
                           f"rephrase.routing maps {how} {meta.get('quality_bucket', meta.get('int_score'))!r} to no style")
        return plan, actual

    def _flush(self, engine, chunk: list[Document]):
        planned, actuals = [], []
        for doc in chunk:
            self.stat_update("documents")
            p, actual = self._plan(engine, doc)
            planned.extend(p)
            if actual is not None:
                actuals.append(actual)
        results = engine.generate([req for _, _, req in planned]) if planned else []
        count = self._counter(engine)
        staged = []  # (row, style, text as kept, the generated part the gate judges, finish reason, raw reply)
        for (row, style, req), res in zip(planned, results):
            self.stat_update("requests")
            self.stat_update(f"requests_{style.name}")
            if res.cached:
                self.stat_update("cache_hits")
            row.metadata.update(model=res.model, engine=res.engine, prompt_tokens=res.prompt_tokens,
                                completion_tokens=res.completion_tokens,
                                sampling=json.dumps(req.sampling.as_dict()),
                                finish_reason=res.outputs[0].finish_reason if res.outputs else None)
            if res.error:
                self._drop(row, f"llm_{res.error}", res.error_detail or "", res.text or None)
                continue
            raw = res.outputs[0].text
            text, why = clean_reply(style.prefix + raw if self.r.prefill else raw, style, self.r.prefill)
            if why:
                self._drop(row, why, f"the reply does not start with {style.prefix!r}", raw)
                continue
            generated = text
            if style.qa:
                pairs = qa_pairs(text)
                if not pairs:
                    self._drop(row, "no_qa_pairs", "no complete 'Question: ... Answer: ...' pair in the reply", raw)
                    continue
                if style.append_to_source:  # Nemotron-CC: a number of pairs in proportion to the source's length
                    keep = max(1, math.ceil(len(row.metadata["source_chunk"].split()) / style.words_per_pair))
                    pairs = pairs[:keep]
                generated = format_pairs(pairs)
                text = f"{row.metadata['source_chunk']}\n\n{generated}" if style.append_to_source else generated
                row.metadata["qa_pairs"] = len(pairs)
            finish = res.outputs[0].finish_reason
            if style.qa and finish == "length":
                finish = "stop"  # the unfinished last pair is already left out by qa_pairs
            staged.append((row, style, text, generated, finish, raw))
        kept: list[tuple[Document, str, object]] = []  # (row, the generated part, its verdict)
        for (row, style, text, generated, finish, raw), v in zip(staged, self._gate_batch(staged)):
            if v is not None:
                row.metadata.update(gate=v.record(), trimmed_at_max_tokens=v.trimmed,
                                    semantic=json.dumps(v.semantic) if v.semantic else None)
                if not v.passed:
                    self._drop(row, v.reason, v.detail(), raw)
                    continue
                if v.text != generated:  # trimmed back to its last full sentence
                    text = v.text if not style.qa else text
                    generated = v.text
            row.text = text
            row.metadata["text_tokens"] = count([text])[0]
            if count([generated])[0] < self.r.min_tokens:
                self._drop(row, "too_short", f"fewer than {self.r.min_tokens} tokens", raw)
                continue
            kept.append((row, generated, v))
        # faithfulness to the source chunk: the gate measured it; without the gate it is measured here
        sims = [v.semantic.get("faithfulness") if v is not None and v.semantic else None for _, _, v in kept]
        todo = [i for i, x in enumerate(sims) if x is None]
        if todo:
            src = self._embed([kept[i][0].metadata["source_chunk"] for i in todo])
            gen = self._embed([kept[i][1] for i in todo])
            cos = np.sum(src * gen, axis=1) / (np.linalg.norm(src, axis=1) * np.linalg.norm(gen, axis=1) + 1e-9)
            for i, x in zip(todo, cos):
                sims[i] = float(x)
        for (row, _, _), sim in zip(kept, sims):
            row.metadata["similarity"] = round(float(sim), 4)
            if sim < self.r.min_similarity:
                self._drop(row, "low_similarity", f"cosine {sim:.3f} to the source chunk < rephrase.min_similarity "
                           f"{self.r.min_similarity:g} (likely off-topic or hallucinated)")
                continue
            self.stat_update(f"kept_{row.metadata['style']}")
            self.update_doc_stats(row)
            yield row
        for actual in actuals:
            self.stat_update("kept_actual")
            yield actual


def build(ctx: StageContext) -> list:
    from pipeline.meaning import check_meaning

    if ctx.cfg.quality_gate.enabled or ctx.stage == "gate":
        check_meaning(ctx.cfg.quality_gate.meaning)
    from pipeline.io.readers import make_reader

    cfg = ctx.cfg
    load_styles(cfg)  # unknown styles and broken templates fail before any model is loaded
    limit = cfg.rephrase.limit or cfg.input.limit
    reader = make_reader(ctx.plan, cfg.input.model_copy(update={"limit": limit}))
    if limit and ctx.plan.total_hint:
        ctx.plan.total_hint = min(ctx.plan.total_hint, limit)
    return [
        ctx.task_start(), reader, ctx.progress(),
        RephraseStep(cfg, str(ctx.output), ctx.writer("removed", "failures", REMOVED_FIELDS), cpu_threads(cfg)),
        ctx.writer("data", "main", REPHRASE_FIELDS),
    ]


def report(data_dir) -> dict:
    """Rows, mean length, similarity and QA pairs per style, from the written shards."""
    from pathlib import Path

    import pyarrow.parquet as pq

    files = sorted(Path(data_dir).glob("*.parquet"))
    if not files:
        return {"rows": 0, "by_style": {}}
    t = pa.concat_tables([pq.read_table(f, columns=["kind", "style", "text_tokens", "similarity", "qa_pairs"]) for f in files])
    rows = t.to_pylist()
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["style"] or "actual", []).append(r)
    out = {}
    for style, rs in sorted(by.items()):
        sims = [r["similarity"] for r in rs if r["similarity"] is not None]
        toks = [r["text_tokens"] for r in rs if r["text_tokens"] is not None]
        out[style] = {"rows": len(rs), "mean_text_tokens": float(np.mean(toks)) if toks else 0.0,
                      "mean_similarity": round(float(np.mean(sims)), 4) if sims else None}
        pairs = [r["qa_pairs"] for r in rs if r["qa_pairs"] is not None]
        if pairs:
            out[style]["mean_qa_pairs"] = round(float(np.mean(pairs)), 2)
    return {"rows": len(rows), "by_style": out}


def main(cfg: Config, force: bool = False, progress: bool = True) -> dict:
    import json

    from pipeline.io.writer import atomic_write_text
    from pipeline.stages.audit import add_audit
    from pipeline.stages.base import run_stage

    load_styles(cfg)  # an unknown style fails before the input is read or a model loads
    stats = run_stage("rephrase", cfg, build, force=force, progress=progress)
    out = Path(cfg.run.output)
    if stats.get("complete") and "rephrase" not in stats:
        stats["rephrase"] = report(out / "data")
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    stats = add_audit(cfg, stats)
    if stats.get("complete") and stats.get("records_out", 0) == 0:
        raise UserError(f"rephrase produced nothing (see {out}/removed and stats.json for the reasons)")
    return stats


def summary(cfg: Config, stats: dict) -> list[str]:
    from pipeline.stages.audit import audit_lines
    from pipeline.stages.summary import gate_lines

    lines = gate_lines(stats) + audit_lines(stats)
    for style, m in stats.get("rephrase", {}).get("by_style", {}).items():
        lines.append(f"rephrase: {style}: {m['rows']} rows, {m['mean_text_tokens']:.0f} tokens on average"
                     + (f", similarity to the source {m['mean_similarity']:.2f}" if m.get("mean_similarity") is not None else ""))
    return lines + [f"wrote {cfg.run.output}"]


def _styles(value: str) -> list[str]:
    names = [s.strip() for s in value.split(",") if s.strip()]
    return ["rephrase.route_by=mix", "rephrase.mix={" + ", ".join(f"{n}: 1" for n in names) + "}",
            f"rephrase.styles_per_chunk={len(names)}"]


def _plan(run) -> list:
    src = run.out / "classify" / "data"  # scored pages: rephrasing routes them by quality
    return [Call(src if src.is_dir() else run.out / "seeds" / "data", run.out / "rephrase", run.quality_scorer())]


def card_lines(cfg: dict, st: dict, facts: dict) -> list[str]:
    """What the dataset card says of a rephrase run: its styles."""
    return [f"- styles (`prompts/rephrase/`): mix {json.dumps(cfg.get('rephrase', {}).get('mix', {}))}"]


STAGE = Stage(
    settings={"rephrase": RephraseConfig}, check=routing_covers_buckets,
    sections=("run", "input", "executor", "writer", "llm", "encoder", "rephrase", "classify", "quality_gate"),
    funnel="rephrased", subset="rephrased", llm=True, card=card_lines,
    name="rephrase", help="web pages -> LLM rephrasings in WRAP and Nemotron-CC styles, routed by quality",
    description="Cut every document of --input into chunks within each style's input budget (generator tokens), "
    "route it to styles by its quality_bucket or int_score (rephrase.routing; a fixed rephrase.mix without "
    "scores), rewrite each chunk with the style's prompt (prompts/rephrase/), clean the replies and drop those "
    "far from their source (rephrase.min_similarity). Writes OUTPUT/data (synthetic rows and, with "
    "rephrase.keep_actual, the source pages as kind=actual), OUTPUT/removed (with reasons) and stats.json.",
    main=main, summary=summary, input_help="documents (a file or folder, e.g. a seeds or classify run's data/)",
    options=(Option(("--styles",), "comma-separated styles applied to every chunk, ignoring quality "
                    "(e.g. wrap_medium,diverse_qa)", override=_styles),),
    plan=_plan,
)
