"""``synthweb run``: raw web pages to an ablation verdict and a report, one stage after another.

Every stage of the registry with a ``plan`` runs in order, in this process, as the same library call
its CLI command makes (``Stage.main``), with the same config file and --set overrides, reading the
folder the stage before it wrote under ``run.output``. A stage already
complete under the same config is reused (each stage checks its own config hash), so a rerun after a
crash or a kill resumes at the first unfinished stage, and every stage can still be run alone with
the command ``run.json`` records for it.

The order follows the data: the quality classifier is learned (annotate -> train-classifier) and
applied (classify -> filter) before generation and rephrasing, because rephrasing routes pages by
their score (Nemotron-CC) and a multi-teacher judge may be that classifier.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from pipeline.errors import StageFailed, StaleOutput, UserError
from pipeline.io.writer import atomic_write_text
from pipeline.logs import keep_warnings_between_stages
from pipeline.stages import Call, RunView, Stage, configure, get, run_stages


def _markers(folder: Path, stage) -> dict[str, str]:
    """The files a stage writes when it finishes, with a hash of their bytes: equal before and after a
    call means the stage reused its output (each stage decides that itself, from its config hash)."""
    import hashlib

    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for pat in stage.markers for f in sorted(folder.glob(pat))}


def _complete(folder: Path, stage) -> bool:
    """Whether a stage's output looks finished (the stage itself still checks its config hash)."""
    files = [Path(f) for f in _markers(folder, stage)]
    return bool(files) and all(json.loads(f.read_text()).get("complete") for f in files if f.name == "stats.json")


DRIVER = "SYNTHWEB_RUN_DRIVER"  # set in a cluster job (Slurm stage job, Ray task) that runs the Runner itself
ONLY = "SYNTHWEB_RUN_STAGE"  # a Slurm stage job: the one stage it runs


class Runner:
    def __init__(self, config: str | None, overrides: list[str], output: str | None = None, force: bool = False,
                 until: str | None = None, progress: bool = True, log=print):
        from pipeline.stages import load_config

        self.config, self.overrides = config, list(overrides)
        if output:
            self.overrides.append(f"run.output={output}")
        self.cfg = load_config(config, self.overrides)  # a bad config fails here, before any stage
        # on Slurm, `synthweb run` submits one job per stage, chained afterok; each runs this same Runner (DRIVER
        # set) for its stage only (ONLY): it plans from what the stages before wrote, submits and waits
        self.driver = self.cfg.executor.kind == "slurm" and os.environ.get(DRIVER) != "1"
        self.only = os.environ.get(ONLY) if os.environ.get(DRIVER) == "1" else None
        # on Ray, the same Runner runs as one task on the cluster and this process waits for it, so stages
        # that work in the caller (train-classifier, tokenize, ablate, report) never run on the launching machine
        self.on_ray = self.cfg.executor.kind == "ray" and os.environ.get(DRIVER) != "1"
        self.out = Path(self.cfg.run.output)
        self.force, self.progress, self.log = force, progress, log
        order = run_stages()
        stages = self.cfg.run.stages or order
        if until:
            if until not in order:
                raise UserError(f"--until {until!r}: not a stage (stages: {', '.join(order)})")
            stages = [s for s in stages if order.index(s) <= order.index(until)]
        self.stages = stages
        self.manifest_path = self.out / "run.json"
        # --force starts run.json over, once: a Slurm stage job keeps the one its submission wrote
        fresh = force and not self.only
        self.manifest = json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() and not fresh else {}

    def _command(self, stage: Stage, call: Call) -> str:
        """The same call as one command line (run.json keeps it, to run the stage alone)."""
        argv = [stage.name]
        argv += ["--input", str(call.input)] if call.input is not None and stage.input_help else []
        argv += ["--output", str(call.output)] if stage.output_help and stage.name != "report" else []
        if stage.config:
            argv += ["--config", self.config] if self.config else []
            argv += [a for o in self.overrides + call.overrides if not o.startswith("run.output=") for a in ("--set", o)]
        argv += ["--force"] if self.force and stage.force_help else []
        argv += ["--no-progress"] if stage.progress and not self.progress else []
        return "synthweb " + shlex.join(argv)

    def _call(self, stage: Stage, call: Call) -> None:
        """One call of a stage, as a library call (the CLI makes the same one)."""
        self._commands.append(self._command(stage, call))
        try:
            cfg, kw = configure(stage, self.config, self.overrides + call.overrides, call.input, call.output)
            try:
                stats = stage.main(cfg, force=self.force, progress=self.progress and stage.progress, **kw)
            except StaleOutput as e:  # made from an input that changed (a stage before it was redone): redo it
                self.log(f"run: {stage.name}: {str(e).split('; its ')[0]}: redoing it")
                self._commands[-1] += " --force"
                stats = stage.main(cfg, force=True, progress=self.progress and stage.progress, **kw)
            if stats.get("submitted"):  # Slurm: wait for its jobs, then the same call adds what a finished stage adds
                self._wait(stage.name, Path(call.output))
                stats = stage.main(cfg, force=False, progress=False, **kw)
        except UserError as e:
            raise UserError(f"run: stage {stage.name}: {e}\n  (fix it and rerun `synthweb run`: completed stages are "
                            "reused)") from None
        except StageFailed as e:
            raise StageFailed(f"run: stage {stage.name}: {e}\n  rerun `synthweb run` to resume, or the stage alone: "
                              f"{self._commands[-1]}") from None
        for line in stage.summary(cfg, stats):
            self.log(line)

    def _wait(self, name: str, output: Path, poll: float = 3) -> None:
        from pipeline.stages.status import stage_status

        self.log(f"run: {name}: waiting for its Slurm jobs (synthweb status {output})")
        unknown_since = None
        while True:
            s = stage_status(output)
            if s["state"] == "unknown":  # squeue failed on every retry: the controller is away, the jobs may be fine
                unknown_since = unknown_since or time.time()
                if time.time() - unknown_since > 1800:
                    raise StageFailed(f"Slurm's queue could not be read for 30 min ({s.get('detail')}); the jobs may "
                                      f"still run: synthweb status {output}, then rerun to resume")
                time.sleep(poll)
                continue
            unknown_since = None
            if s["state"] == "done" and (output / "stats.json").exists():
                return
            if s["state"] == "failed":
                bad = next((p for p in s.get("passes", []) if p["state"] == "failed"), {})
                raise StageFailed(f"a job failed: {bad.get('name')} (job {bad.get('job')}, {bad.get('tasks_done')}/"
                                  f"{bad.get('tasks')} tasks; log: {bad.get('log')})")
            time.sleep(poll)

    def submit_graph(self) -> dict:
        """Slurm: one small job per stage (one CPU, executor.slurm.driver_time), each `afterok` the one
        before, and return. Each runs this Runner for its stage when it starts: it plans from what the
        stages before it wrote (which datasets have rows, which are tokenized), submits the stage's jobs
        and waits for them. A failed stage cancels the jobs after it (--kill-on-invalid-dep)."""
        from pipeline.executor import check_executor

        check_executor(self.cfg.executor)
        s = self.cfg.executor.slurm
        logs = self.out / "_logs"
        logs.mkdir(parents=True, exist_ok=True)
        from pipeline.stages.status import QueueUnavailable, queue_states

        try:
            queued = sorted(queue_states([str(g["job"]) for g in self.manifest.get("graph", [])]))
        except QueueUnavailable as e:
            raise UserError(f"run: cannot read Slurm's queue ({e}); try again when `squeue` answers") from None
        if queued:
            raise UserError(f"{self.out}: jobs of an earlier `synthweb run` are still queued ({', '.join(queued)}); wait "
                            f"for them (synthweb status {self.out}) or scancel them first")
        self._refuse_orphaned_stage_jobs(queue_states)
        argv = [sys.executable, "-m", "pipeline.cli", "run", "--output", str(self.out), "--no-progress"]
        argv += ["--config", self.config] if self.config else []
        argv += [a for o in self.overrides if not o.startswith("run.output=") for a in ("--set", o)]
        argv += ["--until", self.stages[-1]] if self.stages[-1] != run_stages()[-1] else []
        argv += ["--force"] if self.force else []
        graph: list[dict] = []
        try:
            for stage in self.stages:
                script = "\n".join([
                    "#!/bin/bash", f"#SBATCH --job-name={s.job_name}-run-{stage}", f"#SBATCH --partition={s.partition}",
                    "#SBATCH --cpus-per-task=1", f"#SBATCH --mem-per-cpu={s.mem_per_cpu_gb}G", f"#SBATCH --time={s.driver_time}",
                    f"#SBATCH --qos={s.qos}", f"#SBATCH --output={logs}/run-{stage}-%j.out",
                    # the first job is held until run.json names every job (its runner reads it)
                    *([f"#SBATCH --dependency=afterok:{graph[-1]['job']}", "#SBATCH --kill-on-invalid-dep=yes"] if graph
                      else ["#SBATCH --hold"]),
                    *(f"#SBATCH --{k}={v}" for k, v in s.sbatch_args.items()),
                    s.env_command or "", f"cd {shlex.quote(os.getcwd())}", f"export {DRIVER}=1 {ONLY}={stage}",
                    shlex.join(argv), ""])
                path = logs / f"run-{stage}.sbatch"
                path.write_text(script)
                r = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
                if r.returncode != 0:
                    raise UserError(f"run: sbatch refused the job of stage {stage}: "
                                    f"{(r.stderr or r.stdout).strip().splitlines()[-1]}")
                job = r.stdout.strip().split(";")[0]
                graph.append({"stage": stage, "job": job, "log": str(logs / f"run-{stage}-{job}.out")})
        except BaseException:
            if graph:
                subprocess.run(["scancel", *[g["job"] for g in graph]], capture_output=True)
            raise
        m = self.manifest
        m.update(config=self.config, overrides=self.overrides, stages_planned=self.stages, graph=graph, complete=False)
        m.setdefault("stages", {})
        atomic_write_text(self.manifest_path, json.dumps(m, indent=2))
        r = subprocess.run(["scontrol", "release", graph[0]["job"]], capture_output=True, text=True)
        if r.returncode != 0:  # held forever otherwise: cancel what was submitted and say why
            subprocess.run(["scancel", *[g["job"] for g in graph]], capture_output=True)
            raise UserError(f"run: scontrol release {graph[0]['job']} failed ({(r.stderr or r.stdout).strip()[-200:]}); "
                            "the stage jobs were cancelled: rerun `synthweb run`")
        self.log(f"run: submitted {len(graph)} stage jobs on partition {s.partition}, each after the one before: "
                 + " -> ".join(f"{g['stage']} {g['job']}" for g in graph))
        self.log(f"run: each submits its stage's jobs and waits for them; follow the run with: synthweb status {self.out}")
        return m

    def _refuse_orphaned_stage_jobs(self, queue_states) -> None:
        """A stage's driver job that died (scancel'd, timed out, its node lost) leaves its stage's jobs
        running with nobody waiting for them; a new graph would start the same stage again beside them.
        Refuse, naming the stage, its dead driver and the jobs still queued."""
        from pipeline.stages.status import QueueUnavailable

        drivers = {g["stage"]: g["job"] for g in self.manifest.get("graph", [])}
        for jobs_file in sorted(self.out.glob("**/_logs/jobs.json")):
            ids = sorted({str(j["job_id"]) for j in json.loads(jobs_file.read_text()) if j.get("job_id") not in (None, -1)})
            try:
                queued = sorted({k.split("_")[0] for k in queue_states(ids)})
            except QueueUnavailable as e:
                raise UserError(f"run: cannot read Slurm's queue ({e}); try again when `squeue` answers") from None
            if queued:
                folder = jobs_file.parent.parent
                stage = json.loads((jobs_file.parent / "state.json").read_text()).get("stage", "?") \
                    if (jobs_file.parent / "state.json").exists() else "?"
                driver = drivers.get(stage)
                raise UserError(f"run: the driver of stage {stage}" + (f" (job {driver})" if driver else "")
                                + f" is gone but its jobs still run ({', '.join(queued)}) in {folder}: wait for them "
                                f"(synthweb status {self.out}) or cancel them (scancel {' '.join(queued)}), then rerun")

    def run_on_ray(self) -> dict:
        """Ray: this Runner as one task on the cluster (one CPU); its stages submit their own tasks from
        there. Its log lines stream back here; a stage's error is raised here as the same one-line error.
        Paths are resolved here and the task works in this directory: the nodes share a filesystem."""
        import ray

        from pipeline.executor import check_executor, ray_init

        check_executor(self.cfg.executor)
        ray_init(self.cfg.executor, log_to_driver=True)
        cwd, out = os.getcwd(), str(self.out.resolve())
        overrides = [o for o in self.overrides if not o.startswith("run.output=")] + [f"run.output={out}"]
        until = self.stages[-1] if self.stages[-1] != run_stages()[-1] else None

        @ray.remote(num_cpus=1, max_retries=0)
        def synthweb_run(config, overrides, until, force, cwd):
            os.chdir(cwd)
            os.environ[DRIVER] = "1"
            return Runner(config, overrides, force=force, until=until, progress=False).run()

        self.log(f"run: on the Ray cluster at {self.cfg.executor.ray.address} (this process waits; Ctrl-C stops the run, "
                 "a rerun resumes)")
        try:
            return ray.get(synthweb_run.remote(self.config, overrides, until, self.force, cwd))
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, (UserError, StageFailed)):
                raise type(cause)(str(cause)) from None
            raise StageFailed(f"run: the Ray task failed: {str(cause or e).strip().splitlines()[-1]}") from None

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict:
        if self.driver:
            return self.submit_graph()
        if self.on_ray:
            return self.run_on_ray()
        keep_warnings_between_stages()
        self.out.mkdir(parents=True, exist_ok=True)
        m = self.manifest
        m.setdefault("stages", {})
        m.update(config=self.config, overrides=self.overrides, stages_planned=self.stages)
        view = RunView(self.out, self.cfg, self.stages)
        for i, name in enumerate(self.stages, 1):
            if self.only and name != self.only:
                continue
            stage = get(name)
            folder = self.out / stage.run_folder
            was_complete = not self.force and _complete(folder, stage)
            before = _markers(folder, stage)
            self.log(f"\n=== run {i}/{len(self.stages)}: {name}" + (" (complete; reused if its config is unchanged)"
                                                                      if was_complete else ""))
            self._commands: list[str] = []
            t0 = time.time()
            prev = m["stages"].get(name, {})
            try:
                plan = stage.plan(view)
                if isinstance(plan, str):
                    self.log(f"run: {name}: {plan}")
                    status = "skipped"
                else:
                    for call in plan:
                        self._call(stage, call)
                    status = "reused" if before and before == _markers(folder, stage) else "ran"
            except BaseException as e:
                m["stages"][name] = {**prev, "status": "failed", "error": str(e).splitlines()[0] if str(e) else type(e).__name__,
                                     "commands": self._commands, **({"job": os.environ.get("SLURM_JOB_ID")} if self.only else {})}
                atomic_write_text(self.manifest_path, json.dumps(m, indent=2))
                raise
            wall = round(time.time() - t0, 2)
            # ran_wall_s: the time of the call that did the work (the report's time per stage)
            m["stages"][name] = {"status": status, "wall_s": wall, "commands": self._commands,
                                 "ran_wall_s": wall if status == "ran" else prev.get("ran_wall_s"),
                                 **({"job": os.environ.get("SLURM_JOB_ID")} if self.only else {})}
            atomic_write_text(self.manifest_path, json.dumps(m, indent=2))
        if not self.only or self.only == self.stages[-1]:
            m["complete"] = self.stages[-1] == run_stages()[-1]
        atomic_write_text(self.manifest_path, json.dumps(m, indent=2))
        return m
