"""``synthweb gate``: any dataset of LLM rows through the whole quality gate, form and meaning.

The synthetic-data linter: rows made anywhere (ours, Cosmopedia-style rows made elsewhere, a Hub
dataset) are read like every stage's input, each row's text goes through the quality gate's form
checks (loops, mixed scripts, prompt echo, datatrove's web filters) and its meaning checks against
its source (``gate.source_column``, or the first of SOURCE_COLUMNS the rows carry; Cosmopedia's rows
carry their seed only inside ``prompt``, which is then the source). Passing rows go to ``data/``,
failing ones to ``removed/`` with ``filter_reason`` and ``error_detail``; both carry ``gate`` and
``semantic`` (faithfulness, coherence, quality). ``stats.json`` has the pass rate, the failures by check
and the meaning figures, which the summary prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from pydantic import Field

from pipeline.config import Config, Strict
from pipeline.errors import UserError
from pipeline.stages import Option, Stage
from pipeline.stages.base import StageContext


class GateStageConfig(Strict):
    """``synthweb gate``: which columns of rows made elsewhere hold what the gate needs."""

    source_column: str | None = None  # each row's source text; default: the first of seed_extract, source_chunk, ... prompt
    prompt_column: str | None = None  # the prompt, for the echo check; default: prompt when the rows have it
    chunk_size: int = Field(default=64, ge=1)  # rows per meaning batch (one encoder call)


# where a row's source text is looked for, in this order (``source`` is provenance, never a text)
SOURCE_COLUMNS = ("seed_extract", "source_chunk", "source_text", "source_document", "original_text", "document",
                  "context", "prompt")
GATE_FIELDS = [pa.field("gate", pa.string()), pa.field("semantic", pa.string()), pa.field("gate_source", pa.string())]
REMOVED_FIELDS = GATE_FIELDS + [pa.field("filter_reason", pa.string()), pa.field("error_detail", pa.string())]


def find_columns(cfg: Config, plan) -> dict:
    """The source, prompt and finish-reason columns of the rows: named in config, or found in the first
    file's columns (Parquet schema or the first JSONL record). A named column that is missing is an error."""
    g = cfg.gate
    cols: list[str] = []
    first = plan.files[0] if plan.files else None
    if first and plan.format == "parquet":
        import pyarrow.parquet as pq

        cols = pq.read_schema(first).names
    elif first and plan.format == "jsonl":
        from pipeline.io.readers import JsonlReader

        for _, raw in JsonlReader(plan, cfg.input).iter_file(first):
            if isinstance(raw, dict):
                cols = list(raw) + list(raw.get("metadata") or {}) if isinstance(raw.get("metadata"), dict) else list(raw)
            break
    for key, name in (("source_column", g.source_column), ("prompt_column", g.prompt_column)):
        if name and cols and name not in cols:
            raise UserError(f"gate.{key}: {first} has no column {name!r} (columns: {', '.join(cols)})")
    source = g.source_column or next((c for c in SOURCE_COLUMNS if c in cols and c != cfg.input.text_key), None)
    prompt = g.prompt_column or ("prompt" if "prompt" in cols else None)
    finish = "finish_reason" if "finish_reason" in cols else None
    return {"source": source, "prompt": prompt, "finish": finish, "columns": cols}


class GateStep(PipelineStep):
    """Rows in chunks through ``QualityGate.check_many``: passing rows on, failing ones to removed/."""

    name = "🚦 quality gate"
    type = "🔻 - FILTER"
    preload = ("sentence_transformers",)

    def __init__(self, cfg: Config, columns: dict, removed, chunk: int = 64):
        super().__init__()
        self.cfg, self.columns, self.removed, self.chunk = cfg, columns, removed, chunk

    def _value(self, doc: Document, key: str) -> str | None:
        name = self.columns.get(key)
        v = doc.metadata.get(name) if name else None
        return v if isinstance(v, str) and v.strip() else None

    def _flush(self, gate, docs: list[Document], rank: int):
        from pipeline.gate import stat_keys

        sources = [self._value(d, "source") for d in docs]
        verdicts = gate.check_many([d.text for d in docs], sources=sources,
                                   echo_sources=[self._value(d, "prompt") for d in docs],
                                   finish_reasons=[self._value(d, "finish") for d in docs])
        for doc, v, src in zip(docs, verdicts, sources):
            for key, n in stat_keys(v):
                self.stat_update(key, value=n)
            doc.metadata.update(gate=v.record(), semantic=json.dumps(v.semantic) if v.semantic else None,
                                gate_source=self.columns["source"] if src else None)
            if v.passed:
                doc.text = v.text  # as kept: tidied, trimmed to its last sentence when it was cut at max_tokens
                self.stat_update("kept")
                self.update_doc_stats(doc)
                yield doc
            else:
                self.stat_update("dropped")
                self.stat_update(f"dropped_{v.reason}")
                doc.metadata.update(filter_reason=v.reason, error_detail=v.detail()[:2000])
                self.removed.write(doc, rank=rank)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from pipeline.gate import QualityGate

        gate = QualityGate(self.cfg.quality_gate.model_copy(update={"enabled": True}), self.cfg.encoder)
        with self.removed:
            batch: list[Document] = []
            for doc in data:
                batch.append(doc)
                if len(batch) >= self.chunk:
                    yield from self._flush(gate, batch, rank)
                    batch = []
            if batch:
                yield from self._flush(gate, batch, rank)


def build(ctx: StageContext) -> list:
    from pipeline.meaning import check_meaning

    if ctx.cfg.quality_gate.enabled or ctx.stage == "gate":
        check_meaning(ctx.cfg.quality_gate.meaning)
    columns = find_columns(ctx.cfg, ctx.plan)
    return [
        ctx.task_start(), ctx.reader(), ctx.progress(),
        GateStep(ctx.cfg, columns, ctx.writer("removed", "gate", REMOVED_FIELDS), ctx.cfg.gate.chunk_size),
        ctx.writer("data", "main", GATE_FIELDS),
    ]


def finish(cfg: Config, stats: dict) -> dict:
    """The meaning figures of what was read (kept and removed), and the audit of the kept rows."""
    from pipeline.io.writer import atomic_write_text
    from pipeline.stages.audit import add_audit, meaning_report

    out = Path(cfg.run.output)
    if stats.get("complete") and "meaning" not in stats:
        stats["meaning"] = meaning_report([out / "data", out / "removed"])
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    return add_audit(cfg, stats)


def main(cfg: Config, force: bool = False, progress: bool = True) -> dict:
    from pipeline.stages.base import run_stage

    return run_stage("gate", cfg, build, force=force, progress=progress, finish=finish)


def summary(cfg: Config, stats: dict) -> list[str]:
    from pipeline.stages.audit import meaning_line
    from pipeline.stages.summary import gate_lines

    lines = [f"gate: {stats.get('records_out', 0):,} of {stats.get('records_in', 0):,} rows passed"]
    lines += gate_lines(stats)
    if stats.get("meaning", {}).get("rows"):
        lines.append(meaning_line(stats["meaning"]))
    return lines + [f"wrote {cfg.run.output}/data (passed) and {cfg.run.output}/removed (with reasons)"]


STAGE = Stage(
    settings={"gate": GateStageConfig},
    sections=("run", "input", "executor", "writer", "encoder", "gate", "quality_gate"),
    name="gate", help="any dataset of LLM rows -> the quality gate (form and meaning): data/ and removed/ with reasons",
    description="Read rows (a file, a folder or a Hub dataset; --text-column names the text) and run every row through "
    "the quality gate: the form checks (loops, scripts, language, prompt echo, datatrove's Gopher/C4/FineWeb filters) "
    "and the meaning checks against its source (--source-column, or the first of " + ", ".join(SOURCE_COLUMNS) +
    " the rows carry): faithfulness, coherence and, with quality_gate.meaning.quality.classifier, the quality score "
    "of row and source. Writes OUTPUT/data, OUTPUT/removed (filter_reason, error_detail) and stats.json.",
    main=main, summary=summary, input_help="rows to check: a file or folder (Parquet/JSONL) or a Hub dataset name",
    options=(Option(("--source-column",), "the column holding each row's source text (sets gate.source_column)",
                    override=lambda v: [f"gate.source_column={v}"]),
             Option(("--text-column",), "the column holding the LLM text (sets input.text_key; default text)",
                    override=lambda v: [f"input.text_key={v}"]),
             Option(("--prompt-column",), "the column holding the prompt, for the echo check (sets gate.prompt_column)",
                    override=lambda v: [f"gate.prompt_column={v}"])),
)
