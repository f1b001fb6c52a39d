"""Generation benchmark: prompt construction, generation through the stage vs the raw engine, memory.

1. Prompt construction: PromptBuilder (weighted audience x format draw, persona and topic draws,
   sandboxed Jinja2 render, hash) plus the seed extract, over real pages; prompts/s (goal >= 5,000).
2. Generation: the real ``generate`` stage (topics and personas off: their cost is reported by the
   stage separately) on N real seeds, then the same prompts (read back from its output) through
   plain transformers ``model.generate`` in this process; every request generates exactly
   max_tokens tokens on both sides; output tok/s and the ratio (goal >= 0.95).
3. Peak RSS of the whole ``synthweb generate`` process tree at 1x and 4x the seeds (topic sample
   fixed): memory should not grow with the number of seeds beyond the embedding sample.
Usage: python bench/bench_generate.py [--seeds 48] [--max-tokens 96]
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
OUT = REPO / "bench" / "out" / "generate"


def write_seeds(n: int, name: str) -> Path:
    from tests.conftest import LEGAL, real_pages

    if not LEGAL.exists():
        sys.exit(f"bench_generate: real pages not found at {LEGAL} (../shared/data is needed)")
    path = OUT / name
    path.write_text("".join(json.dumps(p) + "\n" for p in real_pages(n, 20000)))
    return path


def prompt_construction(pages: list[dict]) -> float:
    from pipeline.stages import load_config
    from pipeline.stages.generate import PromptBuilder, extract_of

    cfg = load_config()
    personas = [f"A person with interest number {i}." for i in range(500)]
    b = PromptBuilder(cfg, personas)
    n, t0 = 0, time.perf_counter()
    while n < 20000:
        for p in pages:
            b.build(f"{p['id']}-{n}", extract_of(p["text"], cfg.generate.seed_extract_chars), "Topic name")
            n += 1
    return n / (time.perf_counter() - t0)


def stage_generation(seeds: Path, max_tokens: int) -> tuple[dict, list[dict]]:
    import pyarrow.parquet as pq

    from pipeline.stages import generate, load_config
    from pipeline.stages.base import run_stage

    out = OUT / "stage"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(None, [
        f"input.source={seeds}", "input.limit=null", f"run.output={out}", "generate.num_prompts=null",
        "generate.topics.enabled=false", "generate.personas.enabled=false", f"generate.max_tokens={max_tokens}",
        f"llm.sampling.min_tokens={max_tokens}", "generate.min_tokens=0", "generate.strip_openers=false",
        "llm.chunk_size=512", "executor.tasks=1", "executor.workers=1",
    ])
    stats = run_stage("generate", cfg, generate.build, force=True, progress=False, printer=lambda *a: None)
    rows = [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f, columns=["id", "prompt"]).to_pylist()]
    return {"tokens": stats["llm"]["completion_tokens"], "seconds": stats["wall_time_s"] - stats["llm"]["load_s"],
            "cfg": cfg}, rows


def raw_generation(cfg, rows: list[dict], max_tokens: int) -> tuple[int, float]:
    import torch

    from pipeline.llm.engine import make_engine, sampling_for

    eng = make_engine(cfg.llm)
    tok, model = eng.tokenizer, eng.model
    bs = cfg.llm.transformers.batch_size
    total, t0 = 0, time.perf_counter()
    for i in range(0, len(rows), bs):
        batch = rows[i : i + bs]
        texts = [tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                         add_generation_prompt=True) for r in batch]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        s = sampling_for(cfg.llm, batch[0]["id"], cfg.run.seed, max_tokens=max_tokens)
        torch.manual_seed(s.seed)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=True,
                                 temperature=s.temperature, top_p=s.top_p, pad_token_id=tok.pad_token_id)
        total += out[:, enc["input_ids"].shape[1]:].numel()
    elapsed = time.perf_counter() - t0
    eng.close()
    return total, elapsed


def peak_memory(seeds: Path, label: str) -> tuple[float, float]:
    from bench.bench_seeds import measure

    out = OUT / f"mem-{label}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipeline.cli", "generate", "--input", str(seeds), "--output", str(out), "--no-progress",
           "--set", "input.limit=null", "--set", "generate.num_prompts=null", "--set", "generate.max_tokens=16",
           "--set", "generate.min_tokens=0", "--set", "generate.topics.sample_size=64",
           "--set", "generate.topics.max_clusters=6", "--set", "generate.personas.from_seeds=2",
           "--set", "generate.topics.min_rating=1", "--set", "executor.tasks=2", "--set", "executor.workers=2"]
    return measure(cmd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--mem-seeds", type=int, default=100)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    from tests.conftest import real_pages

    pps = prompt_construction(real_pages(200, 5000))
    seeds = write_seeds(args.seeds, "seeds.jsonl")
    stage, rows = stage_generation(seeds, args.max_tokens)
    raw_tokens, raw_s = raw_generation(stage.pop("cfg"), rows, args.max_tokens)
    raw_tps, st_tps = raw_tokens / raw_s, stage["tokens"] / stage["seconds"]
    print("generation benchmark (SmolLM2-135M-Instruct, transformers backend, CPU):")
    print(f"prompt construction: {pps:,.0f} prompts/s (goal >= 5,000)")
    print(f"generation, {len(rows)} prompts x {args.max_tokens} tokens:")
    print(f"  raw model.generate   {raw_tokens:>7} tokens {raw_s:>7.1f} s {raw_tps:>7.1f} tok/s")
    print(f"  generate stage       {stage['tokens']:>7} tokens {stage['seconds']:>7.1f} s {st_tps:>7.1f} tok/s")
    print(f"  ratio stage/raw: {st_tps / raw_tps:.2f} (goal >= 0.95)", flush=True)
    s1 = write_seeds(args.mem_seeds, "seeds-1x.jsonl")
    s4 = write_seeds(args.mem_seeds * 4, "seeds-4x.jsonl")
    w1, m1 = peak_memory(s1, "1x")
    w4, m4 = peak_memory(s4, "4x")
    print("peak RSS of `synthweb generate` (topics sample 64, 16 new tokens per prompt, 2 tasks):")
    print(f"  1x {args.mem_seeds:>5} seeds: {m1:>7.0f} MiB ({w1:.0f} s)")
    print(f"  4x {args.mem_seeds * 4:>5} seeds: {m4:>7.0f} MiB ({w4:.0f} s)   ratio 4x/1x {m4 / m1:.2f}")
    (OUT / "result.json").write_text(json.dumps({"prompts_per_s": pps, "raw_tok_s": raw_tps, "stage_tok_s": st_tps,
                                                 "ratio": st_tps / raw_tps, "rss_1x_mib": m1, "rss_4x_mib": m4}, indent=2))


if __name__ == "__main__":
    main()
