"""``synthweb annotate``: an LLM scores each document 0-5 on an additive rubric (FineWeb-Edu recipe).

The document is cut to ``annotate.max_chars`` characters (at a word boundary; the cut is recorded)
and shown with the rubric of ``prompts/annotate/<template>.j2``. How the score comes back:

- ``free``: one reply whose last ``<score_label>: N`` line is parsed. A reply with no score, with
  two different scores, or with a score outside 0-5 is a failure kept in ``removed/`` with the raw
  reply; there is never a default score.
- ``constrained``: the free justification, then a second turn whose answer is decoded as one of
  ``0``..``5`` (token trie on transformers, guided choice on servers, structured outputs on vLLM).
  Small models that never write the final line still yield a score.
- ``json``: one reply ``{"reasoning", "score"}`` under the backend's JSON-schema constraint.

A jury (``annotate.jury``: more annotators, each an ``llm`` override) scores every document too;
the row's ``score`` is the mean or median of the annotators that answered, and each one's score
is kept in ``annotator_scores``. Agreement between annotators goes to ``stats.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from datatrove.data import Document
from pydantic import Field, ValidationError, field_validator

from pipeline.config import Config, Strict
from pipeline.errors import UserError
from pipeline.llm.config import LLMConfig, merge_llm
from pipeline.llm.engine import make_engine, sampling_for
from pipeline.llm.step import LLMStep, cpu_threads
from pipeline.llm.types import Request
from pipeline.prompts import template
from pipeline.stages import Call, Stage
from pipeline.stages.base import StageContext


class AnnotateConfig(Strict):
    """``synthweb annotate``: an LLM scores each document 0-5 with an additive rubric (FineWeb-Edu style)."""

    template: str = "edu"  # prompts/annotate/<template>.j2 (edu: educational value; legal: legal value)
    score_label: str = "Educational score"  # the final-line label the template asks for ("<label>: N")
    max_chars: int = Field(default=3000, ge=100)  # document text shown to the annotator, cut at a word boundary
    # free: one reply, its last "<label>: N" line parsed; constrained: the justification, then the score
    # decoded as one of 0..5 in a second turn (any backend; small models never miss the format);
    # json: one reply as {"reasoning", "score"} under the backend's JSON constraint (vllm, openai)
    mode: Literal["free", "constrained", "json"] = "free"
    max_tokens: int = Field(default=256, ge=1)  # justification length
    limit: int | None = Field(default=None, ge=1)  # annotate at most this many documents
    jury: list[dict[str, Any]] = []  # extra annotators: llm overrides each, e.g. {model: ..., sampling: {...}}
    aggregate: Literal["mean", "median"] = "mean"
    prompts_dir: str | None = None

    @field_validator("jury")
    @classmethod
    def _jury(cls, v: list[dict]) -> list[dict]:
        for i, member in enumerate(v):
            try:
                LLMConfig.model_validate(member)
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(x) for x in err["loc"])
                raise ValueError(f"jury[{i}].{where}: {err['msg']}") from None
        return v


SCORES = [str(i) for i in range(6)]
JSON_SCHEMA = {"type": "object", "properties": {"reasoning": {"type": "string"},
                                                "score": {"type": "integer", "minimum": 0, "maximum": 5}},
               "required": ["reasoning", "score"]}

ANN_FIELDS = [
    pa.field("annotation_model", pa.string()),
    pa.field("annotation_template", pa.string()),
    pa.field("annotation_mode", pa.string()),
    pa.field("prompt_hash", pa.string()),
    pa.field("annotated_chars", pa.int32()),
    pa.field("annotation_truncated", pa.bool_()),
    pa.field("sampling", pa.string()),
    pa.field("prompt_tokens", pa.int32()),
    pa.field("completion_tokens", pa.int32()),
]
STAGE_FIELDS = [
    pa.field("score", pa.float32()),
    pa.field("int_score", pa.int8()),
    pa.field("score_reasoning", pa.string()),
    pa.field("annotators", pa.int16()),
    pa.field("annotator_scores", pa.string()),  # JSON: [{model, score, error}] per annotator
] + ANN_FIELDS
REMOVED_FIELDS = ANN_FIELDS + [
    pa.field("annotator_scores", pa.string()),
    pa.field("filter_reason", pa.string()),
    pa.field("error_detail", pa.string()),
    pa.field("raw_reply", pa.string()),
]


class ScoreError(ValueError):
    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def parse_score(text: str, label: str = "Educational score") -> tuple[int, str]:
    """(score, justification) from a free reply; :class:`ScoreError` names what is wrong."""
    pattern = re.compile(rf"(?:{re.escape(label)}|\bscore)\s*\**\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*5\b)?",
                         re.IGNORECASE)
    found = [(m.group(1), m.span()) for m in pattern.finditer(text)]
    if not found:  # a bare number ("3" or "3/5") on the last line
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        m = re.fullmatch(r"\W*(-?\d+(?:\.\d+)?)(?:\s*/\s*5)?\W*", lines[-1]) if lines else None
        if not m:
            raise ScoreError("no_score", f"no '{label}: N' line and no bare number on the last line")
        found = [(m.group(1), (len(text) - len(lines[-1]), len(text)))]
    values = sorted({float(v) for v, _ in found})
    if len(values) > 1:
        raise ScoreError("ambiguous_score", f"the reply gives several scores: {', '.join(f'{v:g}' for v in values)}")
    v = values[0]
    if not v.is_integer() or not 0 <= v <= 5:
        raise ScoreError("score_out_of_range", f"score {v:g} is not a whole number from 0 to 5")
    reasoning = text
    for a, b in sorted((s for _, s in found), reverse=True):
        reasoning = reasoning[:a] + reasoning[b:]
    return int(v), reasoning.strip().rstrip("*").strip()


def cut_text(text: str, max_chars: int) -> tuple[str, bool]:
    """The first ``max_chars`` characters, ending at a word boundary."""
    text = text.strip()
    if len(text) <= max_chars:
        return text, False
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars * 0.8 else cut).rstrip(), True


def jury_members(cfg: Config) -> list[LLMConfig]:
    """The annotators: the ``llm`` section, then each jury entry merged over it."""
    return [cfg.llm, *(merge_llm(cfg.llm, o) for o in cfg.annotate.jury)]


class AnnotateStep(LLMStep):
    name = "🤖 annotate"

    def __init__(self, cfg: Config, output: str, failures=None, threads=None):
        super().__init__(cfg.llm, cfg.run.seed, output, failures, threads)
        self.cfg, self.a = cfg, cfg.annotate
        self.members = jury_members(cfg)

    # ------------------------------------------------------------------ requests

    def _prompt(self, doc: Document) -> str:
        text, truncated = cut_text(doc.text, self.a.max_chars)
        doc.metadata.update(annotated_chars=len(text), annotation_truncated=truncated)
        tpl = template("annotate", self.a.template, self.a.prompts_dir)
        prompt = tpl.render(text=text, url=doc.metadata.get("url"), score_label=self.a.score_label,
                            json_reply=self.a.mode == "json")
        doc.metadata.update(prompt_hash=hashlib.sha256(prompt.encode()).hexdigest()[:16],
                            annotation_template=f"annotate/{tpl.path.name}", annotation_mode=self.a.mode)
        return prompt

    def _sampling(self, member: LLMConfig, rid: str, **kw):
        return sampling_for(member, rid, self.run_seed, **{"max_tokens": self.a.max_tokens, **kw})

    def _judge(self, engine, member: LLMConfig, j: int, chunk: list[Document], prompts: list[str]) -> list[dict]:
        """One annotator over a chunk: per document {score, reasoning, raw, error, detail, tokens}."""
        rid = [f"{d.id}/annotate/{j}" for d in chunk]
        fmt = {"type": "json", "schema": JSON_SCHEMA} if self.a.mode == "json" else None
        first = [Request(r, [{"role": "user", "content": p}], self._sampling(member, r), fmt) for r, p in zip(rid, prompts)]
        results = engine.generate(first)
        verdicts = []
        for res in results:
            v = {"model": res.model, "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                 "raw": res.outputs[0].text if res.outputs else None, "cached": res.cached}
            if res.error:
                v.update(error=res.error, detail=res.error_detail)
            elif self.a.mode == "json":
                v.update(score=int(res.outputs[0].parsed["score"]), reasoning=str(res.outputs[0].parsed["reasoning"]))
            elif self.a.mode == "free":
                try:
                    v["score"], v["reasoning"] = parse_score(v["raw"], self.a.score_label)
                except ScoreError as e:
                    v.update(error=e.kind, detail=e.detail)
            else:
                v["reasoning"] = v["raw"].strip()
            verdicts.append(v)
        if self.a.mode == "constrained":
            follow = template("annotate", "score", self.a.prompts_dir).render(score_label=self.a.score_label)
            todo = [i for i, v in enumerate(verdicts) if "error" not in v]
            second = [Request(f"{rid[i]}/score", [{"role": "user", "content": prompts[i]},
                                                   {"role": "assistant", "content": verdicts[i]["raw"]},
                                                   {"role": "user", "content": follow}],
                              self._sampling(member, f"{rid[i]}/score", max_tokens=4, min_tokens=0),
                              {"type": "choice", "choices": SCORES}) for i in todo]
            for i, res in zip(todo, engine.generate(second)):
                v = verdicts[i]
                v["prompt_tokens"] += res.prompt_tokens
                v["completion_tokens"] += res.completion_tokens
                if res.error:
                    v.update(error=res.error, detail=res.error_detail)
                else:
                    v["score"] = int(res.outputs[0].parsed)
        return verdicts

    def _flush(self, engine, chunk: list[Document]):
        prompts = [self._prompt(d) for d in chunk]
        engines = [engine, *self._extra]
        per_member = [self._judge(e, m, j, chunk, prompts) for j, (e, m) in enumerate(zip(engines, self.members))]
        for k, doc in enumerate(chunk):
            verdicts = [pm[k] for pm in per_member]
            self.stat_update("requests")
            ok = [v for v in verdicts if "score" in v]
            first = verdicts[0]
            doc.metadata.update(
                annotation_model=",".join(dict.fromkeys(v["model"] for v in verdicts)),
                sampling=json.dumps(self._sampling(self.members[0], f"{doc.id}/annotate/0").as_dict()),
                prompt_tokens=sum(v["prompt_tokens"] or 0 for v in verdicts),
                completion_tokens=sum(v["completion_tokens"] or 0 for v in verdicts),
                annotator_scores=json.dumps([{"model": v["model"], "score": v.get("score"), "error": v.get("error")}
                                             for v in verdicts]),
            )
            for v in verdicts:
                if "error" in v:
                    self.stat_update(f"annotator_failed_{v['error']}")
            if not ok:
                self.stat_update("dropped")
                self.stat_update(f"dropped_{first['error']}")
                if self.failures is not None:
                    doc.metadata.update(filter_reason=first["error"], error_detail=(first.get("detail") or "")[:2000],
                                        raw_reply=first.get("raw"))
                    self.failures.write(doc, rank=self._rank)
                continue
            scores = [v["score"] for v in ok]
            score = float(np.median(scores) if self.a.aggregate == "median" else np.mean(scores))
            doc.metadata.update(score=score, int_score=int(np.clip(np.floor(score + 0.5), 0, 5)), annotators=len(ok),
                                score_reasoning=ok[0].get("reasoning"))
            self.stat_update(f"score_{int(np.floor(score + 0.5))}")
            self.update_doc_stats(doc)
            yield doc

    def run(self, data, rank: int = 0, world_size: int = 1):
        # the jury's extra engines live beside the main one for the whole task
        extra = []
        try:
            for j, member in enumerate(self.members[1:], start=1):
                e = make_engine(member, self.cache_path, Path(self.metrics_dir) / f"{rank:05d}-jury{j}.json")
                extra.append(e)
            self._extra = extra
            yield from super().run(data, rank, world_size)
        finally:
            for e in extra:
                e.close()


def annotation_report(data_dir: Path) -> dict:
    """Score histogram and, with a jury, pairwise agreement between annotators."""
    import pyarrow.parquet as pq

    files = sorted(Path(data_dir).glob("*.parquet"))
    if not files:
        return {"annotated": 0}
    t = pa.concat_tables([pq.read_table(f, columns=["int_score", "annotator_scores"]) for f in files])
    ints = t.column("int_score").to_numpy(zero_copy_only=False)
    report: dict = {"annotated": len(ints), "int_score_histogram": {str(i): int((ints == i).sum()) for i in range(6)}}
    per_doc = [json.loads(s) for s in t.column("annotator_scores").to_pylist()]
    n = max((len(p) for p in per_doc), default=1)
    if n > 1:
        from scipy.stats import spearmanr

        pairs = {}
        for i in range(n):
            for j in range(i + 1, n):
                both = [(p[i]["score"], p[j]["score"]) for p in per_doc
                        if len(p) > j and p[i]["score"] is not None and p[j]["score"] is not None]
                if not both:
                    continue
                a, b = np.array(both, dtype=float).T
                pairs[f"{i}-{j}"] = {"n": len(both), "exact": round(float((a == b).mean()), 4),
                                     "within_1": round(float((np.abs(a - b) <= 1).mean()), 4),
                                     "spearman": round(float(spearmanr(a, b).statistic), 4) if len(set(a)) > 1 and len(set(b)) > 1 else None}
        report["jury_agreement"] = pairs
    return report


def build(ctx: StageContext) -> list:
    from pipeline.io.readers import make_reader

    cfg = ctx.cfg
    template("annotate", cfg.annotate.template, cfg.annotate.prompts_dir)  # a missing template fails before loading
    reader = make_reader(ctx.plan, cfg.input.model_copy(update={"limit": cfg.annotate.limit or cfg.input.limit}))
    if cfg.annotate.limit and ctx.plan.total_hint:
        ctx.plan.total_hint = min(ctx.plan.total_hint, cfg.annotate.limit)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return [
        ctx.task_start(), reader, ctx.progress(),
        AnnotateStep(cfg, str(ctx.output), ctx.writer("removed", "failures", REMOVED_FIELDS), cpu_threads(cfg)),
        ctx.writer("data", "main", STAGE_FIELDS),
    ]


def main(cfg: Config, force: bool = False, progress: bool = True) -> dict:
    import json

    from pipeline.io.writer import atomic_write_text
    from pipeline.stages.base import run_stage

    stats = run_stage("annotate", cfg, build, force=force, progress=progress)
    out = Path(cfg.run.output)
    if stats.get("complete") and "annotation" not in stats:
        stats["annotation"] = annotation_report(out / "data")
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    if stats.get("complete") and stats.get("records_out", 0) == 0:
        raise UserError(f"no document got a score (see {out}/removed for the replies and the reasons)")
    return stats


def summary(cfg: Config, stats: dict) -> list[str]:
    a, lines = stats.get("annotation", {}), []
    if a.get("annotated"):
        lines.append(f"annotation: {a['annotated']} scored; int_score histogram {a['int_score_histogram']}")
        lines += [f"  annotators {pair}: exact {m['exact']:.0%}, within 1 {m['within_1']:.0%}, spearman {m['spearman']}"
                  for pair, m in a.get("jury_agreement", {}).items()]
    return lines + [f"wrote {cfg.run.output}"]


STAGE = Stage(
    settings={"annotate": AnnotateConfig},
    sections=("run", "input", "executor", "writer", "llm", "annotate"), funnel="annotated", llm=True,
    name="annotate", help="documents -> 0-5 scores from the LLM with the rubric in prompts/annotate/ (justification kept)",
    description="Score every document of --input with the additive 0-5 rubric of prompts/annotate/<annotate.template>.j2 "
    "through the engine in the llm section (and the annotate.jury, if any). Writes OUTPUT/data (score, int_score, "
    "justification, annotator scores, provenance), OUTPUT/removed (replies without a usable score, with the raw "
    "text) and OUTPUT/stats.json (score histogram, jury agreement).",
    main=main, summary=summary, input_help="documents (a file or folder, e.g. a seeds run's data/)",
    plan=lambda run: [Call(run.out / "seeds" / "data", run.out / "annotate")],
)
