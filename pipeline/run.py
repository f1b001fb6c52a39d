"""``synthweb run``: raw web pages to an ablation verdict and a report, one stage after another.

Every stage is the ordinary CLI command, run in this process with the same config file and --set
overrides, reading the folder the stage before it wrote under ``run.output``. A stage already
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

import pyarrow.parquet as pq

from pipeline.errors import StageFailed, UserError
from pipeline.io.writer import atomic_write_text
from pipeline.logs import keep_warnings_between_stages
from pipeline.registry import STAGES, SUBSETS


def _rows(folder: Path) -> int:
    return sum(pq.read_metadata(f).num_rows for f in folder.glob("*.parquet")) if folder.is_dir() else 0


MARKERS = {"train-classifier": ("config.json", "metrics.json"), "tokenize": ("*/tokens.json",),
           "ablate": ("results.json",), "dedup": ("*/stats.json",), "decontaminate": ("*/stats.json",)}


def _markers(folder: Path, stage: str) -> dict[str, str]:
    """The files a stage writes when it finishes, with a hash of their bytes: equal before and after a
    call means the stage reused its output (each stage decides that itself, from its config hash)."""
    import hashlib

    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for pat in MARKERS.get(stage, ("stats.json",))
            for f in sorted(folder.glob(pat))}


def _complete(folder: Path, stage: str) -> bool:
    """Whether a stage's output looks finished (the stage itself still checks its config hash)."""
    files = [Path(f) for f in _markers(folder, stage)]
    if stage in ("train-classifier", "tokenize", "ablate"):
        return bool(files)
    return bool(files) and all(json.loads(f.read_text()).get("complete") for f in files)


class Runner:
    def __init__(self, config: str | None, overrides: list[str], output: str | None = None, force: bool = False,
                 until: str | None = None, progress: bool = True, log=print, call_stage=None):
        """``call_stage(argv) -> exit code`` runs one stage command (the CLI passes its own dispatcher, so
        this module does not import the layer above it)."""
        from pipeline.config import load_config

        if call_stage is None:
            raise TypeError("Runner needs call_stage, e.g. pipeline.cli.call_stage")
        self.call_stage = call_stage
        self.config, self.overrides = config, list(overrides)
        if output:
            self.overrides.append(f"run.output={output}")
        self.cfg = load_config(config, self.overrides)  # a bad config fails here, before any stage
        self.out = Path(self.cfg.run.output)
        self.force, self.progress, self.log = force, progress, log
        stages = self.cfg.run.stages or list(STAGES)
        if until:
            if until not in STAGES:
                raise UserError(f"--until {until!r}: not a stage (stages: {', '.join(STAGES)})")
            stages = [s for s in stages if STAGES.index(s) <= STAGES.index(until)]
        self.stages = stages
        self.manifest_path = self.out / "run.json"
        self.manifest = json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() and not force else {}

    # ------------------------------------------------------------------ helpers

    def _base(self) -> list[str]:
        args = ["--config", self.config] if self.config else []
        for o in self.overrides:
            if not o.startswith("run.output="):
                args += ["--set", o]
        return args

    def _cli(self, stage: str, args: list[str], progress: bool = True) -> None:
        argv = [stage, *args, *self._base()]
        if self.force:
            argv.append("--force")
        if progress and not self.progress:
            argv.append("--no-progress")
        self._commands.append("synthweb " + shlex.join(argv))
        try:
            code = self.call_stage(argv)
        except UserError as e:
            raise UserError(f"run: stage {stage}: {e}\n  (fix it and rerun `synthweb run`: completed stages are reused)") from None
        if code:
            raise StageFailed(f"run: stage {stage} exited {code}; rerun `synthweb run` to resume, or the stage alone: "
                              f"{self._commands[-1]}")

    def subsets(self) -> dict[str, Path]:
        """The final datasets that exist, after dedup and decontamination when those ran."""
        found = {}
        for name, (stage, tag) in SUBSETS.items():
            folder = self.out / stage / tag
            if "dedup" in self.stages and (self.out / "dedup" / name / "data").is_dir():
                folder = self.out / "dedup" / name / "data"
            if "decontaminate" in self.stages and (self.out / "decontaminate" / name / "data").is_dir():
                folder = self.out / "decontaminate" / name / "data"
            if _rows(folder):
                found[name] = folder
        return found

    def _upstream(self, name: str) -> Path:
        stage, tag = SUBSETS[name]
        return self.out / stage / tag

    # ------------------------------------------------------------------ stages

    def stage_seeds(self):
        self._cli("seeds", ["--output", str(self.out / "seeds")])

    def stage_annotate(self):
        self._cli("annotate", ["--input", str(self.out / "seeds" / "data"), "--output", str(self.out / "annotate")])

    def stage_train_classifier(self):
        self._cli("train-classifier", ["--input", str(self.out / "annotate" / "data"),
                                       "--output", str(self.out / "classifier")], progress=False)

    def stage_classify(self):
        self._cli("classify", ["--input", str(self.out / "seeds" / "data"), "--classifier", str(self.out / "classifier"),
                               "--output", str(self.out / "classify")])

    def stage_filter(self):
        self._cli("filter", ["--input", str(self.out / "classify" / "data"), "--output", str(self.out / "filter")])

    def stage_generate(self):
        extra = []
        j = self.cfg.generate.judge
        if self.cfg.generate.teachers and j.kind == "classifier" and not j.classifier:
            extra = ["--set", f"generate.judge.classifier={self.out / 'classifier'}"]
        self._cli("generate", ["--input", str(self.out / "seeds" / "data"), "--output", str(self.out / "generate"), *extra])

    def stage_rephrase(self):
        src = self.out / "classify" / "data"  # scored pages: rephrasing routes them by quality
        if not src.is_dir():
            src = self.out / "seeds" / "data"
        self._cli("rephrase", ["--input", str(src), "--output", str(self.out / "rephrase")])

    def _per_subset(self, stage: str, source) -> None:
        done = 0
        for name in SUBSETS:
            src = source(name)
            if not _rows(src):
                self.log(f"run: {stage}: {name} has no rows ({src}); skipped")
                continue
            self._cli(stage, ["--input", str(src), "--output", str(self.out / stage / name)])
            done += 1
        if not done:
            raise UserError(f"run: {stage}: no dataset has rows to process (textbooks, rephrased and filtered-web are empty)")

    def stage_dedup(self):
        self._per_subset("dedup", self._upstream)

    def stage_decontaminate(self):
        if not self.cfg.decontaminate.benchmarks:
            self.log("run: decontaminate: decontaminate.benchmarks is empty; skipped (name benchmark files or "
                     "hf:NAME:SPLIT to check the data against them)")
            return "skipped"

        def src(name):
            d = self.out / "dedup" / name / "data"
            return d if "dedup" in self.stages and d.is_dir() else self._upstream(name)

        self._per_subset("decontaminate", src)

    def stage_tokenize(self):
        for name, folder in self.subsets().items():
            self._cli("tokenize", ["--input", str(folder), "--output", str(self.out / "tokens" / name)], progress=False)

    def stage_ablate(self):
        datasets = self.cfg.ablate.datasets
        extra = []
        if not datasets:
            toks = {n: self.out / "tokens" / n for n in self.subsets() if (self.out / "tokens" / n / "tokens.json").exists()}
            if len(toks) < 2:
                self.log(f"run: ablate: {len(toks)} tokenized dataset(s) ({', '.join(toks) or 'none'}); an ablation "
                         "compares two or more; skipped")
                return "skipped"
            extra = ["--set", "ablate.datasets=" + json.dumps([{"name": n, "path": str(p)} for n, p in toks.items()])]
        self._cli("ablate", ["--output", str(self.out / "ablate"), *extra], progress=False)

    def stage_report(self):
        from pipeline.report import write_report

        path = write_report(self.out)
        self._commands.append(f"synthweb report --input {shlex.quote(str(self.out))}")
        self.log(f"run: report: {path}")

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict:
        keep_warnings_between_stages()
        self.out.mkdir(parents=True, exist_ok=True)
        folders = {"train-classifier": "classifier", "tokenize": "tokens", "report": "."}
        m = self.manifest
        m.setdefault("stages", {})
        m.update(config=self.config, overrides=self.overrides, stages_planned=self.stages)
        for i, stage in enumerate(self.stages, 1):
            folder = self.out / folders.get(stage, stage)
            was_complete = not self.force and stage != "report" and _complete(folder, stage)
            before = _markers(folder, stage) if stage != "report" else {}
            self.log(f"\n=== run {i}/{len(self.stages)}: {stage}" + (" (complete; reused if its config is unchanged)"
                                                                       if was_complete else ""))
            self._commands: list[str] = []
            t0 = time.time()
            prev = m["stages"].get(stage, {})
            try:
                status = getattr(self, "stage_" + stage.replace("-", "_"))()
                status = status or ("reused" if before and before == _markers(folder, stage) else "ran")
            except BaseException as e:
                m["stages"][stage] = {**prev, "status": "failed", "error": str(e).splitlines()[0] if str(e) else type(e).__name__,
                                      "commands": self._commands}
                atomic_write_text(self.manifest_path, json.dumps(m, indent=2))
                raise
            wall = round(time.time() - t0, 2)
            # ran_wall_s: the time of the call that did the work (the report's time per stage)
            m["stages"][stage] = {"status": status, "wall_s": wall, "commands": self._commands,
                                  "ran_wall_s": wall if status == "ran" else prev.get("ran_wall_s")}
            atomic_write_text(self.manifest_path, json.dumps(m, indent=2))
        m["complete"] = self.stages[-1] == STAGES[-1]
        atomic_write_text(self.manifest_path, json.dumps(m, indent=2))
        return m
