"""Any OpenAI-compatible chat endpoint: vllm serve, SGLang, TGI, transformers serve, hosted APIs.

The official ``openai`` client does the transport: retries with exponential back-off on
connection errors, timeouts, 408/409/429 and 5xx (``max_retries``). Concurrency is bounded by a
semaphore. The API key comes from the environment variable named by ``llm.openai.api_key_env`` and
is never logged or written. At start the server is asked for its models, so that a server that is
down, a wrong key or an unknown model is one clear error naming the URL instead of a run of failures.
"""

from __future__ import annotations

import asyncio
import os
import time

from pipeline.errors import UserError
from pipeline.llm.engine import (
    Engine,
    PartialFailure,
    TokenizerMixin,
    continues,
    warn_once,
)
from pipeline.llm.types import Output, Request, Result


class OpenAIEngine(TokenizerMixin, Engine):
    name = "openai"

    def _load(self) -> None:
        import httpx

        oc = self.cfg.openai
        self.base_url = oc.base_url.rstrip("/")
        self.served = oc.served_model or self.cfg.model
        self.api_key = os.environ.get(oc.api_key_env) or "EMPTY"  # local servers take any key
        headers = {"Authorization": f"Bearer {self.api_key}"}
        try:
            resp = httpx.get(f"{self.base_url}/models", headers=headers, timeout=oc.connect_timeout_s)
        except httpx.HTTPError as e:
            raise UserError(
                f"cannot reach the OpenAI-compatible server at {self.base_url} ({type(e).__name__}: {e}); "
                "start it (e.g. `vllm serve MODEL`) or set llm.openai.base_url"
            ) from None
        if resp.status_code in (401, 403):
            raise UserError(f"{self.base_url} refused the API key (HTTP {resp.status_code}); "
                            f"set the environment variable {oc.api_key_env}")
        if oc.check_model and resp.status_code == 200:
            try:
                served = [m["id"] for m in resp.json().get("data", [])]
            except (ValueError, AttributeError, KeyError, TypeError):
                served = []
            if served and self.served not in served:
                raise UserError(
                    f"the server at {self.base_url} does not serve model {self.served!r} "
                    f"(it serves: {', '.join(served[:10])}); set llm.openai.served_model or llm.model"
                )
        self.tokenizer = self._local_tokenizer()

    def _identity(self) -> str:
        # a remote server's weights cannot be seen from here: its address joins the served name
        return f"{self.served}@{self.base_url}"

    def _local_tokenizer(self):
        """The model's tokenizer when it is available locally, for the context-window policy;
        without it, an over-long prompt is the server's to reject (a ``context_length`` failure),
        and the run says so once. A tokenizer named in llm.openai.tokenizer that cannot load is an error."""
        from transformers import AutoTokenizer

        from pipeline.llm.models import resolve_model

        explicit = self.cfg.openai.tokenizer
        try:
            path = resolve_model(explicit or self.cfg.model, self.cfg.model_cache_dir)
            tok = AutoTokenizer.from_pretrained(path, local_files_only=not explicit)
            if not self.max_model_len:
                from transformers import AutoConfig

                conf = AutoConfig.from_pretrained(path, local_files_only=not explicit)
                self.max_model_len = getattr(conf, "max_position_embeddings", None)
        except (OSError, ValueError, UserError) as e:  # not on this machine (a hosted model): the server decides
            if explicit:
                raise UserError(f"llm.openai.tokenizer {explicit!r}: cannot load it ({str(e).splitlines()[0]})") from None
            import warnings

            warnings.warn(f"no local tokenizer for {self.cfg.model!r}: prompts are not checked against the context "
                          "window here (the server rejects over-long ones); set llm.openai.tokenizer to check them",
                          stacklevel=2)
            return None
        return tok if tok.chat_template else None

    def _params(self, req: Request) -> dict:
        s = req.sampling
        kw: dict = dict(model=self.served, messages=req.messages, temperature=s.temperature, top_p=s.top_p,
                        max_tokens=s.max_tokens, n=s.n, seed=s.seed)
        if s.stop:
            kw["stop"] = list(s.stop)
        if s.frequency_penalty:
            kw["frequency_penalty"] = s.frequency_penalty
        if s.presence_penalty:
            kw["presence_penalty"] = s.presence_penalty
        if s.no_repeat_ngram_size:
            warn_once("openai", "no_repeat_ngram_size")
        extra: dict = {}
        if self.cfg.openai.extra_params:
            if s.top_k > 0:
                extra["top_k"] = s.top_k
            if s.repetition_penalty != 1.0:
                extra["repetition_penalty"] = s.repetition_penalty
            if s.min_tokens:
                extra["min_tokens"] = s.min_tokens
        fmt = req.response_format
        if fmt and fmt["type"] == "json":
            kw["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": fmt["schema"]}}
        elif fmt and fmt["type"] == "choice" and self.cfg.openai.extra_params:
            extra["guided_choice"] = fmt["choices"]  # vLLM/SGLang; other servers ignore it and the parser decides
        if continues(req.messages) and self.cfg.openai.extra_params:
            # vLLM/SGLang: continue the final assistant message (a prefill) instead of starting a new turn
            extra.update(continue_final_message=True, add_generation_prompt=False)
        if extra:
            kw["extra_body"] = extra
        return kw

    async def _one(self, client, sem, req: Request, prompt_tokens: int | None) -> Result:
        import openai

        async with sem:
            t0 = time.monotonic()
            try:
                resp = await client.chat.completions.create(**self._params(req))
            except openai.NotFoundError as e:
                raise UserError(f"{self.base_url}: model {self.served!r} not found ({e.message})") from None
            except openai.AuthenticationError:
                raise UserError(f"{self.base_url} refused the API key; set {self.cfg.openai.api_key_env}") from None
            except openai.UnprocessableEntityError as e:  # the server rejects a parameter: same for every request
                raise UserError(f"{self.base_url} rejected the request ({str(e.message)[:300]}); servers that do "
                                "not take top_k/repetition_penalty/guided_choice need llm.openai.extra_params=false") from None
            except openai.BadRequestError as e:
                msg = str(e.message)
                kind = "context_length" if ("context" in msg.lower() or "too long" in msg.lower()) else "bad_request"
                return self._failure(req, kind, f"{self.base_url}: {msg[:500]}", prompt_tokens or 0)
            except openai.APITimeoutError:
                return self._failure(req, "timeout", f"{self.base_url}: no answer in {self.cfg.openai.timeout_s}s "
                                     f"after {self.cfg.openai.max_retries} retries", prompt_tokens or 0)
            except openai.APIConnectionError as e:
                raise ServerGone(f"the server at {self.base_url} stopped answering ({e}); completed requests are "
                                 "cached: rerun to resume") from None
            except openai.APIStatusError as e:
                return self._failure(req, "server_error", f"{self.base_url}: HTTP {e.status_code} after "
                                     f"{self.cfg.openai.max_retries} retries: {str(e.message)[:300]}", prompt_tokens or 0)
            latency = time.monotonic() - t0
        usage = resp.usage
        outs = []
        for ch in sorted(resp.choices, key=lambda c: c.index):
            outs.append(Output(text=ch.message.content or "", finish_reason=ch.finish_reason or "stop",
                               completion_tokens=0))
        total_out = usage.completion_tokens if usage else 0
        if outs:  # usage is per response: spread it over the choices
            for o in outs:
                o.completion_tokens = total_out // len(outs)
            outs[0].completion_tokens += total_out - sum(o.completion_tokens for o in outs)
        return Result(req.id, outs, usage.prompt_tokens if usage else (prompt_tokens or 0), self.name,
                      self.cfg.model, latency_s=latency)

    async def _all(self, requests: list[Request], prompt_tokens: list[int | None]) -> list[Result]:
        import openai

        oc = self.cfg.openai
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=oc.max_retries,
                                    timeout=oc.timeout_s)
        sem = asyncio.Semaphore(oc.concurrency)
        try:
            async def tracked(req, n):  # the progress line moves with each answer
                res = await self._one(client, sem, req, n)
                self.answered([res])
                return res

            got = await asyncio.gather(*(tracked(r, n) for r, n in zip(requests, prompt_tokens)), return_exceptions=True)
        finally:
            await client.close()
        errors = [g for g in got if isinstance(g, BaseException)]
        if errors:  # keep what did complete (cached by the engine), then fail
            raise PartialFailure([None if isinstance(g, BaseException) else g for g in got], errors[0])
        return list(got)

    def _run(self, requests: list[Request], prompt_tokens: list[int | None]) -> list[Result]:
        return asyncio.run(self._all(requests, prompt_tokens))


class ServerGone(RuntimeError):
    """The endpoint went away mid-run: fail the stage (completed requests are cached) rather than
    turning every remaining request into a failure record."""
