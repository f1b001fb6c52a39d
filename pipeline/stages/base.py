"""The common stage shape: config -> datatrove steps -> shards + ``stats.json`` + a summary table.

``run_stage`` owns what every stage needs: refusing to mix configs in one output folder, saving the
resolved config next to the output, skipping completed tasks on rerun (datatrove's completion
markers), a live progress bar, atomic shard finalisation, merged stats and the summary table.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipeline.config import Config
from pipeline.errors import StageFailed, StaleOutput, UserError
from pipeline.executor import build_executor
from pipeline.io.fingerprint import fingerprints
from pipeline.io.lock import output_lock
from pipeline.io.readers import InputPlan, make_reader, plan_input
from pipeline.io.writer import ShardWriter, TaskStart, atomic_write_text, finalize, plan_finalize, wait_for_old_workers
from pipeline.logs import quiet_datatrove

LOGS = "_logs"


class Progress(PipelineStep):
    """Counts documents flowing past and publishes the count for the progress bar (a file per task)."""

    name = "⏱ progress"
    type = "🔧 - SETUP"

    def __init__(self, logging_dir: str, every_s: float = 0.5):
        super().__init__()
        self.logging_dir, self.every_s = logging_dir, every_s

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = Path(self.logging_dir) / "progress" / f"{rank:05d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        n, last = 0, 0.0
        for doc in data:
            n += 1
            now = time.monotonic()
            if now - last > self.every_s:
                atomic_write_text(path, json.dumps({"docs": n}))
                last = now
            yield doc
        atomic_write_text(path, json.dumps({"docs": n}))


class ProgressMonitor:
    """Background thread that sums the per-task counters into one tqdm bar (rate, ETA when known)."""

    def __init__(self, logging_dir: Path, total: int | None, tasks: int, enabled: bool = True):
        self.dir, self.total, self.tasks, self.enabled = logging_dir, total, tasks, enabled
        self._stop = threading.Event()

    def _counts(self) -> tuple[int, int]:
        docs = 0
        for f in (self.dir / "progress").glob("*.json"):
            try:
                docs += json.loads(f.read_text())["docs"]
            except (ValueError, OSError, KeyError):
                pass
        done = len(list((self.dir / "completions").glob("*"))) if (self.dir / "completions").exists() else 0
        return docs, done

    def _llm(self) -> str:
        """Live engine figures for the bar: output tokens/s (recent) and cache hits."""
        tok_s = hits = toks = 0.0
        for f in (self.dir / "llm").glob("*.json"):
            try:
                m = json.loads(f.read_text())
            except (ValueError, OSError):
                continue
            tok_s += m.get("recent_output_tok_s", 0.0)
            hits += m.get("cache_hits", 0)
            toks += m.get("completion_tokens", 0)
        if not toks and not hits:
            return ""
        return f", {tok_s:,.0f} out tok/s, {toks:,.0f} tok, {hits:,.0f} cached"

    def _loop(self) -> None:
        from tqdm import tqdm

        docs, done = self._counts()
        tty = sys.stderr.isatty()  # in batch logs: an update every 30 s, not a stream of redraws
        with tqdm(total=self.total, initial=docs, unit="doc", desc="documents", dynamic_ncols=True,
                  mininterval=0.5 if tty else 30) as bar:
            while not self._stop.wait(0.5):
                docs, done = self._counts()
                bar.update(docs - bar.n)
                bar.set_postfix_str(f"tasks {done}/{self.tasks}{self._llm()}", refresh=False)
            docs, done = self._counts()
            bar.update(docs - bar.n)
            bar.set_postfix_str(f"tasks {done}/{self.tasks}{self._llm()}", refresh=False)

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._stop.set()
            self._thread.join(timeout=5)


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


def _become_subreaper() -> None:
    """Orphans of our workers (e.g. the extraction sandbox of a worker the pool terminated) are
    re-parented to us instead of init, so that a failed run can stop them (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _kill_descendants() -> None:
    import psutil

    def is_tracker(p: psutil.Process) -> bool:  # it exits by itself with us, and complains if killed
        try:
            return "resource_tracker" in " ".join(p.cmdline())
        except psutil.Error:
            return True

    procs = [p for p in psutil.Process().children(recursive=True) if not is_tracker(p)]
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def _declared(stage: str):
    """The registered Stage of that name (its hash scope, its main folder), or None for an unregistered one."""
    from pipeline.stages import find

    return find(stage)


def _sections(stage: str) -> tuple[str, ...] | None:
    """The config sections that shape a stage's rows: changing another section (say generate.*) must not make
    an earlier stage's finished output look foreign (make generate reruns seeds with the same file)."""
    s = _declared(stage)
    return s.sections if s else None


def _main_tag(stage: str | None) -> str:
    s = _declared(stage) if stage else None
    return s.main_tag if s else "data"


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
    identity = cfg.identity(_sections(stage))
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
                _check_inputs(state["inputs"], output, plan_input(cfg.input), finished=True)
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
        if _done_tasks(logs) or (output / "_parts").exists() and any((output / "_parts").rglob("*.parquet")):
            _check_inputs(state["inputs"], output, plan)
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
        _refuse_if_still_queued(logs, output)
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
    _become_subreaper()
    t0 = time.time()
    monitor = ProgressMonitor(logs, plan.total_hint if plan else None, cfg.executor.tasks,
                              enabled=progress and cfg.executor.kind == "local")
    try:
        with monitor, quiet_datatrove():
            executor.run()
    except BaseException as e:
        if cfg.executor.kind == "local":  # stop every worker (and its helpers), then drop unfinished parts
            _kill_descendants()  # a worker killed mid-write leaves a temp file (parts, progress counters)
            for tmp in output.rglob("*.tmp"):
                tmp.unlink(missing_ok=True)
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
        _save_jobs(logs, [{"name": n, "logging_dir": str(d), "job_id": getattr(e, "job_id", None), "tasks": e.world_size}
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


def _done_tasks(logs: Path) -> int:
    return len(list((logs / "completions").glob("*"))) if (logs / "completions").exists() else 0


def _check_inputs(saved: dict[str, list], output: Path, plan=None, finished: bool = False) -> None:
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
    main = _main_tag(stage)
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


def _refuse_if_still_queued(logs: Path, output: Path) -> None:
    """A rerun on Slurm while jobs of an earlier submission of this folder are still queued or running
    (its driver died, or it was run twice) would run the same tasks twice: refuse, naming the jobs."""
    from pipeline.stages.status import QueueUnavailable, queue_states

    path = logs / "jobs.json"
    ids = sorted({str(j["job_id"]) for j in (json.loads(path.read_text()) if path.exists() else [])
                  if j.get("job_id") not in (None, -1)})
    try:
        queued = sorted({k.split("_")[0] for k in queue_states(ids)})
    except QueueUnavailable as e:
        raise UserError(f"{output}: cannot tell whether its earlier jobs still run ({e}); try again when squeue answers") from None
    if queued:
        raise UserError(f"{output}: jobs of an earlier submission are still in Slurm's queue ({', '.join(queued)}): "
                        f"wait for them (synthweb status {output}) or cancel them (scancel {' '.join(queued)}), then rerun")


def _save_jobs(logs: Path, jobs: list[dict]) -> None:
    """The Slurm jobs of this submission, for `synthweb status` (a rerun's jobs are added after)."""
    path = logs / "jobs.json"
    before = json.loads(path.read_text()) if path.exists() else []
    atomic_write_text(path, json.dumps(before + [{**j, "submitted": time.time()} for j in jobs], indent=2))


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
    t.add_row("shards", f"{len(stats.get('shards', []))} in {stats.get('output')}/{_main_tag(stats.get('stage'))}")
    Console(stderr=False).print(t)


def gate_lines(stats: dict) -> list[str]:
    return [gate_line(stats["quality_gate"])] if stats.get("quality_gate") else []
