"""``synthweb infer``: a file of prompts through the configured engine, answers as Parquet shards.

The generic batch-inference stage (and the one the engine tests, the crash/resume test and the
benchmark drive). Each record's ``input.text_key`` field is the user message; an optional
``system`` field the system message; a ``messages`` list, when present, the whole conversation.
With ``llm.sampling.n > 1`` each sample is a row (``sample_index``). Failed requests go to
``removed/`` with the reason and the raw reply.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from datatrove.data import Document
from pydantic import field_validator

from pipeline.config import Strict
from pipeline.errors import UserError
from pipeline.llm.config import validate_format
from pipeline.llm.engine import sampling_for
from pipeline.llm.step import LLMStep, cpu_threads
from pipeline.llm.types import Request, Result
from pipeline.stages import Stage
from pipeline.stages.base import StageContext


class InferConfig(Strict):
    """``synthweb infer``: run a file of prompts through the engine (each record: ``input.text_key``
    is the user message; an optional ``system`` field is the system message; a ``messages`` list, when
    present, is the whole conversation)."""

    system_key: str = "system"
    messages_key: str = "messages"
    response_format: dict[str, Any] | None = None  # {type: choice, choices: [...]} | {type: json, schema: {...}}
    keep_failures: bool = True  # failed requests go to OUTPUT/removed with the reason and raw reply
    quality_gate: bool = False  # replies also pass the quality_gate section (off: infer serves any prompt)

    @field_validator("response_format")
    @classmethod
    def _fmt(cls, v):
        validate_format(v)
        return v


LLM_FIELDS = [
    pa.field("prompt", pa.string()),
    pa.field("model", pa.string()),
    pa.field("engine", pa.string()),
    pa.field("sampling", pa.string()),  # JSON of the sampling parameters used
    pa.field("prompt_tokens", pa.int32()),
    pa.field("completion_tokens", pa.int32()),
    pa.field("truncated_prompt", pa.bool_()),
]
STAGE_FIELDS = LLM_FIELDS + [
    pa.field("finish_reason", pa.string()),
    pa.field("sample_index", pa.int16()),
    pa.field("parsed", pa.string()),  # JSON of the structured value, when a response_format was set
]
REMOVED_FIELDS = LLM_FIELDS + [
    pa.field("filter_reason", pa.string()),
    pa.field("error_detail", pa.string()),
    pa.field("raw_reply", pa.string()),
]


def messages_of(doc: Document, system_key: str, messages_key: str) -> list[dict]:
    msgs = doc.metadata.get(messages_key)
    if isinstance(msgs, list) and msgs:
        return [{"role": str(m.get("role", "user")), "content": str(m.get("content", ""))} for m in msgs]
    out = []
    system = doc.metadata.get(system_key)
    if system:
        out.append({"role": "system", "content": str(system)})
    out.append({"role": "user", "content": doc.text})
    return out


class InferStep(LLMStep):
    name = "🤖 infer"

    def __init__(self, llm, run_seed, output, infer_cfg, failures=None, threads=None, gate_cfg=None):
        super().__init__(llm, run_seed, output, failures, threads)
        self.infer = infer_cfg
        self.gate_cfg = gate_cfg if infer_cfg.quality_gate else None
        self._gate = None

    def _passes(self, doc: Document, raw: str) -> bool:
        """infer.quality_gate: the reply through the quality gate; a failure goes to removed/."""
        from pipeline.gate import QualityGate, stat_keys

        if self._gate is None:
            self._gate = QualityGate(self.gate_cfg)
        v = self._gate.check(raw, echo_source=doc.metadata.get("prompt"), finish_reason=doc.metadata["finish_reason"])
        for key, n in stat_keys(v):
            self.stat_update(key, value=n)
        doc.text = v.text
        if v.passed:
            return True
        self.stat_update("dropped")
        self.stat_update(f"dropped_{v.reason}")
        if self.failures is not None:
            doc.metadata.update(filter_reason=v.reason, error_detail=v.detail(), raw_reply=raw)
            self.failures.write(doc, rank=self._rank)
        return False

    def request_for(self, doc: Document) -> Request:
        msgs = messages_of(doc, self.infer.system_key, self.infer.messages_key)
        doc.metadata["prompt"] = msgs[-1]["content"]
        return Request(str(doc.id), msgs, sampling_for(self.llm, str(doc.id), self.run_seed),
                       self.infer.response_format)

    def _common(self, doc: Document, res: Result) -> None:
        meta = doc.metadata
        meta.pop(self.infer.system_key, None)
        meta.pop(self.infer.messages_key, None)
        meta.update(model=res.model, engine=res.engine, prompt_tokens=res.prompt_tokens,
                    truncated_prompt=res.truncated,
                    sampling=json.dumps(sampling_for(self.llm, str(doc.id), self.run_seed).as_dict()))

    def apply(self, doc: Document, res: Result) -> list[Document]:
        self._common(doc, res)
        docs = []
        for k, out in enumerate(res.outputs):
            meta = dict(doc.metadata, finish_reason=out.finish_reason, completion_tokens=out.completion_tokens,
                        sample_index=k, parsed=json.dumps(out.parsed) if out.parsed is not None else None)
            new = Document(text=out.text, id=doc.id if len(res.outputs) == 1 else f"{doc.id}#{k}", metadata=meta)
            if self.gate_cfg is None or self._passes(new, out.text):
                docs.append(new)
        return docs

    def failed(self, doc: Document, res: Result) -> Document:
        self._common(doc, res)
        doc.metadata["completion_tokens"] = res.completion_tokens
        return super().failed(doc, res)


def build(ctx: StageContext) -> list:
    cfg = ctx.cfg
    failures = ctx.writer("removed", "failures", REMOVED_FIELDS) if cfg.infer.keep_failures else None
    return [
        ctx.task_start(), ctx.reader(), ctx.progress(),
        InferStep(cfg.llm, cfg.run.seed, str(ctx.output), cfg.infer, failures, cpu_threads(cfg), cfg.quality_gate),
        ctx.writer("data", "main", STAGE_FIELDS),
    ]


def main(cfg, force: bool = False, progress: bool = True) -> dict:
    from pipeline.stages.base import run_stage

    stats = run_stage("infer", cfg, build, force=force, progress=progress)
    if stats.get("complete") and stats.get("records_in", 0) == 0:
        raise UserError(f"{cfg.input.source} holds no requests (0 records read); nothing was generated")
    return stats


STAGE = Stage(
    settings={"infer": InferConfig},
    sections=("run", "input", "executor", "writer", "llm", "infer", "quality_gate"), llm=True,
    name="infer", help="a file of prompts -> LLM answers (any backend), with request-level resume",
    description="Run every record of --input (JSONL/Parquet: the user message in input.text_key, optional "
    "'system' and 'messages' fields) through the engine in the llm section (transformers, openai or vllm) "
    "and write the answers with token counts to OUTPUT/data, failures with reasons to OUTPUT/removed, and "
    "engine metrics to OUTPUT/stats.json. Answers are cached per request: a rerun after a crash sends only "
    "what had not completed.",
    main=main, summary=lambda cfg, stats: [f"wrote {cfg.run.output}"],
    input_help="prompts file or folder (sets input.source)",
)
