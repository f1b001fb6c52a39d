"""What goes into an engine and what comes out, the same for every backend."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters; validated by ``pipeline.config.SamplingConfig`` before they get here."""

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = -1  # -1: off
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    repetition_penalty: float = 1.0  # >1 makes every token already in the context less likely (all backends)
    no_repeat_ngram_size: int = 0  # transformers: no word-piece n-gram twice (0: off; vLLM/OpenAI lack it)
    frequency_penalty: float = 0.0  # OpenAI semantics: minus this x the token's count so far
    presence_penalty: float = 0.0  # minus this once a token has appeared
    min_tokens: int = 0  # no end-of-sequence before this many tokens (benchmarks: equal lengths)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class Request:
    """One chat request. ``response_format`` asks for structured output:
    ``{"type": "choice", "choices": [...]}`` or ``{"type": "json", "schema": {...}}``."""

    id: str
    messages: list[Message]
    sampling: Sampling = field(default_factory=Sampling)
    response_format: dict | None = None

    def cache_key(self, model: str) -> str:
        """Hash of (model, sampling, messages, response format): equal requests share one answer."""
        blob = json.dumps(
            {"model": model, "sampling": self.sampling.as_dict(), "messages": self.messages,
             "response_format": self.response_format},
            sort_keys=True, ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Output:
    text: str
    finish_reason: str  # "stop" | "length" | "error"
    completion_tokens: int
    parsed: Any = None  # the structured value when a response_format was asked for and parsed


@dataclass
class Result:
    """The answer to one request. ``error`` is set (and ``outputs`` may be empty) when it failed;
    kinds: prompt_too_long, empty_prompt, unparsable, server_error, context_length, timeout."""

    request_id: str
    outputs: list[Output]
    prompt_tokens: int
    engine: str
    model: str
    latency_s: float = 0.0
    cached: bool = False
    truncated: bool = False  # the prompt was cut to fit the context window
    error: str | None = None
    error_detail: str | None = None

    @property
    def text(self) -> str:
        return self.outputs[0].text if self.outputs else ""

    @property
    def completion_tokens(self) -> int:
        return sum(o.completion_tokens for o in self.outputs)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str) -> "Result":
        d = json.loads(raw)
        d["outputs"] = [Output(**o) for o in d["outputs"]]
        return cls(**d)
