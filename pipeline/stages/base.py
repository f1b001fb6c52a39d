"""The common stage shape: config -> datatrove steps -> shards + ``stats.json`` + a summary table.

``run_stage`` owns the order of what every stage needs, each part in its own module: the output
folder's lock (``pipeline.io.lock``), refusing to mix runs of other settings in one folder (the
stage's identity), the input's fingerprints and the books (``integrity``), skipping completed tasks
on rerun (datatrove's completion markers), the live progress (``progress``), stopping every worker
of a failed run (``processes``), the Slurm jobs (``jobs``) and the summary table (``summary``).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from datatrove.pipeline.base import PipelineStep

from pipeline.config import Config
from pipeline.errors import StageFailed, UserError
from pipeline.executor import build_executor
from pipeline.io.fingerprint import fingerprints
from pipeline.io.lock import output_lock
from pipeline.io.readers import InputPlan, make_reader, plan_input
from pipeline.io.writer import ShardWriter, TaskStart, atomic_write_text, drop_temp_files, wait_for_old_workers
from pipeline.logs import quiet_datatrove
from pipeline.stages.integrity import LOGS, FinalizeStep, check_inputs, complete_stage, done_tasks  # noqa: F401
from pipeline.stages.jobs import refuse_if_still_queued, save_jobs
from pipeline.stages.processes import become_subreaper, kill_descendants
from pipeline.stages.progress import Progress, ProgressMonitor
from pipeline.stages.summary import print_summary, sections


class RunOnce(PipelineStep):
    """A function of a stage's preparation (decisions, representatives, topics and personas) as a
    one-task job: on Slurm it runs after the pass before it, inside the cluster, never in the launching
    process. Locally it is called directly (its errors stay the user's one-line errors)."""

    name = "🧮 prepare"
    type = "🔧 - SETUP"

    def __init__(self, fn, *args):
        super().__init__()
        self.fn, self.args = fn, args

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        self.fn(*self.args)
        return
        yield


@dataclass
class StageContext:
    """What a stage's ``build`` function needs to assemble its datatrove steps."""

    stage: str
    cfg: Config
    output: Path
    plan: InputPlan | None
    run_id: str
    config_hash: str
    depends: Any = None  # on Slurm: the last preparation job, which the stage's own job waits for
    passes: list = field(default_factory=list)  # (name, logging dir, executor) of each preparation pass

    def for_job(self) -> "StageContext":
        """A copy to hand to a job's step: without the chain of executors (which would pickle itself)."""
        from dataclasses import replace

        return replace(self, depends=None, passes=[])

    def run_first(self, pipeline: list, logging_dir: Path, tasks: int | None = None, name: str = "") -> None:
        """A preparation pass (MinHash signatures, hash buckets, decisions...) before the stage's own
        steps. Locally and on Ray it runs now; on Slurm it is submitted as a job the next pass (and in the
        end the stage) depends on, so nothing waits in the launching process."""
        if self.cfg.executor.kind == "local" and len(pipeline) == 1 and isinstance(pipeline[0], RunOnce):
            pipeline[0].fn(*pipeline[0].args)
            return
        ex = build_executor(self.cfg.executor, pipeline, str(logging_dir), tasks=tasks, depends=self.depends,
                            job_suffix=f"-{name}" if name else "")
        self.passes.append((name or Path(logging_dir).name, Path(logging_dir), ex))
        if self.cfg.executor.kind == "slurm":
            self.depends = ex
        else:
            ex.run()

    @property
    def logging_dir(self) -> Path:
        return self.output / LOGS

    def task_start(self) -> TaskStart:
        return TaskStart(str(self.output), watch_parent=self.cfg.executor.kind == "local")

    def reader(self) -> PipelineStep:
        return make_reader(self.plan, self.cfg.input)

    def progress(self) -> Progress:
        return Progress(str(self.logging_dir))

    def writer(self, tag: str, writer_id: str, fields) -> ShardWriter:
        w = self.cfg.writer
        return ShardWriter(
            str(self.output), self.stage, self.run_id, self.config_hash, stage_fields=fields, tag=tag,
            writer_id=writer_id, max_rows_per_shard=w.max_rows_per_shard, row_group_rows=w.row_group_rows,
            row_group_bytes=w.row_group_bytes, compression_level=w.compression_level,
        )


OUR_ENTRIES = ("data", "kept", "removed", "_parts", LOGS, "_llm_cache", "topics", "personas", "stats.json", "config.yaml")


def _clear(output: Path) -> None:
    for name in OUR_ENTRIES:
        p = output / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def identity_hash(identity: dict) -> str:
    from pipeline.config import identity_hash as _h

    return _h(identity)


def run_stage(stage: str, cfg: Config, build: Callable[[StageContext], list], force: bool = False,
              progress: bool = True, needs_input: bool = True, printer=print, extra_hash: str = "",
              finish: Callable[[Config, dict], dict] | None = None) -> dict:
    """Run one stage end to end (or resume it) under the output folder's lock; returns the stats dict
    also written to stats.json. ``extra_hash`` joins the config hash (e.g. the fingerprints of the
    classifiers a stage applies). ``finish(cfg, stats)`` adds to a completed stage's stats.json what
    needs its whole output (generate's diversity, with the encoder): a module-level function, run where
    the work runs (here locally, in the finalize job on Slurm, as a one-task job on Ray), never in a
    cluster's launching process."""
    from pipeline.executor import check_executor

    check_executor(cfg.executor)
    with output_lock(Path(cfg.run.output), stage):
        return _run_stage(stage, cfg, build, force, progress, needs_input, printer, extra_hash, finish)


def _run_stage(stage: str, cfg: Config, build: Callable[[StageContext], list], force: bool, progress: bool,
               needs_input: bool, printer, extra_hash: str, finish=None) -> dict:
    from pipeline.config import identity_changes

    output = Path(cfg.run.output)
    identity = cfg.identity(sections(stage))
    if extra_hash:
        identity["(classifiers applied)"] = extra_hash
    h = identity_hash(identity)
    if force:
        _clear(output)
    stats_path = output / "stats.json"
    logs = output / LOGS
    state_path = logs / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else None

    def changed(before: dict) -> str:
        """What differs from the run in the folder: its keys, or the two hashes for a run from before identities."""
        if before.get("identity"):
            return "changed: " + identity_changes(before["identity"], identity)
        return f"config {before.get('config_hash')} vs {h}"

    if stats_path.exists():
        prev = json.loads(stats_path.read_text())
        if prev.get("complete") and prev.get("config_hash") == h:
            if needs_input and (state or {}).get("inputs") is not None:  # made from what is there now?
                check_inputs(state["inputs"], output, plan_input(cfg.input), finished=True)
            printer(f"{stage}: {output} is already complete (config {h}); nothing to do. Use --force to redo it.")
            print_summary(prev, printer)
            if finish and cfg.executor.kind == "local":  # a run killed between stats.json and its additions
                prev = finish(cfg, prev)
            return prev
        if prev.get("complete"):
            raise UserError(
                f"{output} holds a completed {prev.get('stage')} run of different settings ({changed(state or prev)}); "
                "use --force to overwrite it, or another --output"
            )
    if state and state.get("config_hash") != h:
        raise UserError(
            f"{output} holds an unfinished run of different settings ({changed(state)}); "
            "rerun with the same settings to resume, or use --force to start over"
        )
    plan = plan_input(cfg.input) if needs_input else None
    if plan and plan.notice:
        printer(plan.notice)
    resumed = state is not None
    if resumed and state.get("inputs") is not None and plan:
        if done_tasks(logs) or (output / "_parts").exists() and any((output / "_parts").rglob("*.parquet")):
            check_inputs(state["inputs"], output, plan)
        else:  # nothing of the earlier attempt was kept (it failed before any task finished): read the input as it is
            state.update(plan=plan.__dict__, inputs=fingerprints(plan.files, plan))
    if resumed:
        state.pop("failed", None)
    if not state:
        run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        state = {"stage": stage, "config_hash": h, "identity": identity, "run_id": run_id,
                 "plan": plan.__dict__ if plan else None, "inputs": fingerprints(plan.files, plan) if plan else {}}
    logs.mkdir(parents=True, exist_ok=True)
    (output / "config.yaml").write_text(f"# resolved config of {stage}, hash {h}\n" + cfg.to_yaml(), encoding="utf-8")
    atomic_write_text(state_path, json.dumps(state))
    if plan and state.get("plan"):  # a resumed run keeps the file list it started with
        plan = InputPlan(**{**state["plan"], "notice": None})
    ctx = StageContext(stage, cfg, output, plan, state["run_id"], h)
    try:
        pipeline = build(ctx)
    except UserError:
        if not resumed:  # a run that failed validation leaves no state behind to block its own fix
            state_path.unlink(missing_ok=True)
            (output / "config.yaml").unlink(missing_ok=True)
        raise
    if cfg.executor.kind == "slurm" and resumed:
        refuse_if_still_queued(logs, output)
    executor = build_executor(cfg.executor, pipeline, str(logs), depends=ctx.depends)
    if resumed:
        done = len(list((logs / "completions").glob("*"))) if (logs / "completions").exists() else 0
        printer(f"{stage}: resuming {output}: {done}/{cfg.executor.tasks} tasks already complete")
    try:
        wait_for_old_workers(logs / "workers")
    except ChildProcessError as e:
        pids = " ".join(map(str, e.args[0]))
        raise UserError(f"{output}: worker(s) of an earlier run still write there (pid {pids}); stop them "
                        f"(kill {pids}) and rerun") from None
    if cfg.executor.kind == "local":  # no earlier worker is left: what it was writing when killed is debris
        drop_temp_files(output)
    become_subreaper()
    t0 = time.time()
    monitor = ProgressMonitor(logs, plan.total_hint if plan else None, cfg.executor.tasks, stage=stage,
                              enabled=progress and cfg.executor.kind == "local")
    try:
        with monitor, quiet_datatrove():
            executor.run()
    except BaseException as e:
        if cfg.executor.kind == "local":  # stop every worker (and its helpers), then drop unfinished parts
            kill_descendants()
            drop_temp_files(output)
        first = str(e).splitlines()[0] if str(e) else ""
        if isinstance(e, Exception):  # for `synthweb status`: failed (a rerun fails alike until fixed), not stopped
            state["failed"] = {"error": f"{type(e).__name__}: {first}"[:300], "log": str(logs / "logs"),
                               "at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
            atomic_write_text(state_path, json.dumps(state))
        if isinstance(e, (UserError, KeyboardInterrupt)) or not isinstance(e, Exception):
            raise
        # any other task failure: one line naming the logs; completed tasks are kept for the rerun
        raise StageFailed(
            f"{stage} failed: {type(e).__name__}: {first} (full traceback in {logs / 'logs'}; "
            "rerun the same command to resume)"
        ) from None
    if cfg.executor.kind == "slurm":
        fin = build_executor(cfg.executor, [FinalizeStep(str(output), stage, h, state["run_id"], finish, cfg)],
                             str(logs / "finalize"), tasks=1, depends=executor, job_suffix="-finalize")
        fin.run()
        jobs = [(n, d, e) for n, d, e in ctx.passes] + [(stage, logs, executor), ("finalize", logs / "finalize", fin)]
        save_jobs(logs, [{"name": n, "logging_dir": str(d), "job_id": getattr(e, "job_id", None), "tasks": e.world_size}
                          for n, d, e in jobs])
        printer(f"{stage}: submitted to Slurm; shards and {stats_path} appear when the finalize job ends "
                f"(synthweb status {output})")
        return {"stage": stage, "submitted": True}
    stats = complete_stage(str(output), stage, h, state["run_id"], wall_time=time.time() - t0, resumed=resumed)
    if finish and cfg.executor.kind == "local":
        stats = finish(cfg, stats)
    elif finish:  # Ray: a one-task job on the cluster
        with quiet_datatrove():
            build_executor(cfg.executor, [RunOnce(finish, cfg, stats)], str(logs / "finish"), tasks=1).run()
        stats = json.loads(stats_path.read_text())
    print_summary(stats, printer)
    return stats


