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
import shlex
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


class Runner:
    def __init__(self, config: str | None, overrides: list[str], output: str | None = None, force: bool = False,
                 until: str | None = None, progress: bool = True, log=print):
        from pipeline.config import load_config

        self.config, self.overrides = config, list(overrides)
        if output:
            self.overrides.append(f"run.output={output}")
        self.cfg = load_config(config, self.overrides)  # a bad config fails here, before any stage
        if self.cfg.executor.kind == "slurm":  # a stage returns once sbatch took its jobs: the next would read nothing
            raise UserError("synthweb run chains stages in this process, and a Slurm stage returns when its jobs are "
                            "submitted; run the stages one by one (each prints when its finalize job is queued, and "
                            "`squeue` shows it), or run `synthweb run` inside an allocation with executor.kind local")
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
        except UserError as e:
            raise UserError(f"run: stage {stage.name}: {e}\n  (fix it and rerun `synthweb run`: completed stages are "
                            "reused)") from None
        except StageFailed as e:
            raise StageFailed(f"run: stage {stage.name}: {e}\n  rerun `synthweb run` to resume, or the stage alone: "
                              f"{self._commands[-1]}") from None
        for line in stage.summary(cfg, stats):
            self.log(line)

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict:
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
