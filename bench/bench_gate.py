"""Quality-gate benchmark: which prompt family, length and sampling give text that passes form AND
meaning, what the gate costs, and whether the 135M LLM judge agrees with the measurements.

Each combination (a prompt family of prompts/generate/matrix.yaml x a max_tokens x a sampling setting)
sends the same N real seeds (FineWeb by default, --seeds cc for Common Crawl pages; no topic or persona)
through the embedded model (SmolLM2-135M-Instruct, transformers, fp32). Per combination it prints the
share of replies passing the form checks, the share passing the meaning checks (faithfulness to the seed
extract, coherence), the share passing both (a kept row), the median faithfulness, how many kept replies
reach the levels real pages reach (faithfulness >= 0.30, coherence >= 0.25), output tok/s, and the gate's
own time as a share of the generation's wall time, split into form and meaning (the goal: meaning <= 10%).
The last two settings of --settings are then judged against each other per prompt by the LLM judge
(prompts/judge/pick.j2, the generator as judge) where both passed: its agreement with the pick of the
``measures`` judge (best faithfulness + coherence), against the 50% of a coin.
The defaults in configs/default.yaml were chosen here.

Usage: python bench/bench_gate.py [--prompts 24] [--families summary_explained,rewrite,...]
       [--max-tokens 256,384] [--settings NAME,NAME] [--seeds fineweb|cc] [--show 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETTINGS = {
    # no repetition control: loops (t0.3) or mixed-script gibberish (t1.0)
    "t0.3": {"temperature": 0.3},
    "t1.0": {"temperature": 1.0},
    # repetition control (smol-c, smol-a: the default teachers; smol-b: the former second teacher)
    "t0.3-p0.9-rp1.2-nr4": {"temperature": 0.3, "top_p": 0.9, "repetition_penalty": 1.2, "no_repeat_ngram_size": 4},
    "t0.6-rp1.2-nr4": {"temperature": 0.6, "top_p": 0.9, "repetition_penalty": 1.2, "no_repeat_ngram_size": 4},
    "t0.8-rp1.15-nr4": {"temperature": 0.8, "top_p": 0.9, "repetition_penalty": 1.15, "no_repeat_ngram_size": 4},
    "t0.7-rp1.1-fp0.3": {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1, "frequency_penalty": 0.3},
    "t0.4-rp1.3-nr3": {"temperature": 0.4, "top_p": 0.9, "repetition_penalty": 1.3, "no_repeat_ngram_size": 3},
}
DEFAULT_SETTINGS = "t0.6-rp1.2-nr4,t0.3-p0.9-rp1.2-nr4"
FAMILIES = "summary_explained,rewrite,explanation,textbook_narrative,story"


def seeds(n: int, which: str) -> list[dict]:
    from tests.conftest import CC_SAMPLE, LEGAL, real_pages

    if which == "cc":
        import gzip

        if not CC_SAMPLE.exists():
            sys.exit(f"bench_gate: real pages not found at {CC_SAMPLE} (../shared/data is needed)")
        out = []
        for line in gzip.open(CC_SAMPLE, "rt"):
            r = json.loads(line)
            if len(r["text"].split()) >= 200 and r["text"].isascii():
                out.append({"id": str(len(out)), "text": r["text"]})
                if len(out) == n:
                    break
        return out
    if not LEGAL.exists():
        sys.exit(f"bench_gate: real pages not found at {LEGAL} (../shared/data is needed)")
    return real_pages(n, 20000)


def prompts(pages: list[dict], family: str) -> list[tuple[str, str, str]]:
    """(seed id, prompt, seed extract) per page, every prompt in one format family."""
    from pipeline.stages import load_config
    from pipeline.stages.generate import PromptBuilder, extract_of

    cfg = load_config(None, [f"generate.formats={{{family}: 1}}"])
    b = PromptBuilder(cfg, [])
    out = []
    for p in pages:
        extract = extract_of(p["text"], cfg.generate.seed_extract_chars)
        out.append((p["id"], b.build(p["id"], extract, None)["prompt"], extract))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--families", default=FAMILIES)
    ap.add_argument("--max-tokens", default=None, help="comma-separated; default: generate.max_tokens of the default config")
    ap.add_argument("--settings", default=DEFAULT_SETTINGS)
    ap.add_argument("--seeds", choices=("fineweb", "cc"), default="fineweb")
    ap.add_argument("--show", type=int, default=0, help="print this many replies per combination")
    ap.add_argument("--dtype", default="auto", help="llm.dtype: auto (fp32 on a CPU, bf16 on a GPU), float32, bfloat16")
    args = ap.parse_args()

    from pipeline.gate import QualityGate
    from pipeline.llm.config import merge_llm
    from pipeline.llm.engine import make_engine, sampling_for
    from pipeline.llm.types import Request
    from pipeline.stages import load_config
    from pipeline.stages.audit import ABOUT_SOURCE, HOLDS_TOGETHER

    cfg = load_config()
    lengths = [int(x) for x in (args.max_tokens or str(cfg.generate.max_tokens)).split(",")]
    pages = seeds(args.prompts, args.seeds)
    gate = QualityGate(cfg.quality_gate, cfg.encoder)
    gate.check_many(["A first sentence, so that the tokenizers and the models load outside the timing. " * 12],
                    sources=["A first sentence."])
    llm = merge_llm(cfg.llm, {"cache": {"enabled": False}, "dtype": args.dtype})
    engine = make_engine(llm)
    engine.generate([Request("warm", [{"role": "user", "content": "Hi"}], sampling_for(llm, "warm", 0, max_tokens=4))])
    dtype = str(getattr(getattr(engine, "model", None), "dtype", args.dtype)).removeprefix("torch.")
    print(f"{len(pages)} {args.seeds} seeds per combination, {cfg.llm.model} on {cfg.llm.backend} ({dtype}); kept = passes form "
          f"and meaning; good = kept with faithfulness >= {ABOUT_SOURCE} and coherence >= {HOLDS_TOGETHER}")
    head = (f"{'family':<19}{'tokens':>7} {'setting':<21}{'form':>6}{'meaning':>8}{'kept':>6}{'good':>6}{'faith':>7}"
            f"{'tok/s':>7}{'form %':>7}{'mean %':>7}  failures by check")
    print(head)
    rows, replies = [], {}
    for family in args.families.split(","):
        items = prompts(pages, family)
        for max_tokens in lengths:
            for name in args.settings.split(","):
                sampling = {**SETTINGS[name], "max_tokens": max_tokens}
                sc = merge_llm(llm, {"sampling": sampling})
                reqs = [Request(f"{pid}/{family}/{name}", [{"role": "user", "content": p}], sampling_for(sc, pid, cfg.run.seed))
                        for pid, p, _ in items]
                t0 = time.perf_counter()
                results = engine.generate(reqs)
                gen_s = time.perf_counter() - t0
                t1 = time.perf_counter()
                form = [gate.check(r.text.strip(), echo_source=p, finish_reason=r.outputs[0].finish_reason)
                        for r, (_, p, _) in zip(results, items)]
                form_s = time.perf_counter() - t1
                t2 = time.perf_counter()
                measures = gate.meaning.measure([v.text for v in form], [e for _, _, e in items])
                meaning_s = time.perf_counter() - t2
                fails = Counter(r for v in form for r in v.reasons)
                mean_ok = []
                for m in measures:
                    f = gate.meaning.failures(m)
                    fails.update(list(f))
                    mean_ok.append(not f)
                kept = [v.passed and ok for v, ok in zip(form, mean_ok)]
                good = [k and m["faithfulness"] >= ABOUT_SOURCE and (m["coherence"] or 0) >= HOLDS_TOGETHER
                        for k, m in zip(kept, measures)]
                faith = [m["faithfulness"] for m in measures if m["faithfulness"] is not None]
                toks = sum(r.completion_tokens for r in results)
                row = {"family": family, "max_tokens": max_tokens, "setting": name, "sampling": sampling,
                       "form_pass": sum(v.passed for v in form) / len(items), "meaning_pass": sum(mean_ok) / len(items),
                       "kept": sum(kept), "good": sum(good), "prompts": len(items),
                       "median_faithfulness": statistics.median(faith) if faith else None, "tok_s": toks / gen_s,
                       "form_share": form_s / gen_s, "meaning_share": meaning_s / gen_s,
                       "failures": dict(fails.most_common()),
                       "replies": [{"kept": k, "reasons": v.reasons, "semantic": m, "text": v.text[:400]}
                                   for k, v, m in zip(kept, form, measures)]}
                rows.append(row)
                replies[(family, max_tokens, name)] = [(k, v.text, m) for k, v, m in zip(kept, form, measures)]
                print(f"{family:<19}{max_tokens:>7} {name:<21}{row['form_pass']:>6.0%}{row['meaning_pass']:>8.0%}"
                      f"{sum(kept):>3}/{len(items):<3}{sum(good):>3}/{len(items):<3}{row['median_faithfulness'] or 0:>6.2f}"
                      f"{row['tok_s']:>7.1f}{row['form_share']:>7.2%}{row['meaning_share']:>7.2%}  "
                      + ", ".join(f"{k} {v}" for k, v in fails.most_common(6)), flush=True)
                for k, v, m in list(zip(kept, form, measures))[: args.show]:
                    print(f"--- {'kept' if k else 'removed'} {v.reasons} {m}\n{v.text[:600]}\n")
    agreement = judge_agreement(cfg, engine, pages, args, lengths, replies)
    engine.close()
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gate.json").write_text(json.dumps({"rows": rows, "judge_agreement": agreement}, indent=2))
    best = sorted(rows, key=lambda r: (r["good"], r["kept"]), reverse=True)[:3]
    print("best by good rows: " + "; ".join(f"{r['family']} {r['max_tokens']} {r['setting']} ({r['good']}/{r['prompts']})"
                                            for r in best))
    print(f"gate cost: form {max(r['form_share'] for r in rows):.2%}, meaning {max(r['meaning_share'] for r in rows):.2%} "
          "of the generation's wall time at most (goal: meaning <= 10%)")


def judge_agreement(cfg, engine, pages, args, lengths, replies) -> dict:
    """How often the LLM judge (the generator itself, prompts/judge/pick.j2) picks the answer the measures
    pick, among prompts where both of the last two settings' answers were kept."""
    from datatrove.data import Document

    from pipeline.meaning import rank_score
    from pipeline.stages import load_config
    from pipeline.stages.judge import Judge

    names = args.settings.split(",")
    if len(names) < 2:
        return {}
    a, b = names[-2], names[-1]
    jcfg = load_config(None, ["generate.judge.kind=llm"])
    judge = Judge(jcfg, lambda c: engine, cfg.run.seed)
    items, by_measure = [], []
    for family in args.families.split(","):
        prompts_ = {pid: p for pid, p, _ in prompts(pages, family)}
        for t in lengths:
            ra, rb = replies[(family, t, a)], replies[(family, t, b)]
            for pid, (ka, ta, ma), (kb, tb, mb) in zip(prompts_, ra, rb):
                if ka and kb:
                    items.append((prompts_[pid], [Document(text=ta, id=f"{pid}/{family}/{t}"),
                                                  Document(text=tb, id=f"{pid}/{family}/{t}")]))
                    by_measure.append(0 if rank_score(ma) >= rank_score(mb) else 1)
    if not items:
        print("judge agreement: no prompt where both settings' answers were kept")
        return {}
    picks = [k for k, _ in judge.pick(items)]
    valid = [(p, m) for p, m in zip(picks, by_measure) if p >= 0]
    agree = sum(p == m for p, m in valid) / max(1, len(valid))
    first = sum(p == 0 for p, _ in valid) / max(1, len(valid))
    print(f"judge agreement: the 135M LLM judge picks the measures' choice in {agree:.0%} of {len(valid)} judged pairs "
          f"({a} vs {b}; a coin: 50%); it picks {a} in {first:.0%}")
    return {"pairs": len(valid), "agreement": agree, "picks_first": first, "settings": [a, b]}


if __name__ == "__main__":
    main()
