"""What makes a finished stage trustworthy: its input is what it read (fingerprints), its books
balance on the parts before any shard becomes final, and only then is it marked complete."""

from __future__ import annotations

import json
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

from pipeline.errors import StageFailed, StaleOutput, UserError
from pipeline.io.fingerprint import fingerprints
from pipeline.io.writer import atomic_write_text, finalize, plan_finalize
from pipeline.stages.summary import gate_summary, main_tag, summarize

LOGS = "_logs"


def done_tasks(logs: Path) -> int:
    return len(list((logs / "completions").glob("*"))) if (logs / "completions").exists() else 0


def check_inputs(saved: dict[str, list], output: Path, plan=None, finished: bool = False) -> None:
    """The input is what the run in ``output`` read: the same files (none added, none gone), each with the
    same size and content (a touched file with the same bytes is the same input), and the same Hub
    revision. Else a one-line refusal naming the file and what changed."""
    hub = {k: v for k, v in saved.items() if k.startswith("hf://")}
    files = {k: v for k, v in saved.items() if k not in hub}
    now = fingerprints(list(files))
    problem = None
    for f, (size, _mtime, digest) in files.items():
        if f not in now:
            problem = f"input {f} is gone"
        elif now[f][0] != size:
            problem = f"input {f} changed size ({size:,} -> {now[f][0]:,} bytes)"
        elif now[f][2] != digest:
            problem = f"input {f} changed content"
        if problem:
            break
    for name, (_, rev) in hub.items():
        if problem is None and plan is not None and getattr(plan, "revision", None) and plan.revision != rev:
            problem = f"{name} moved from revision {rev[:12]} to {plan.revision[:12]}"
    if problem is None and plan is not None and plan.files:
        added = sorted(set(plan.files) - set(files))
        if added:
            problem = f"the input has {len(added)} file(s) it did not have, e.g. {added[0]}"
    if problem is None:
        return
    if finished:
        raise StaleOutput(f"{problem} since {output} was made from it; its output is stale: rerun with --force to "
                        "redo it on the input as it is now (and the stages after it)")
    raise UserError(f"{problem} since the unfinished run in {output} started; finished tasks read the old "
                    "input, so resuming would mix two inputs: use --force to start over on the new input")


def books(stats: dict) -> dict:
    """The accounting invariant: every record read is kept, removed (with its reason) or a counted
    skip. One-to-one stages balance in rows (records in = kept + removed; a stage that does not write
    its removals counts them by reason). LLM stages, which may write several rows per record read (a
    seed's prompts, a page's rephrasings, n samples), count in their step each record that left at
    least one row, kept or removed (``records_accounted``), and balance in that."""
    removed_rows = stats.get("removed", 0)
    dropped = sum(stats.get("dropped_by_reason", {}).values())
    b = {"records_in": stats["records_in"], "kept": stats["records_out"],
         "removed": removed_rows if removed_rows or not dropped else dropped,
         "skipped": sum(stats.get("skipped_bad_records", {}).values())}
    accounted = [c["records_accounted"] for c in stats.get("steps", {}).values() if "records_accounted" in c]
    if accounted:  # every record accounted for left at least one row (kept, removed or counted as dropped)
        b["records_accounted"] = sum(accounted)
        b["balanced"] = (b["records_in"] == b["records_accounted"]
                         and b["kept"] + removed_rows + dropped >= b["records_accounted"])
    else:
        b["balanced"] = b["records_in"] == b["kept"] + b["removed"]
    return b


def complete_stage(output: str, stage: str, config_hash: str, run_id: str, wall_time: float | None = None,
                   resumed: bool = False) -> dict:
    """Finalise shards and write stats.json; safe to call again after an interruption."""
    out = Path(output)
    plan = plan_finalize(output)  # rows per tag from the parts' manifests, nothing renamed yet
    if plan is not None:
        rows = plan["rows"]
    else:  # finalised on an earlier call: recount from the shards
        import pyarrow.parquet as pq

        rows = {tag: sum(pq.read_metadata(f).num_rows for f in sorted((out / tag).glob("*.parquet")))
                for tag in ("data", "kept", "removed") if (out / tag).exists()}
    main = main_tag(stage)
    stats = summarize(out / LOGS, stage, {**rows, "data": rows.get(main, 0)})
    state = out / LOGS / "state.json"
    plan = (json.loads(state.read_text()).get("plan") or {}) if state.exists() else {}
    for reason, n in (plan.get("skipped") or {}).items():  # whole files left out before any task read them
        stats["skipped_bad_records"][reason] = stats["skipped_bad_records"].get(reason, 0) + n
    llm_files = sorted((out / LOGS / "llm").glob("*.json"))
    if llm_files:
        from pipeline.llm.metrics import merge

        stats["llm"] = merge([json.loads(f.read_text()) for f in llm_files])
    stats["books"] = books(stats)
    if not stats["books"]["balanced"]:
        b = stats["books"]
        raise StageFailed(f"{stage}: the books do not balance in {out}: {b['records_in']:,} records read, {b['kept']:,} kept, "
                          f"{b['removed']:,} removed" + (f", {b['records_accounted']:,} of them left a row"
                                                          if "records_accounted" in b else "")
                          + "; no shard was made final and nothing is marked complete (this is a bug: please report "
                          "it with the run folder)")
    finalize(output)  # the books balance on the parts: now make them final
    gate = gate_summary(stats["steps"])
    if gate:
        if wall_time and not resumed:  # the gate's cost: its CPU time over the stage's wall time (summed over tasks)
            gate["share_of_wall_time"] = round(gate["time_s"] / wall_time, 4)
        stats["quality_gate"] = gate
    stats.update(
        stage=stage, complete=True, config_hash=config_hash, run_id=run_id, output=str(out),
        shards=sorted(str(p.relative_to(out)) for p in (out / main).glob("*.parquet")) if (out / main).exists() else [],
        wall_time_s=round(wall_time, 3) if wall_time is not None else None, resumed=resumed,
    )
    if wall_time and not resumed:
        stats["docs_per_s"] = round(stats["records_in"] / wall_time, 2) if wall_time > 0 else None
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    return stats


class FinalizeStep(PipelineStep):
    """The finalisation as a one-task job, for executors that return before the work is done (Slurm)."""

    name = "🏁 finalize"
    type = "🔧 - SETUP"

    def __init__(self, output: str, stage: str, config_hash: str, run_id: str, finish=None, cfg=None):
        super().__init__()
        self.output, self.stage, self.config_hash, self.run_id = output, stage, config_hash, run_id
        self.finish, self.cfg = finish, cfg

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        stats = complete_stage(self.output, self.stage, self.config_hash, self.run_id)
        if self.finish and stats.get("complete"):
            self.finish(self.cfg, stats)
        return
        yield
