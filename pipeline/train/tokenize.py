"""Parquet/JSONL shards -> packed token shards for the trainer.

datatrove's ``DocumentTokenizer`` does the work: batched fast tokenization, an EOS after every
document, uint16 tokens when the vocabulary fits (else uint32), a ``.index`` of document ends and a
seeded shuffle of documents inside each file. We add what a training run needs around it: the
tokenizer resolved like the generator's model (offline default: SmolLM2's), a held-out validation
split by a hash of the document id, a row filter (``where: "score >= 3"``), a check that the text
column exists before any work starts, and a ``tokens.json`` manifest written last, so a folder
without it is incomplete and a rerun resumes (datatrove skips completed tasks).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import operator
import shutil
from pathlib import Path
from typing import Any

import yaml
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from pydantic import Field, field_validator

from pipeline.config import Strict
from pipeline.errors import StageFailed, StaleOutput, UserError
from pipeline.llm.tokenizer import eos_of, load_tokenizer, resolve_tokenizer  # noqa: F401 - re-exported for train
from pipeline.stages import Option, Stage


def parse_where(expr: str) -> tuple[str, str, Any]:
    """``"score >= 3"`` -> ("score", ">=", 3). The value is read as YAML (numbers, strings, booleans)."""
    for op in (">=", "<=", "==", "!=", ">", "<"):
        if op in expr:
            col, raw = expr.split(op, 1)
            if col.strip() and raw.strip():
                return col.strip(), op, yaml.safe_load(raw.strip())
    raise ValueError(f"where {expr!r}: expected 'column OP value' with OP one of == != >= <= > <")


def dataset_name(d) -> str:
    """A dataset's name: its ``name``, else its folder's (the parent's for a ``data``/``kept`` folder)."""
    if d.name:
        return d.name
    p = Path(d.path.rstrip("/"))
    name = p.name.split(".")[0] if p.suffix else p.name
    if name in ("data", "kept", "train") and p.parent.name:
        name = f"{p.parent.name}-{name}"
    return name or "dataset"


class TokenizeConfig(Strict):
    """Parquet/JSONL shards -> packed token shards (datatrove's DocumentTokenizer: uint16/uint32 + index)."""

    tokenizer: str | None = None  # default: the tokenizer of llm.model (SmolLM2's); a folder, tokenizer.json or Hub ID
    eos_token: str | None = None  # document separator; default <|endoftext|> when the vocabulary has it, else its EOS
    text_column: str = "text"
    validation_fraction: float = Field(default=0.01, ge=0, lt=0.5)  # documents held out (by a hash of their id)
    shuffle: bool = True  # documents shuffled inside each token file, seeded by run.seed
    drop_repeated_ids: bool = True  # a document id seen before is skipped (each task then reads every file)
    batch_size: int = Field(default=1000, ge=1)
    max_tokens_per_file: int | None = Field(default=None, ge=1024)


class TrainDataset(Strict):
    """One training source: Parquet/JSONL shards (tokenized on first use) or a tokenized folder."""

    path: str
    name: str | None = None  # default: the folder's name
    weight: float = Field(default=1.0, gt=0)  # mixture weight (sequences drawn in proportion)
    text_column: str | None = None  # default: tokenize.text_column
    where: str | None = None  # keep rows matching "column OP value", OP in == != >= <= > <; e.g. "score >= 3"

    @field_validator("where")
    @classmethod
    def _where(cls, v: str | None) -> str | None:
        if v is not None:
            parse_where(v)
        return v


MANIFEST = "tokens.json"
PARTS = ("train", "val")
_OPS = {"==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def is_tokenized(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


# ---------------------------------------------------------------- tokenizer


# ---------------------------------------------------------------- the datatrove step before the tokenizer


def in_validation(doc_id: str, fraction: float) -> bool:
    """Stable split by a hash of the id: the same page is held out in every run and on every machine."""
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


def _bucket(doc_id: str, n: int) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8, person=b"task").digest(), "big") % n


class SplitSelect(PipelineStep):
    """Passes the documents of one split (train or val) that match ``where``.

    With ``drop_repeated_ids`` every task reads every file (the reader wrapped to see one task) and
    keeps the ids that hash to it, so a page repeated across files meets its copies in one task and
    only its first copy is tokenized."""

    name = "✂ split"
    type = "🔻 - FILTER"

    def __init__(self, reader: PipelineStep, part: str, fraction: float, where: str | None, drop_repeated_ids: bool):
        super().__init__()
        self.reader = reader
        self.part, self.fraction, self.where, self.drop_repeated = part, fraction, where, drop_repeated_ids

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        cond = parse_where(self.where) if self.where else None
        seen: set[str] = set()
        if self.drop_repeated:
            docs = (d for d in self.reader.run(None, 0, 1) if _bucket(d.id, world_size) == rank)
        else:
            docs = self.reader.run(None, rank, world_size)
        for doc in docs:
            self.stat_update("read")
            if self.drop_repeated:  # before the condition: a page's first copy decides, so it is in one split only
                if doc.id in seen:
                    self.stat_update("dropped_repeated_id")
                    continue
                seen.add(doc.id)
            if cond:
                col, op, value = cond
                have = doc.metadata.get(col)
                if have is None or not _compare(have, op, value):
                    self.stat_update("dropped_by_where")
                    continue
            if not doc.text.strip():
                self.stat_update("dropped_empty")
                continue
            if in_validation(doc.id, self.fraction) == (self.part == "val"):
                self.stat_update(f"docs_{self.part}")
                yield doc
            else:
                self.stat_update("other_split")


def _compare(have, op: str, value) -> bool:
    try:
        return bool(_OPS[op](have, value))
    except TypeError:
        return False


# ---------------------------------------------------------------- running it


def _split_counts(logs: Path) -> dict[str, int]:
    """SplitSelect's counters summed over the tasks of one part (datatrove's per-task stats files)."""
    counts: dict[str, int] = {}
    for f in sorted((logs / "stats").glob("*.json")):
        for step in json.loads(f.read_text()):
            if step["name"].endswith(SplitSelect.name):
                for k, v in step.get("stats", {}).items():
                    v = v.get("total", 0) if isinstance(v, dict) else v
                    counts[k] = counts.get(k, 0) + int(v)
    return counts


def _check_where(plan, where: str, dataset: str) -> None:
    """``where`` parses and names a column the dataset has (else every row would be "dropped by where")."""
    try:
        col, _, _ = parse_where(where)
    except ValueError as e:
        raise UserError(f"--where: {e}") from None
    f = plan.files[0]
    if plan.format == "parquet":
        import pyarrow.parquet as pq

        columns = pq.read_schema(f).names
    else:
        import gzip

        with (gzip.open(f, "rt", encoding="utf-8") if f.endswith(".gz") else open(f, encoding="utf-8")) as fh:
            first = next((line for line in fh if line.strip()), "{}")
        try:
            columns = list(json.loads(first))
        except ValueError:
            return  # the reader names the bad line
    if col not in columns:
        close = difflib.get_close_matches(col, columns, n=1)
        raise UserError(f"--where {where!r}: {dataset} has no column {col!r} (columns: {', '.join(columns)})"
                        + (f"; did you mean {close[0]!r}?" if close else ""))


def _check_jsonl_text(plan, column: str) -> None:
    """Fail before any work when JSONL shards lack the text field (Parquet: plan_input checks the schema)."""
    if plan.format != "jsonl":
        return
    from pipeline.config import InputConfig
    from pipeline.io.readers import JsonlReader

    reader = JsonlReader(plan, InputConfig(source=plan.source, format="jsonl"))
    for pos, raw in reader.iter_file(plan.files[0]):
        if isinstance(raw, dict) and column not in raw:
            raise UserError(f"{plan.files[0]}:{pos}: no text field {column!r} (fields: {', '.join(list(raw)[:20])}); "
                            f"set the dataset's text_column or tokenize.text_column")
        break


def _fingerprint(files: list[str], **params) -> tuple[str, str, str]:
    """(whole, settings, data): the settings that shape the tokens, and the input files by content (a copy
    with the same size and mtime but other bytes is other data)."""
    from pipeline.io.fingerprint import digest, fingerprints

    settings = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    data = digest(fingerprints(files))
    return hashlib.sha256(f"{settings}|{data}".encode()).hexdigest()[:16], settings, data


def tokenize(cfg, dataset, output: str | Path, force: bool = False) -> dict:
    """Tokenize one dataset (a ``TrainDataset``) into ``output``; returns the manifest. Idempotent; one
    run per folder (the output lock)."""
    from pipeline.io.lock import output_lock

    with output_lock(Path(output), "tokenize"):
        return _tokenize(cfg, dataset, output, force)


def _empty(out: Path) -> None:
    """Everything in the folder but the lock this run holds."""
    from pipeline.io.lock import LOCK

    for p in out.iterdir() if out.exists() else []:
        if p.name != LOCK:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _tokenize(cfg, dataset, output: str | Path, force: bool = False) -> dict:
    from datatrove.pipeline.tokens import DocumentTokenizer

    from pipeline.config import InputConfig
    from pipeline.executor import build_executor
    from pipeline.io.readers import make_reader, plan_input
    from pipeline.io.writer import atomic_write_text
    from pipeline.logs import quiet_datatrove

    out = Path(output)
    t = cfg.tokenize
    column = dataset.text_column or t.text_column
    icfg = InputConfig(source=dataset.path, format="auto", limit=None, text_key=column, hf_name=None, streaming=False,
                       on_bad_record=cfg.input.on_bad_record, offline_fallback="none")
    plan = plan_input(icfg, "the dataset's text_column (tokenize --text-column) or tokenize.text_column")
    if plan.format not in ("parquet", "jsonl"):
        raise UserError(f"{dataset.path}: {plan.format} input; tokenize reads Parquet or JSONL shards (a stage's data/ folder)")
    _check_jsonl_text(plan, column)
    if dataset.where:
        _check_where(plan, dataset.where, dataset.path)
    tok_path = resolve_tokenizer(t.tokenizer, cfg.llm.model, cfg.llm.model_cache_dir)
    tok = load_tokenizer(tok_path)
    eos = eos_of(tok, t.eos_token, tok_path)
    fp, settings_fp, data_fp = _fingerprint(list(plan.files), tokenizer=tok_path, eos=eos, column=column,
                                            where=dataset.where, fraction=t.validation_fraction, shuffle=t.shuffle,
                                            seed=cfg.run.seed, drop_repeated=t.drop_repeated_ids)
    manifest_path = out / MANIFEST
    if manifest_path.is_file() and not force:
        m = json.loads(manifest_path.read_text())
        if m.get("fingerprint") == fp:
            return m
        if m.get("settings_fingerprint") == settings_fp:  # same settings, other data: the input was redone or edited
            raise StaleOutput(f"{dataset.path} changed since {out} was tokenized from it; its tokens are stale: rerun "
                              "with --force to tokenize the data as it is now")
        raise UserError(f"{out} holds tokens of other settings (fingerprint {m.get('fingerprint')} != {fp}); "
                        f"use another folder or --force")
    if force:
        _empty(out)
    marker = out / "_logs" / "fingerprint"
    if marker.is_file() and marker.read_text() != fp:  # an interrupted run of other settings: start over
        _empty(out)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(fp)
    tasks = cfg.executor.tasks if t.drop_repeated_ids else max(1, min(cfg.executor.tasks, len(plan.files)))
    for part in PARTS:
        if part == "val" and t.validation_fraction == 0:
            continue
        steps = [
            SplitSelect(make_reader(plan, icfg), part, t.validation_fraction, dataset.where, t.drop_repeated_ids),
            DocumentTokenizer(str(out / part), tokenizer_name_or_path=tok_path, eos_token=eos, seed=cfg.run.seed,
                              shuffle_documents=t.shuffle, batch_size=t.batch_size,
                              max_tokens_per_file=t.max_tokens_per_file, save_final_metadata=False),
        ]
        ex = build_executor(cfg.executor, steps, str(out / "_logs" / part), tasks=tasks, job_suffix=f"_tok_{part}")
        try:
            with quiet_datatrove():
                ex.run()
        except Exception as e:  # noqa: BLE001 - a failed task: point at its log
            raise StageFailed(f"tokenize {dataset.path} ({part}) failed: {e}; see {out}/_logs/{part}/logs") from None
        if cfg.executor.kind == "slurm":  # the manifest needs every task's files: wait for the jobs
            from pipeline.executor import wait_for_slurm

            wait_for_slurm(ex, out / "_logs" / part, tasks)
        done = len(list((out / "_logs" / part / "completions").glob("*")))
        if done < tasks:
            raise StageFailed(f"tokenize {dataset.path} ({part}): {tasks - done} of {tasks} tasks failed; "
                              f"see {out}/_logs/{part}/logs; rerun to resume")
    token_size = 4 if tok.get_vocab_size() > 65536 else 2
    files, tokens, docs = {}, {}, {}
    for part in PARTS:
        ds = sorted((out / part).glob("*.ds")) if (out / part).exists() else []
        files[part] = [str(p.relative_to(out)) for p in ds]
        tokens[part] = sum(p.stat().st_size for p in ds) // token_size
        docs[part] = sum((p.with_name(p.name + ".index")).stat().st_size // 8 for p in ds)
    # the books: per part, every document read went to this part, the other one, or a counted drop; and
    # the documents in the token files are the ones this part passed
    books = {}
    for part in PARTS:
        if part == "val" and t.validation_fraction == 0:
            continue
        c = _split_counts(out / "_logs" / part)
        dropped = {k.removeprefix("dropped_"): v for k, v in c.items() if k.startswith("dropped_")}
        passed = c.get(f"docs_{part}", 0)
        balanced = c.get("read", 0) == passed + c.get("other_split", 0) + sum(dropped.values()) and passed == docs[part]
        books[part] = {"read": c.get("read", 0), "tokenized": docs[part], "other_split": c.get("other_split", 0),
                       "dropped": dropped, "balanced": balanced}
        if not balanced:
            raise StageFailed(f"tokenize {dataset.path} ({part}): the books do not balance ({books[part]}); no manifest "
                              f"is written (this is a bug: please report it with {out})")
    if tokens["train"] == 0:
        raise UserError(f"{dataset.path}: no training tokens (0 documents passed"
                        f"{' where ' + repr(dataset.where) if dataset.where else ''})")
    manifest = {
        "source": dataset.path, "text_column": column, "where": dataset.where, "tokenizer": tok_path, "eos_token": eos,
        "eos_id": tok.token_to_id(eos), "vocab_size": tok.get_vocab_size(), "token_size": token_size,
        "dtype": "uint32" if token_size == 4 else "uint16", "validation_fraction": t.validation_fraction,
        "files": files, "tokens": tokens, "documents": docs, "books": books, "fingerprint": fp,
        "settings_fingerprint": settings_fp, "data_fingerprint": data_fp,
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    return manifest


def main(cfg, force: bool = False, progress: bool = True, text_column: str | None = None, where: str | None = None) -> dict:


    return tokenize(cfg, TrainDataset(path=cfg.input.source, text_column=text_column, where=where), cfg.run.output,
                    force=force)


def _dropped_line(m: dict) -> list[str]:
    """What was read and not tokenized, by reason (a repeated id, an empty text, --where); each part reads
    every document and drops the same ones before the split, so the train part's count is the count."""
    dropped = {k: v for k, v in ((m.get("books") or {}).get("train", {}).get("dropped") or {}).items() if v}
    if not dropped:
        return []
    return ["tokenize: not tokenized: " + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in dropped.items())]


def _plan(run) -> list:
    from pipeline.stages import Call

    return [Call(folder, run.out / "tokens" / name) for name, folder in run.subsets().items()]


STAGE = Stage(
    settings={"tokenize": TokenizeConfig},
    name="tokenize", help="Parquet/JSONL shards -> packed token shards (uint16/uint32 + document index)",
    description="Tokenize --input with tokenize.tokenizer (default: the generator's, SmolLM2), append an EOS to "
    "every document, hold out tokenize.validation_fraction of the documents by a hash of their id, and write "
    "datatrove token files to OUTPUT/train and OUTPUT/val with OUTPUT/tokens.json.",
    main=main, input_help="Parquet/JSONL file or folder", output_help="the token folder", progress=False,
    force_help="tokenize again into --output", needs=("input", "output"),
    required="tokenize needs --input (Parquet/JSONL shards) and --output (the token folder)",
    summary=lambda cfg, m: [f"tokenize: {m['documents']['train']:,} documents, {m['tokens']['train']:,} tokens for training, "
                            f"{m['tokens']['val']:,} held out ({m['dtype']}, EOS {m['eos_token']!r}); wrote {cfg.run.output}",
                            *_dropped_line(m)],
    options=(Option(("--text-column",), "the text column (default tokenize.text_column)"),
             Option(("--where",), 'keep rows matching "column OP value", e.g. "score >= 3"')),
    plan=_plan, folder="tokens", markers=("*/tokens.json",),
)
