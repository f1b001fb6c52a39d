"""In-process batched generation with transformers: the embedded CPU default.

Requests are grouped by sampling parameters, sorted by prompt length (longest first, so padding
stays small and an out-of-memory shows up in the first batch) and cut into batches capped by
``batch_size`` and ``max_batch_tokens``; prompts are left-padded and rendered with the model's chat
template. Choice-constrained requests decode through a token trie of the choices
(``prefix_allowed_tokens_fn``); JSON schemas rely on the parser. Seeds: a batch is seeded with its
first request's seed, so runs repeat exactly for the same batching.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace

from pipeline.errors import UserError
from pipeline.llm.engine import Engine, TokenizerMixin
from pipeline.llm.models import resolve_model
from pipeline.llm.types import Output, Request, Result


class _Penalties:
    """OpenAI's frequency and presence penalties over the generated tokens (as vLLM applies them)."""

    def __init__(self, prompt_len: int, frequency: float, presence: float):
        self.prompt_len, self.frequency, self.presence = prompt_len, frequency, presence

    def __call__(self, input_ids, scores):
        import torch

        gen = input_ids[:, self.prompt_len:]
        if gen.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, gen, torch.ones_like(gen, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


def linear_weights_input_major(model) -> None:
    """Store each fp32 ``nn.Linear`` weight as a view of its [in, out] transpose (same values, same module).

    ``F.linear`` then reaches MKL as ``x @ W`` on a row-major W instead of ``x @ W.T``, and on a CPU that
    runs the few-row products of batched decoding 1.4-2.4x faster (576x1536 at 6-12 rows; the 49152-row
    lm_head 1.5-2x) and prefill's long ones 1.0-1.1x (bench/RESULTS.md). Tied weights stay tied (the
    Parameter object is kept; an embedding lookup reads the strided view without a copy). bf16 gains
    nothing from it and is left as it is."""
    import torch

    for m in model.modules():
        w = getattr(m, "weight", None)
        if isinstance(m, torch.nn.Linear) and w is not None and w.dtype == torch.float32 and w.is_contiguous():
            w.data = w.data.t().contiguous().t()


class TransformersEngine(TokenizerMixin, Engine):
    name = "transformers"

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tc = self.cfg.transformers
        path = resolve_model(self.cfg.model, self.cfg.model_cache_dir)
        device = tc.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.cfg.dtype
        if dtype == "auto":  # fp32 on a CPU even with native bf16: bf16 kept fewer rows there (bench/RESULTS.md)
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            kwargs = {"dtype": getattr(torch, dtype)}
            if tc.attn_implementation:
                kwargs["attn_implementation"] = tc.attn_implementation
            self.model = AutoModelForCausalLM.from_pretrained(path, **kwargs).to(device).eval()
            if device == "cpu":
                linear_weights_input_major(self.model)
        except OSError as e:
            raise UserError(f"llm.model {self.cfg.model!r}: cannot load it ({str(e).splitlines()[0]})") from None
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not self.tokenizer.chat_template:
            raise UserError(f"llm.model {self.cfg.model!r} has no chat template; use an instruct/chat model")
        self.device, self.dtype = device, dtype
        ctx = getattr(self.model.config, "max_position_embeddings", None)
        self.max_model_len = min(self.max_model_len or ctx or 2048, ctx or 10**9)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids.discard(None)
        self.model_name = self.cfg.model

    def _identity(self) -> str:
        # a bf16 reply is not the fp32 reply: the request cache keys on the weights and the dtype they ran in
        return f"{super()._identity()}|{self.dtype}"

    # --------------------------------------------------------------- batching
    def _batches(self, reqs: list[Request], lengths: list[int]):
        order = sorted(range(len(reqs)), key=lambda i: -lengths[i])
        tc = self.cfg.transformers
        batch: list[int] = []
        for i in order:
            s = reqs[i].sampling
            longest = lengths[batch[0]] if batch else lengths[i]
            rows = (len(batch) + 1) * s.n
            if batch and (len(batch) >= tc.batch_size or rows * (longest + s.max_tokens) > tc.max_batch_tokens):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def _run(self, requests: list[Request], prompt_tokens: list[int | None]) -> list[Result]:
        out: list[Result | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            key = (replace(r.sampling, seed=None), repr(r.response_format) if (r.response_format or {}).get("type") == "choice" else None)
            groups[key].append(i)
        for (_, _), idx in groups.items():
            sub = [requests[i] for i in idx]
            texts = [self.render(r.messages) for r in sub]
            enc = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
            for b in self._batches(sub, [len(e) for e in enc]):
                got = self._generate([sub[k] for k in b], [enc[k] for k in b])
                for j, res in zip(b, got):
                    out[idx[j]] = res
                self.answered(got)  # the progress line moves with each sub-batch
        return out  # type: ignore[return-value]

    def _choice_fn(self, choices: list[str], prompt_len: int):
        seqs = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        eos = sorted(self.eos_ids)

        def allowed(_batch_id, input_ids):
            gen = input_ids[prompt_len:].tolist()
            nxt = {s[len(gen)] for s in seqs if len(s) > len(gen) and s[: len(gen)] == gen}
            if any(s == gen for s in seqs):
                nxt.update(eos)
            return sorted(nxt) or eos

        return allowed, max(len(s) for s in seqs) + 1

    def _generate(self, reqs: list[Request], ids: list[list[int]]) -> list[Result]:
        import torch

        s = reqs[0].sampling
        pad = self.tokenizer.pad_token_id
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=self.device)
        attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device)
        kwargs = dict(max_new_tokens=s.max_tokens, num_return_sequences=s.n, pad_token_id=pad,
                      repetition_penalty=s.repetition_penalty)
        if s.min_tokens:
            kwargs["min_new_tokens"] = s.min_tokens
        if s.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = s.no_repeat_ngram_size
        if s.frequency_penalty or s.presence_penalty:  # transformers has no such argument: a logits processor
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([_Penalties(width, s.frequency_penalty, s.presence_penalty)])
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k if s.top_k > 0 else None)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if s.stop:
            kwargs.update(stop_strings=list(s.stop), tokenizer=self.tokenizer)
        fmt = reqs[0].response_format
        if fmt and fmt.get("type") == "choice":
            fn, max_new = self._choice_fn(fmt["choices"], width)
            kwargs.update(prefix_allowed_tokens_fn=fn, max_new_tokens=min(max_new, s.max_tokens))
        if self.device == "cpu":
            # a preallocated KV cache: the growing one copies every layer's cache at each step (torch.cat), which
            # at 8-16 rows of 500-1000 tokens cost more than the model's matmuls (bench/RESULTS.md). Not on a
            # GPU: there transformers compiles the forward for a static cache, once per batch shape
            kwargs["cache_implementation"] = "static"
        if s.seed is not None:
            torch.manual_seed(s.seed)
        t0 = time.monotonic()
        with torch.inference_mode():
            seqs = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        latency = time.monotonic() - t0
        gen = seqs[:, width:].tolist()
        results = []
        for r_i, req in enumerate(reqs):
            outputs = []
            for k in range(s.n):
                toks = gen[r_i * s.n + k]
                cut = next((p for p, t in enumerate(toks) if t in self.eos_ids), None)
                body = toks if cut is None else toks[:cut]
                text = self.tokenizer.decode(body, skip_special_tokens=True)
                finish = "stop" if cut is not None else "length"
                for stop in s.stop:
                    pos = text.find(stop)
                    if pos >= 0:
                        text, finish = text[:pos], "stop"
                n_tok = len(body) + (1 if cut is not None else 0)
                outputs.append(Output(text=text, finish_reason=finish, completion_tokens=n_tok))
            results.append(Result(req.id, outputs, len(ids[r_i]), self.name, self.model_name, latency_s=latency))
        return results
