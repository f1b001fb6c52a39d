"""A finished stage's figures: datatrove's per-task stats merged into one summary, the quality gate's
books, and the table printed at the end."""

from __future__ import annotations

import json
from pathlib import Path


def declared(stage: str):
    """The registered Stage of that name (its hash scope, its main folder), or None for an unregistered one."""
    from pipeline.stages import find

    return find(stage)


def sections(stage: str) -> tuple[str, ...] | None:
    """The config sections that shape a stage's rows: changing another section (say generate.*) must not make
    an earlier stage's finished output look foreign (make generate reruns seeds with the same file)."""
    s = declared(stage)
    return s.sections if s else None


def main_tag(stage: str | None) -> str:
    s = declared(stage) if stage else None
    return s.main_tag if s else "data"


def summarize(logs: Path, stage: str, rows: dict[str, int]) -> dict:
    """Merge every task's datatrove stats (this run's and earlier attempts') into one summary."""
    steps: dict[str, dict] = {}
    for f in sorted((logs / "stats").glob("*.json")):
        for step in json.loads(f.read_text()):
            name = step["name"]
            agg = steps.setdefault(name, {"time_s": 0.0, "counts": {}})
            timing = step.get("time_stats")
            agg["time_s"] += (timing.get("total", 0.0) if isinstance(timing, dict) else 0.0) or 0.0
            for key, metric in step.get("stats", {}).items():
                value = metric.get("total", metric) if isinstance(metric, dict) else metric
                if isinstance(value, (int, float)):
                    agg["counts"][key] = agg["counts"].get(key, 0) + value
    records_in = 0
    dropped: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for name, agg in steps.items():
        c = agg["counts"]
        if "READER" in name.split(":", 1)[0]:
            records_in += int(c.get("documents", 0))
            for k, v in c.items():
                if k.startswith("skipped_"):
                    skipped[k.removeprefix("skipped_")] = skipped.get(k, 0) + int(v)
        if "dropped" in c:
            explained = 0
            for k, v in c.items():
                if k.startswith("dropped_"):
                    dropped[k.removeprefix("dropped_")] = dropped.get(k, 0) + int(v)
                    explained += int(v)
            if int(c["dropped"]) > explained:
                dropped[name.split(": ", 1)[-1]] = int(c["dropped"]) - explained
    return {
        "records_in": records_in,
        "records_out": int(rows.get("data", 0)),
        "removed": int(rows.get("removed", 0)),
        "dropped_by_reason": dict(sorted(dropped.items(), key=lambda kv: -kv[1])),
        "skipped_bad_records": skipped,
        "steps": {name: {"time_s": round(a["time_s"], 3), **{k: int(v) if float(v).is_integer() else v for k, v in a["counts"].items()}}
                  for name, a in steps.items()},
    }


def gate_summary(steps: dict) -> dict | None:
    """The quality gate's books from the steps' gate_* counters: replies checked and passed (in all and
    per teacher), the share failing each check, replies trimmed at max_tokens."""
    c: dict[str, int] = {}
    for counts in steps.values():
        for k, v in counts.items():
            if k.startswith("gate_") and isinstance(v, (int, float)):
                c[k] = c.get(k, 0) + int(v)
    n = c.get("gate_checked", 0)
    if not n:
        return None
    out = {"checked": n, "passed": c.get("gate_passed", 0), "pass_rate": round(c.get("gate_passed", 0) / n, 4),
           "trimmed_at_max_tokens": c.get("gate_trimmed", 0), "time_s": round(c.get("gate_us", 0) / 1e6, 3),
           "failed_by_check": {k.removeprefix("gate_failed_"): v for k, v in sorted(c.items(), key=lambda kv: -kv[1])
                               if k.startswith("gate_failed_")}}
    out["fail_share_by_check"] = {k: round(v / n, 4) for k, v in out["failed_by_check"].items()}
    by = {k.removeprefix("gate_checked_by_"): v for k, v in c.items() if k.startswith("gate_checked_by_")}
    if by:
        out["by_teacher"] = {t: {"checked": v, "passed": c.get(f"gate_passed_by_{t}", 0),
                                 "pass_rate": round(c.get(f"gate_passed_by_{t}", 0) / v, 4)} for t, v in sorted(by.items())}
    return out


def gate_line(g: dict) -> str:
    """One line for the terminal: the pass rate on the raw replies and the main failure kinds."""
    fails = ", ".join(f"{k} {v}" for k, v in g["failed_by_check"].items())
    teachers = "; ".join(f"{t} {x['passed']}/{x['checked']}" for t, x in g.get("by_teacher", {}).items())
    return (f"quality gate: {g['passed']} of {g['checked']} raw replies passed ({g['pass_rate']:.0%})"
            + (f" in {g['time_s']:.1f} s ({g['share_of_wall_time']:.1%} of the stage's wall time)"
               if g.get("share_of_wall_time") is not None else "")
            + (f"; by teacher: {teachers}" if teachers else "") + (f"; failed: {fails}" if fails else "")
            + (f"; {g['trimmed_at_max_tokens']} cut at max_tokens trimmed to their last sentence"
               if g.get("trimmed_at_max_tokens") else ""))


def print_summary(stats: dict, printer=print) -> None:
    """A compact table: records in/out, dropped by reason, throughput, wall time, output path."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{stats.get('stage', 'stage')} summary", show_header=True, header_style="bold")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("records in", f"{stats.get('records_in', 0):,}")
    t.add_row("records out", f"{stats.get('records_out', 0):,}")
    for reason, n in stats.get("dropped_by_reason", {}).items():
        t.add_row(f"  dropped: {reason}", f"{n:,}")
    for reason, n in stats.get("skipped_bad_records", {}).items():
        t.add_row(f"  skipped bad record: {reason}", f"{n:,}")
    if stats.get("wall_time_s") is not None:
        t.add_row("wall time", f"{stats['wall_time_s']:.1f} s")
    if stats.get("docs_per_s") is not None:
        t.add_row("throughput", f"{stats['docs_per_s']:,.1f} docs/s")
    llm = stats.get("llm")
    if llm:
        t.add_row("LLM requests (cache hits)", f"{llm['requests']:,} ({llm['cache_hits']:,})")
        t.add_row("LLM tokens in / out", f"{llm['prompt_tokens']:,} / {llm['completion_tokens']:,}")
        t.add_row("LLM output tok/s", f"{llm['output_tok_s']:,.1f}")
        lat = llm.get("latency_s", {})
        if lat.get("p50") is not None:
            t.add_row("LLM latency p50 / p90 / p99", f"{lat['p50']:.2f} / {lat['p90']:.2f} / {lat['p99']:.2f} s")
        for kind, n in llm.get("failures", {}).items():
            t.add_row(f"  LLM failures: {kind}", f"{n:,}")
        if llm.get("cost_usd") is not None:
            t.add_row("estimated cost", f"${llm['cost_usd']:,.2f}")
    g = stats.get("quality_gate")
    if g:
        t.add_row("quality gate: passed / checked", f"{g['passed']:,} / {g['checked']:,} ({g['pass_rate']:.0%})")
        for check, n in g["failed_by_check"].items():
            t.add_row(f"  gate failed: {check}", f"{n:,}")
        if g.get("trimmed_at_max_tokens"):
            t.add_row("  trimmed at max_tokens", f"{g['trimmed_at_max_tokens']:,}")
    t.add_row("shards", f"{len(stats.get('shards', []))} in {stats.get('output')}/{main_tag(stats.get('stage'))}")
    Console(stderr=False).print(t)


def gate_lines(stats: dict) -> list[str]:
    return [gate_line(stats["quality_gate"])] if stats.get("quality_gate") else []
