"""Quality-gate benchmark: which sampling settings give text that passes, and what the gate costs.

The same N prompts (the default prompt matrix over N real FineWeb seeds, no topic or persona) go
through the embedded model (SmolLM2-135M-Instruct, transformers, fp32) once per sampling setting.
Per setting it prints: the gate's pass rate on the raw replies, the pass rates of datatrove's
GopherRepetitionFilter and GopherQualityFilter alone at default parameters (on the text as kept,
i.e. after the gate's max_tokens trim), how many prompts yield a kept row, the share that hit
max_tokens, the failures by check, output tok/s — and the gate's own time as a share of the
generation's wall time (the goal is <= 5%). The defaults in configs/default.yaml were chosen here.

Usage: python bench/bench_gate.py [--prompts 24] [--max-tokens 512] [--settings NAME,NAME] [--show 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETTINGS = {
    # the defaults before the gate existed (the two teachers of configs/default.yaml)
    "t0.3": {"temperature": 0.3},
    "t1.0": {"temperature": 1.0},
    # repetition control
    "t0.6-rp1.2-nr4": {"temperature": 0.6, "top_p": 0.9, "repetition_penalty": 1.2, "no_repeat_ngram_size": 4},
    "t0.8-rp1.15-nr4": {"temperature": 0.8, "top_p": 0.9, "repetition_penalty": 1.15, "no_repeat_ngram_size": 4},
    "t0.7-rp1.1-fp0.3": {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1, "frequency_penalty": 0.3},
    "t0.4-rp1.3-nr3": {"temperature": 0.4, "top_p": 0.9, "repetition_penalty": 1.3, "no_repeat_ngram_size": 3},
}


def prompts(n: int, prompts_dir: str | None = None) -> list[tuple[str, str]]:
    from pipeline.config import load_config
    from pipeline.stages.generate import PromptBuilder, extract_of
    from tests.conftest import LEGAL, real_pages

    if not LEGAL.exists():
        sys.exit(f"bench_gate: real pages not found at {LEGAL} (../shared/data is needed)")
    cfg = load_config(None, [f"generate.prompts_dir={prompts_dir}"] if prompts_dir else [])
    b = PromptBuilder(cfg, [])
    return [(p["id"], b.build(p["id"], extract_of(p["text"], cfg.generate.seed_extract_chars), None)["prompt"])
            for p in real_pages(n, 20000)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=None, help="default: generate.max_tokens of the default config")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--show", type=int, default=0, help="print this many replies per setting")
    ap.add_argument("--prompts-dir", default=None, help="another prompts/ folder (a prompt variant)")
    args = ap.parse_args()

    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    from pipeline.config import load_config, merge_llm
    from pipeline.gate import QualityGate
    from pipeline.llm.engine import make_engine, sampling_for
    from pipeline.llm.types import Request

    cfg = load_config()
    max_tokens = args.max_tokens or cfg.generate.max_tokens
    items = prompts(args.prompts, args.prompts_dir)
    gate = QualityGate(cfg.quality_gate)
    rep, qual = GopherRepetitionFilter(), GopherQualityFilter()
    gate.check("A first sentence, so that the tokenizers and the language model load outside the timing. " * 3)
    llm = merge_llm(cfg.llm, {"cache": {"enabled": False}})
    engine = make_engine(llm)
    engine.generate([Request("warm", [{"role": "user", "content": "Hi"}], sampling_for(llm, "warm", 0, max_tokens=4))])
    print(f"{len(items)} prompts (default matrix over real FineWeb seeds), max_tokens {max_tokens}, "
          f"{cfg.llm.model} on {cfg.llm.backend}")
    head = (f"{'setting':<20}{'gate pass':>10}{'gopher rep':>11}{'gopher qual':>12}{'prompts kept':>13}"
            f"{'hit max':>8}{'trimmed':>8}{'tok/s':>7}{'gate %':>7}  failures by check")
    rows = []
    for name in args.settings.split(","):
        sampling = {**SETTINGS[name], "max_tokens": max_tokens}
        reqs = [Request(f"{pid}/{name}", [{"role": "user", "content": p}], sampling_for(merge_llm(llm, {"sampling": sampling}), pid, cfg.run.seed))
                for pid, p in items]
        t0 = time.perf_counter()
        results = engine.generate(reqs)
        gen_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        verdicts = [gate.check(r.text.strip(), echo_source=p, finish_reason=r.outputs[0].finish_reason)
                    for r, (_, p) in zip(results, items)]
        gate_s = time.perf_counter() - t1
        kept = [v.text for v in verdicts if v.passed]
        texts = [v.text for v in verdicts]
        ok_rep = sum(rep.filter(Document(text=t, id="x")) is True for t in texts if t)
        ok_qual = sum(qual.filter(Document(text=t, id="x")) is True for t in texts if t)
        fails = Counter(r for v in verdicts for r in v.reasons)
        toks = sum(r.completion_tokens for r in results)
        row = {"setting": name, "sampling": sampling, "gate_pass": len(kept) / len(items),
               "gopher_rep_pass": ok_rep / len(items), "gopher_quality_pass": ok_qual / len(items),
               "prompts_kept": len(kept), "hit_max_tokens": sum(v.metrics["hit_max_tokens"] for v in verdicts) / len(items),
               "trimmed": sum(v.trimmed for v in verdicts), "tok_s": toks / gen_s, "gate_share": gate_s / gen_s,
               "gate_ms_per_reply": 1000 * gate_s / len(items), "failures": dict(fails.most_common()),
               "replies": [{"reason": v.reason, "detail": v.detail(), "text": v.text[:400]} for v in verdicts]}
        rows.append(row)
        if len(rows) == 1:
            print(head)
        print(f"{name:<20}{row['gate_pass']:>10.0%}{row['gopher_rep_pass']:>11.0%}{row['gopher_quality_pass']:>12.0%}"
              f"{len(kept):>8}/{len(items):<4}{row['hit_max_tokens']:>8.0%}{row['trimmed']:>8}{row['tok_s']:>7.1f}"
              f"{row['gate_share']:>7.2%}  " + ", ".join(f"{k} {v}" for k, v in fails.most_common()), flush=True)
        for r, v in list(zip(results, verdicts))[: args.show]:
            print(f"--- {name}: {v.reason or 'pass'} {v.detail()}\n{r.text[:600]}\n")
    engine.close()
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gate.json").write_text(json.dumps(rows, indent=2))
    print(f"gate cost: {sum(r['gate_ms_per_reply'] for r in rows) / len(rows):.1f} ms per reply on average, "
          f"{max(r['gate_share'] for r in rows):.2%} of the generation's wall time at most (goal <= 5%)")


if __name__ == "__main__":
    main()
