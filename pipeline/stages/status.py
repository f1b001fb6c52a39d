"""``synthweb status RUN``: where a run stands, stage by stage and job by job.

A stage folder is done when its stats.json says complete. Otherwise each pass (a datatrove executor:
MinHash signatures, topics and personas, the stage's own tasks, the finalize job) is read from its
logging folder: tasks completed out of all, and on Slurm the job id (``_logs/jobs.json``, written at
submission) with its state from ``squeue``. A job gone from the queue with tasks missing failed; the
line names the log of its first failed task.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pipeline.errors import UserError
from pipeline.stages import Stage


class QueueUnavailable(RuntimeError):
    """squeue failed on every try: the jobs' states are unknown (not "gone")."""


def queue_states(job_ids: list[str], tries: int = 5, wait_s: float = 2.0) -> dict[str, str]:
    """{job id or job_task: state} of the jobs still in Slurm's queue ({} without Slurm). A failed squeue
    (slurmctld restarting, a busy controller) is retried; when every try fails this raises
    QueueUnavailable, never {}: an empty answer would read every unfinished job as failed. A job gone
    from the queue gets its final state from sacct where accounting exists (``final_states``)."""
    import shutil
    import time

    if not job_ids or not shutil.which("squeue"):
        return {}
    why = ""
    for i in range(tries):
        try:
            r = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T"], capture_output=True,
                               text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            why = str(e)
        else:
            if r.returncode == 0:
                return dict(line.split(None, 1) for line in r.stdout.splitlines() if line.strip())
            why = (r.stderr or r.stdout).strip().splitlines()[-1] if (r.stderr or r.stdout).strip() else f"exit {r.returncode}"
            if "Invalid job id" in why:  # every id has left the queue (squeue's answer for long-gone jobs)
                return {}
        if i < tries - 1:
            time.sleep(wait_s * (i + 1))
    raise QueueUnavailable(f"squeue failed {tries} times ({why})")


def final_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: final state} from sacct (COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY...);
    {} where the cluster keeps no accounting."""
    import shutil

    if not job_ids or not shutil.which("sacct"):
        return {}
    try:
        r = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State"], capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if r.returncode != 0:
        return {}
    return {a: b.split()[0] for a, b in (line.split("|", 1) for line in r.stdout.splitlines() if "|" in line) if b}


def _done(logging_dir: Path) -> set[int]:
    d = logging_dir / "completions"
    return {int(p.name) for p in d.iterdir() if p.name.isdigit()} if d.is_dir() else set()


def _failed_log(logging_dir: Path, job_id: str | None, ranks: list[int]) -> str:
    for rank in ranks:
        for f in [logging_dir / "slurm_logs" / f"{job_id}_{rank}.out", logging_dir / "logs" / f"task_{rank:05d}.log"]:
            if f.exists():
                return str(f)
    return str(logging_dir / "logs")


def stage_status(folder: Path) -> dict:
    """One stage folder: {"stage", "state": done|running|pending|failed|stopped|unknown|not started, "passes": [...],
    "progress": the live line of an unfinished one (documents read, tasks, an LLM stage's answers)}."""
    s = _stage_status(folder)
    if s["state"] not in ("done", "not started") and (folder / "_logs" / "progress").exists():
        import yaml

        from pipeline.stages.progress import ProgressMonitor

        try:  # the task count of the run in the folder (its resolved config)
            tasks = int(yaml.safe_load((folder / "config.yaml").read_text())["executor"]["tasks"])
        except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
            tasks = len(list((folder / "_logs" / "progress").glob("*.json")))
        s["progress"] = ProgressMonitor(folder / "_logs", None, tasks, enabled=False).line(snapshot=True)
    return s


def _stage_status(folder: Path) -> dict:
    stats = folder / "stats.json"
    if stats.exists():
        st = json.loads(stats.read_text())
        if isinstance(st, dict) and st.get("complete"):
            return {"folder": str(folder), "stage": st.get("stage"), "state": "done",
                    "detail": f"{st.get('records_in', 0):,} records in, {st.get('records_out', 0):,} out"}
    logs = folder / "_logs"
    state = json.loads((logs / "state.json").read_text()) if (logs / "state.json").exists() else {}
    jobs_file = logs / "jobs.json"
    if jobs_file.exists():
        latest: dict[str, dict] = {}
        for j in json.loads(jobs_file.read_text()):  # the last submission of each pass counts
            latest[j["name"]] = j
        ids = [str(j["job_id"]) for j in latest.values() if j.get("job_id") not in (None, -1)]
        try:
            queue = queue_states(ids)
        except QueueUnavailable as e:
            return {"folder": str(folder), "stage": state.get("stage"), "state": "unknown",
                    "detail": f"{e}; Slurm's controller may be restarting: ask again in a minute"}
        final = final_states([i for i in ids if not any(k == i or k.startswith(f"{i}_") for k in queue)])
        passes = []
        for name, j in latest.items():
            d, jid = Path(j["logging_dir"]), str(j.get("job_id"))
            done = _done(d)
            states = {s for k, s in queue.items() if k == jid or k.startswith(f"{jid}_")}
            if len(done) >= j["tasks"] or j.get("job_id") == -1:
                s = "done"
            elif "RUNNING" in states:
                s = "running"
            elif states:
                s = "pending"
            else:
                s = "failed"
            p = {"name": name, "job": jid, "state": s, "tasks_done": len(done), "tasks": j["tasks"]}
            if s == "failed" and final.get(jid):
                p["slurm_state"] = final[jid]
            if s == "failed":
                p["log"] = _failed_log(d, jid, [r for r in range(j["tasks"]) if r not in done])
            passes.append(p)
        order = ("failed", "running", "pending")
        overall = next((o for o in order if any(p["state"] == o for p in passes)), "done")
        return {"folder": str(folder), "stage": state.get("stage"), "state": overall, "passes": passes}
    if state:  # a local run: running while its lock is held, failed (a task raised), else stopped (a rerun resumes)
        done = _done(logs)
        if _locked(folder):
            return {"folder": str(folder), "stage": state.get("stage"), "state": "running",
                    "detail": f"{len(done)} tasks complete"}
        if state.get("failed"):
            f = state["failed"]
            return {"folder": str(folder), "stage": state.get("stage"), "state": "failed",
                    "detail": f"{len(done)} tasks complete; failed at {f.get('at')}: {f.get('error')}; fix the cause "
                              "(see the log) and rerun the same command: finished tasks are kept",
                    "log": f.get("log")}
        return {"folder": str(folder), "stage": state.get("stage"), "state": "stopped",
                "detail": f"{len(done)} tasks complete; rerun the same command to resume"}
    return {"folder": str(folder), "stage": None, "state": "not started"}


def _locked(folder: Path) -> bool:
    import fcntl
    import os

    lock = folder / ".synthweb.lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def status(run: Path) -> list[dict]:
    """Every stage folder under a run folder (or the one folder given)."""
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"status: {run} is not a folder (give a run folder or a stage's --output)")
    if not (run / "run.json").exists() and ((run / "_logs" / "state.json").exists() or (run / "stats.json").exists()):
        return [stage_status(run)]
    folders = sorted({p.parent.parent for p in run.glob("*/_logs/state.json")} | {p.parent for p in run.glob("*/stats.json")}
                     | {p.parent.parent for p in run.glob("*/*/_logs/state.json")} | {p.parent for p in run.glob("*/*/stats.json")})
    folders = [f for f in folders if not any(part.startswith("_") for part in f.relative_to(run).parts)]
    graph = _graph(run)
    if not folders and not graph:
        raise UserError(f"status: {run} holds no stage output (no stats.json or _logs/state.json under it)")
    return graph + [stage_status(f) for f in folders]


def _graph(run: Path) -> list[dict]:
    """The stage jobs of `synthweb run` on Slurm (run.json): queued ones by their squeue state, the others
    by what the stage's runner recorded; a job that left the queue without recording was cancelled
    (scancel, or a failed stage before it)."""
    m = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
    graph = m.get("graph", [])
    try:
        queue = queue_states([str(g["job"]) for g in graph])
    except QueueUnavailable as e:
        return [{"folder": str(run), "stage": f"run job {g['stage']}", "state": "unknown", "detail": f"job {g['job']}; {e}"}
                for g in graph]
    out = []
    for g in graph:
        entry = m.get("stages", {}).get(g["stage"], {})
        recorded = entry.get("status") if str(entry.get("job")) == str(g["job"]) else None  # not an earlier run's
        q = queue.get(str(g["job"]), "")
        state = (q.lower() if q else "done" if recorded in ("ran", "reused", "skipped") else "failed" if recorded == "failed"
                 else "cancelled")
        out.append({"folder": str(run), "stage": f"run job {g['stage']}", "state": state,
                    "detail": f"job {g['job']}; log {g['log']}"})
    return out


def main(cfg, force: bool = False, progress: bool = True, input: str | None = None, output: str | None = None) -> dict:
    if not input:
        raise UserError("status needs a run folder: synthweb status RUN (or --input RUN)")
    return {"stages": status(Path(input))}


def lines(cfg, r: dict) -> list[str]:
    out = []
    for s in r["stages"]:
        out.append(f"{s['folder']}: {s.get('stage') or '?'}: {s['state']}" + (f" ({s['detail']})" if s.get("detail") else ""))
        if s.get("progress"):
            out.append(f"  progress: {s['progress']}")
        for p in s.get("passes", []):
            out.append(f"  {p['name']:<16} job {p['job']:<8} {p['state']:<8} {p['tasks_done']}/{p['tasks']} tasks"
                       + (f" (Slurm: {p['slurm_state']})" if p.get("slurm_state") else "")
                       + (f"; log: {p['log']}" if p.get("log") else ""))
    return out


STAGE = Stage(
    name="status", help="a run folder -> each stage and job: done, running, pending, failed (with its log)",
    description="Read every stage folder under RUN (a `synthweb run` folder or one stage's --output) and print its "
    "state; for `synthweb run` on Slurm each stage's job; for Slurm submissions each job (preparation passes, the stage's tasks, the finalize job) with its "
    "state from squeue and the tasks done, and the log of the first failed task.",
    main=main, summary=lines, io_in_config=False, progress=False, force_help=None, config=False,
    input_help="the run folder, or one stage's --output", output_help=None, positional_input=True,
)
