"""One engine interface over every backend.

``Engine.generate(requests)`` returns one ``Result`` per request, in order. Around the backend's own
``_run`` it does what every backend needs the same way: empty prompts, the context-window policy
(truncate / skip / error), the request cache (hits never reach the backend; answers are committed
as soon as a chunk returns), structured-output parsing, and metrics.
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

from pipeline.errors import UserError
from pipeline.llm import structured
from pipeline.llm.cache import RequestCache
from pipeline.llm.config import LLMConfig
from pipeline.llm.metrics import Metrics
from pipeline.llm.types import Message, Request, Result, Sampling
from pipeline.logs import quiet_hf


def sampling_for(cfg: LLMConfig, request_id: str, run_seed: int, **overrides) -> Sampling:
    """The configured sampling, with a per-request seed derived from the run seed and the request id
    when none is set, so that a rerun (or another backend) samples the same way."""
    s = cfg.sampling.model_dump()
    s.update(overrides)
    if s.get("seed") is None:
        s["seed"] = (run_seed * 1_000_003 + zlib.crc32(request_id.encode())) % 2**31
    s["stop"] = tuple(s.get("stop") or ())
    return Sampling(**s)


class PartialFailure(Exception):
    """Raised by a backend when some requests of a chunk completed before a fatal error: the engine
    caches the completed ones, then re-raises the error."""

    def __init__(self, results: list, error: BaseException):
        super().__init__(str(error))
        self.results, self.error = results, error


class Engine:
    """Base class; a backend implements ``_load``, ``_run`` and optionally ``count_tokens``/``truncate``."""

    name = "base"

    def __init__(self, cfg: LLMConfig, cache_path: str | Path | None = None, metrics_path: str | Path | None = None):
        self.cfg = cfg
        self.model_name = cfg.model  # the cache key uses the configured name, not a local path
        self.cache = RequestCache(cache_path) if (cfg.cache.enabled and cache_path) else None
        self.metrics_path = Path(metrics_path) if metrics_path else None
        gpus = cfg.gpus if cfg.gpus is not None else self._default_gpus()
        self.metrics = Metrics(self.name, cfg.model, cfg.cost_per_gpu_hour, gpus)
        self.max_model_len: int | None = cfg.max_model_len
        # answers as they come (a backend reports each sub-batch or request): what the progress line shows
        self.progress = {"asked": 0, "answered": 0, "cached": 0, "completion_tokens": 0, "since": time.time()}
        self._progress_written = 0.0
        t0 = time.monotonic()
        quiet_hf()
        self._load()
        self.metrics.load_s = time.monotonic() - t0
        # the request cache keys on the model's identity (its weights), rows keep the configured name
        self.model_identity = self._identity()

    def answered(self, results: list) -> None:
        """A backend hook: these results just came back (a sub-batch, one request). Counted for the
        progress line, written at most once a second, so a batch log moves inside a long engine call."""
        self.progress["answered"] += len(results)
        self.progress["completion_tokens"] += sum(o.completion_tokens for r in results if r for o in r.outputs)
        self._write_progress()

    def _write_progress(self, force: bool = False) -> None:
        if not self.metrics_path or (not force and time.monotonic() - self._progress_written < 1.0):
            return
        from pipeline.io.writer import atomic_write_text

        self._progress_written = time.monotonic()
        try:
            path = self.metrics_path.parent.parent / "llm-progress" / self.metrics_path.name
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(self.progress))
        except OSError:
            pass

    # ------------------------------------------------------------------ backend hooks
    def _identity(self) -> str:
        from pipeline.llm.models import model_identity

        return model_identity(self.cfg.model, self.cfg.model_cache_dir)

    def _default_gpus(self) -> int:
        return 1

    def _load(self) -> None:
        raise NotImplementedError

    def _run(self, requests: list[Request], prompt_tokens: list[int | None]) -> list[Result]:
        raise NotImplementedError

    def count_tokens(self, messages: list[Message]) -> int | None:
        """Prompt length in tokens with the chat template applied; None when unknown (remote server)."""
        return None

    def truncate(self, messages: list[Message], max_prompt_tokens: int) -> list[Message] | None:
        """Shorten the longest message so the prompt fits; None when the backend has no tokenizer."""
        return None

    def close(self) -> None:
        if self.cache:
            self.cache.close()

    # ------------------------------------------------------------------ the common path
    def _failure(self, req: Request, kind: str, detail: str, prompt_tokens: int = 0) -> Result:
        return Result(req.id, [], prompt_tokens, self.name, self.model_name, error=kind, error_detail=detail)

    def _fit(self, req: Request) -> tuple[Request | None, Result | None, int | None, bool]:
        """Apply the context-window policy: (request to send, failure, prompt tokens, truncated)."""
        n = self.count_tokens(req.messages)
        if n is None or not self.max_model_len:
            return req, None, n, False
        budget = self.max_model_len - req.sampling.max_tokens
        if n <= budget:
            return req, None, n, False
        what = (f"request {req.id!r}: the prompt has {n} tokens; the context window is {self.max_model_len} "
                f"tokens and max_tokens is {req.sampling.max_tokens}, leaving {budget} for the prompt")
        policy = self.cfg.on_long_prompt
        if policy == "error":
            raise UserError(f"{what}; set llm.on_long_prompt to truncate or skip, or lower llm.sampling.max_tokens")
        if policy == "truncate" and budget > 0:
            msgs = self.truncate(req.messages, budget)
            if msgs is not None:
                fitted = Request(req.id, msgs, req.sampling, req.response_format)
                return fitted, None, self.count_tokens(msgs), True
        return None, self._failure(req, "prompt_too_long", what, n), n, False

    def generate(self, requests: list[Request]) -> list[Result]:
        if not requests:
            return []
        results: list[Result | None] = [None] * len(requests)
        keys = [r.cache_key(self.model_identity) for r in requests]
        hits = self.cache.get_many(sorted(set(keys))) if self.cache else {}
        todo: list[int] = []
        for i, req in enumerate(requests):
            if not any((m.get("content") or "").strip() for m in req.messages if m.get("role") != "system"):
                results[i] = self._failure(req, "empty_prompt", f"request {req.id!r} has no user content")
            elif keys[i] in hits:
                hit = hits[keys[i]]
                hit.request_id, hit.cached, hit.latency_s = req.id, True, 0.0
                results[i] = hit
            else:
                todo.append(i)
        self.progress["asked"] += len(requests)
        done_now = len(requests) - len(todo)  # cached or refused at once
        self.progress["answered"] += done_now
        self.progress["cached"] += sum(1 for r in results if r is not None and r.cached)
        self._write_progress(force=True)
        send: list[Request] = []
        send_idx: list[int] = []
        send_tokens: list[int | None] = []
        truncated: set[int] = set()
        for i in todo:
            fitted, failure, n, was_cut = self._fit(requests[i])
            if failure is not None:
                results[i] = failure
                self.progress["answered"] += 1
                continue
            send.append(fitted)
            send_idx.append(i)
            send_tokens.append(n)
            if was_cut:
                truncated.add(i)
        if send:
            t0 = time.monotonic()
            try:
                produced = self._run(send, send_tokens)
            except PartialFailure as pf:
                done = []
                for i, req, r in zip(send_idx, send, pf.results):
                    if r is not None:
                        if req.response_format and r.error is None:
                            self._parse(req, r)
                        done.append((keys[i], self.model_name, r))
                if self.cache and done:
                    self.cache.put_many(done)
                raise pf.error from None
            elapsed = time.monotonic() - t0
            # whatever the backend did not report as it went is counted now: answered == asked after a call
            self.progress["answered"] = self.progress["asked"]
            self.progress["completion_tokens"] = self.metrics.completion_tokens + sum(
                o.completion_tokens for r in produced if r for o in r.outputs)
            self._write_progress(force=True)
            for i, req, res in zip(send_idx, send, produced):
                res.truncated = i in truncated
                if req.response_format and res.error is None:
                    self._parse(req, res)
                results[i] = res
            self.metrics.add_batch(produced, elapsed)
            if self.cache:
                self.cache.put_many([(keys[i], self.model_name, results[i]) for i in send_idx])
        for r in results:
            self.metrics.add_result(r)
        if self.metrics_path:
            self.metrics.write(self.metrics_path)
        return results  # type: ignore[return-value]

    @staticmethod
    def _parse(req: Request, res: Result) -> None:
        problems = []
        for o in res.outputs:
            try:
                o.parsed = structured.parse(o.text, req.response_format)
            except structured.Unparsable as e:
                problems.append(str(e))
        if problems or not res.outputs:
            res.error, res.error_detail = "unparsable", "; ".join(problems) or "no output"


def make_engine(cfg: LLMConfig, cache_path: str | Path | None = None, metrics_path: str | Path | None = None) -> Engine:
    """The backend named by ``cfg.backend``; heavy imports happen only for the one chosen."""
    if cfg.backend == "transformers":
        from pipeline.llm.hf import TransformersEngine as cls
    elif cfg.backend == "openai":
        from pipeline.llm.openai_api import OpenAIEngine as cls
    elif cfg.backend == "vllm":
        from pipeline.llm.vllm_engine import VLLMEngine as cls
    else:  # pragma: no cover - the config validates it
        raise UserError(f"unknown llm.backend {cfg.backend!r}")
    return cls(cfg, cache_path, metrics_path)


_WARNED: set = set()


def warn_once(backend: str, setting: str) -> None:
    """A sampling setting this backend cannot apply: said once per process, not per request."""
    if (backend, setting) not in _WARNED:
        _WARNED.add((backend, setting))
        import warnings

        warnings.warn(f"llm.sampling.{setting} is not supported by the {backend} backend and is ignored there; "
                      "repetition_penalty, frequency_penalty and presence_penalty work in every backend", stacklevel=2)


def continues(messages: list[Message]) -> bool:
    """True when the request ends with an assistant message, which the model is to continue."""
    return bool(messages) and messages[-1].get("role") == "assistant"


class TokenizerMixin:
    """Prompt length and truncation with the model's own tokenizer and chat template."""

    tokenizer = None

    def render(self, messages: list[Message]) -> str:
        # a final assistant message is a prefill: the model continues it (rephrase prefixes)
        cont = continues(messages)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not cont,
                                                  continue_final_message=cont)

    def count_tokens(self, messages: list[Message]) -> int | None:
        if self.tokenizer is None:
            return None
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def truncate(self, messages: list[Message], max_prompt_tokens: int) -> list[Message] | None:
        """Cut the end of the longest message (usually the document) until the prompt fits."""
        if self.tokenizer is None:
            return None
        msgs = [dict(m) for m in messages]
        for _ in range(4):  # re-tokenising the rendered prompt can shift a few tokens; converge
            excess = self.count_tokens(msgs) - max_prompt_tokens
            if excess <= 0:
                return msgs
            longest = max(range(len(msgs)), key=lambda k: len(msgs[k].get("content") or ""))
            ids = self.tokenizer(msgs[longest]["content"], add_special_tokens=False)["input_ids"]
            keep = len(ids) - excess - 2
            if keep <= 0:
                return None
            msgs[longest]["content"] = self.tokenizer.decode(ids[:keep], skip_special_tokens=True)
        return msgs if self.count_tokens(msgs) <= max_prompt_tokens else None
