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

from pipeline.errors import StageFailed, UserError
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


DRIVER = "SYNTHWEB_RUN_DRIVER"


class Runner:
    def __init__(self, config: str | None, overrides: list[str], output: str | None = None, force: bool = False,
                 until: str | None = None, progress: bool = True, log=print):
        from pipeline.config import load_config

        self.config, self.overrides = config, list(overrides)
        if output:
            self.overrides.append(f"run.output={output}")
        self.cfg = load_config(config, self.overrides)  # a bad config fails here, before any stage
        # on Slurm, `synthweb run` submits a driver job that runs this same Runner (DRIVER set): it submits each
        # stage's jobs and waits for them before the next stage, whose plan depends on what the last one wrote
        self.driver = self.cfg.executor.kind == "slurm" and os.environ.get(DRIVER) != "1"
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
        self.manifest = json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() and not force else {}

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
            stats = stage.main(cfg, force=self.force, progress=self.progress and stage.progress, **kw)
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
        while True:
            s = stage_status(output)
            if s["state"] == "done" and (output / "stats.json").exists():
                return
            if s["state"] == "failed":
                bad = next((p for p in s.get("passes", []) if p["state"] == "failed"), {})
                raise StageFailed(f"a job failed: {bad.get('name')} (job {bad.get('job')}, {bad.get('tasks_done')}/"
                                  f"{bad.get('tasks')} tasks; log: {bad.get('log')})")
            time.sleep(poll)

    def submit_driver(self) -> dict:
        """Slurm: one small job that runs `synthweb run` (this Runner) on the cluster and waits there."""
        from pipeline.executor import check_executor

        check_executor(self.cfg.executor)
        s = self.cfg.executor.slurm
        logs = self.out / "_logs"
        logs.mkdir(parents=True, exist_ok=True)
        prev = self.manifest.get("driver_job")
        if prev:
            q = subprocess.run(["squeue", "-h", "-j", str(prev), "-o", "%T"], capture_output=True, text=True).stdout.strip()
            if q:
                raise UserError(f"{self.out}: the synthweb run driver job {prev} is {q.lower()}; wait for it "
                                f"(synthweb status {self.out}) or scancel it first")
        argv = [sys.executable, "-m", "pipeline.cli", "run", "--output", str(self.out), "--no-progress"]
        argv += ["--config", self.config] if self.config else []
        argv += [a for o in self.overrides if not o.startswith("run.output=") for a in ("--set", o)]
        argv += ["--until", self.stages[-1]] if self.stages[-1] != run_stages()[-1] else []
        argv += ["--force"] if self.force else []
        script = "\n".join([
            "#!/bin/bash", f"#SBATCH --job-name={s.job_name}-run", f"#SBATCH --partition={s.partition}",
            "#SBATCH --cpus-per-task=1", f"#SBATCH --mem-per-cpu={s.mem_per_cpu_gb}G", f"#SBATCH --time={s.driver_time}",
            f"#SBATCH --qos={s.qos}", f"#SBATCH --output={logs}/run-driver-%j.out",
            *(f"#SBATCH --{k}={v}" for k, v in s.sbatch_args.items()),
            s.env_command or "", f"cd {shlex.quote(os.getcwd())}", f"export {DRIVER}=1", shlex.join(argv), ""])
        path = logs / "run-driver.sbatch"
        path.write_text(script)
        r = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            raise UserError(f"run: sbatch refused the driver job: {(r.stderr or r.stdout).strip().splitlines()[-1]}")
        job = r.stdout.strip().split(";")[0]
        m = self.manifest
        m.update(config=self.config, overrides=self.overrides, stages_planned=self.stages, driver_job=job,
                 driver_log=str(logs / f"run-driver-{job}.out"), complete=False)
        m.setdefault("stages", {})
        atomic_write_text(self.manifest_path, json.dumps(m, indent=2))
        self.log(f"run: submitted the driver job {job} on partition {s.partition}; it submits each stage and waits "
                 f"for its jobs (log {m['driver_log']}); follow it with: synthweb status {self.out}")
        return m

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict:
        if self.driver:
            return self.submit_driver()
        keep_warnings_between_stages()
        self.out.mkdir(parents=True, exist_ok=True)
        m = self.manifest
        m.setdefault("stages", {})
        m.update(config=self.config, overrides=self.overrides, stages_planned=self.stages)
        view = RunView(self.out, self.cfg, self.stages)
        for i, name in enumerate(self.stages, 1):
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
                                     "commands": self._commands}
                atomic_write_text(self.manifest_path, json.dumps(m, indent=2))
                raise
            wall = round(time.time() - t0, 2)
            # ran_wall_s: the time of the call that did the work (the report's time per stage)
            m["stages"][name] = {"status": status, "wall_s": wall, "commands": self._commands,
                                 "ran_wall_s": wall if status == "ran" else prev.get("ran_wall_s")}
            atomic_write_text(self.manifest_path, json.dumps(m, indent=2))
        m["complete"] = self.stages[-1] == run_stages()[-1]
        atomic_write_text(self.manifest_path, json.dumps(m, indent=2))
        return m
