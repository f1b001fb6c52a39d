"""Pipeline stages and the registry that lists them.

A stage is one module that declares itself once, as a ``Stage``: its name and help, its CLI options
(each mapped to config overrides or to a keyword of its ``main``), ``main`` (the library call that
does the work and returns the stats its ``stats.json`` holds), ``summary`` (the lines a terminal
shows) and ``plan`` (what it reads and writes inside ``synthweb run``). ``cli.py`` builds its commands
from the registry, ``run.py`` calls ``main`` directly: ``synthweb <stage>`` and the same stage inside
``synthweb run`` run the same code and write the same ``stats.json``.

Adding a stage: a module with ``STAGE = Stage(...)`` and one line in ``REGISTRY`` (or ``register()``
from code). This module imports no stage: they load on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Option:
    """A CLI option of one stage. ``override(value)`` turns it into ``--set`` overrides; without one the
    value goes to ``main`` as the keyword ``dest``."""

    flags: tuple[str, ...]
    help: str
    override: Callable[[Any], list[str]] | None = None
    kwargs: dict = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.kwargs.get("dest") or self.flags[0].lstrip("-").replace("-", "_")


@dataclass
class Call:
    """One call of a stage inside ``synthweb run``: its input, its output folder, extra overrides."""

    input: Path | None
    output: Path
    overrides: list[str] = field(default_factory=list)


@dataclass
class RunView:
    """What a stage's ``plan`` sees of a run: the folder, the config, the stages it runs."""

    out: Path
    cfg: Any
    stages: list[str]

    @staticmethod
    def rows(folder: Path) -> int:
        import pyarrow.parquet as pq

        return sum(pq.read_metadata(f).num_rows for f in folder.glob("*.parquet")) if folder.is_dir() else 0

    def upstream(self, name: str) -> Path:
        stage, tag = subsets()[name]
        return self.out / stage / tag

    def quality_scorer(self) -> list[str]:
        """The override that makes the quality gate score every LLM output and its source with the classifier
        this run trains (FinePhrase logs both scores), unless the config names one or the run trains none."""
        m = self.cfg.quality_gate.meaning
        if (self.cfg.quality_gate.enabled and m.enabled and not m.quality.classifier
                and "train-classifier" in self.stages):
            return [f"quality_gate.meaning.quality.classifier={self.out / 'classifier'}"]
        return []

    def subsets(self) -> dict[str, Path]:
        """The final datasets that exist, after dedup and decontamination when those ran."""
        found = {}
        for name in subsets():
            folder = self.upstream(name)
            for later in refiners():
                if later in self.stages and (self.out / later / name / "data").is_dir():
                    folder = self.out / later / name / "data"
            if self.rows(folder):
                found[name] = folder
        return found


def _no_lines(cfg, stats: dict) -> list[str]:
    return []


@dataclass
class Stage:
    name: str
    help: str  # one line, for `synthweb --help`
    description: str  # for `synthweb <stage> --help`
    main: Callable[..., dict]  # main(cfg, force=False, progress=True, **keywords) -> stats
    summary: Callable[[Any, dict], list[str]] = _no_lines
    options: tuple[Option, ...] = ()
    input_help: str | None = "documents: a file or folder, or a Hub dataset name (sets input.source)"
    output_help: str | None = "output folder (sets run.output)"
    io_in_config: bool = True  # --input/--output set input.source/run.output; else keywords input/output of main
    progress: bool = True  # has --no-progress
    force_help: str | None = "discard what is in --output and start over"  # None: no --force
    config: bool = True  # has --config/--set (else main gets cfg=None)
    positional_input: bool = False  # `synthweb <stage> PATH` works as --input PATH
    needs: tuple[str, ...] = ()  # "input"/"output": required on the command line, with this error:
    required: str | None = None
    plan: Callable[[RunView], list[Call] | str] | None = None  # calls inside `synthweb run` (a str: skipped, why)
    folder: str | None = None  # its folder under run.output (default: its name)
    markers: tuple[str, ...] = ("stats.json",)  # what a finished call writes; stats.json files say "complete"
    # the facts other modules derive from the registry (nothing else keeps a list of them):
    sections: tuple[str, ...] | None = None  # its hash scope: the config sections that shape its rows (None: all)
    main_tag: str = "data"  # the folder of its main output (filter writes kept/ beside removed/)
    funnel: str | None = None  # its row in the report's funnel, by this label
    subset: str | None = None  # the final dataset it makes (a config of the published dataset), by this name
    llm: bool = False  # its rows are written by an LLM (the report's compute, the card's model line)
    card: Callable[[dict, dict, dict], list[str]] | None = None  # card(config, stats, facts): its lines in the card
    # its own config sections: {section: pydantic model}, or one model for a section named after the stage
    settings: dict[str, type] | type | None = None
    check: Callable[[Any], None] | None = None  # a check across sections (raises ValueError naming the keys)
    refines: bool = False  # runs once per final dataset and replaces it downstream (dedup, decontaminate)

    @property
    def run_folder(self) -> str:
        return self.folder or self.name

    @property
    def sections_owned(self) -> dict[str, type]:
        if isinstance(self.settings, dict):
            return self.settings
        return {self.name.replace("-", "_"): self.settings} if self.settings is not None else {}


# name -> "module:attribute" of its Stage, in pipeline order; commands outside `synthweb run` last
REGISTRY: dict[str, str | Stage] = {
    "seeds": "pipeline.stages.seeds:STAGE",
    "annotate": "pipeline.stages.annotate:STAGE",
    "train-classifier": "pipeline.stages.classify:TRAIN",
    "classify": "pipeline.stages.classify:STAGE",
    "filter": "pipeline.stages.classify:FILTER",
    "generate": "pipeline.stages.generate:STAGE",
    "rephrase": "pipeline.stages.rephrase:STAGE",
    "dedup": "pipeline.stages.dedup:STAGE",
    "decontaminate": "pipeline.stages.decontaminate:STAGE",
    "tokenize": "pipeline.train.tokenize:STAGE",
    "ablate": "pipeline.train.ablate:STAGE",
    "report": "pipeline.report:STAGE",
    "infer": "pipeline.stages.infer:STAGE",
    "audit": "pipeline.stages.audit:STAGE",
    "gate": "pipeline.stages.gate:STAGE",
    "train": "pipeline.train.loop:STAGE",
    "publish": "pipeline.stages.publish:STAGE",
    "status": "pipeline.stages.status:STAGE",
}


def configure(stage: Stage, config: str | None, overrides: list[str], input=None, output=None,
              values: dict | None = None) -> tuple[Any, dict]:
    """(config, keywords of ``main``) for one call: the config file, then ``overrides``, then the stage's
    options (as overrides or keywords), then --input/--output. The CLI and ``synthweb run`` both use it."""
    from pipeline.errors import UserError

    if stage.needs and any(not {"input": input, "output": output}[k] for k in stage.needs):
        raise UserError(stage.required or f"{stage.name} needs " + " and ".join(f"--{k}" for k in stage.needs))
    overrides, kw = list(overrides), {}
    for o in stage.options:
        v = (values or {}).get(o.dest)
        if v is None or v == []:
            continue
        if o.override:
            overrides += o.override(v)
        else:
            kw[o.dest] = v
    if stage.io_in_config:
        overrides += [f"input.source={input}"] if input else []
        overrides += [f"run.output={output}"] if output else []
    else:
        kw.update({k: str(v) if v is not None else None for k, v in (("input", input), ("output", output))
                   if getattr(stage, f"{k}_help")})
    return (load_config(config, overrides) if stage.config else None), kw


_MODEL: dict[str, Any] = {}


def config_model() -> type:
    """The whole config: the shared sections (pipeline.config), the LLM's and the quality gate's (beside the
    code that reads them) and each registered stage's own, in pipeline order. Built once per registry."""
    if "model" not in _MODEL:
        from pydantic import create_model, model_validator

        from pipeline import config
        from pipeline.config import Config
        from pipeline.gate_config import QualityGateConfig
        from pipeline.llm.config import LLMConfig

        sections: dict[str, type] = {"llm": LLMConfig, "quality_gate": QualityGateConfig}
        checks = []
        for stage in all_stages():
            for name, model in stage.sections_owned.items():
                if name in Config.model_fields or name in sections:
                    raise ValueError(f"stage {stage.name!r}: config section {name!r} exists already")
                sections[name] = model
            checks += [stage.check] if stage.check else []
        config.STAGES[:] = run_stages()

        def across(cfg):
            for check in checks:
                check(cfg)
            return cfg

        _MODEL["model"] = create_model(
            "Config", __base__=Config, __module__=__name__,
            __validators__={"_across_sections": model_validator(mode="after")(across)},
            **{n: (m, m()) for n, m in sections.items()})
    return _MODEL["model"]


def __getattr__(name: str):
    """``pipeline.stages.Config`` is the whole config model: a config pickled to a worker finds its class here."""
    if name == "Config":
        return config_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_config(path=None, overrides: list[str] | None = None):
    """Load a YAML config (default: configs/default.yaml), apply ``--set`` overrides, validate every section:
    an unknown key, a wrong type or a misspelt section is an error naming the file and line or the --set."""
    from pipeline.config import read_config

    return read_config(config_model(), path, overrides)


def get(name: str) -> Stage:
    ref = REGISTRY[name]
    if isinstance(ref, str):
        module, attr = ref.split(":")
        ref = REGISTRY[name] = getattr(importlib.import_module(module), attr)
    return ref


def all_stages() -> list[Stage]:
    return [get(n) for n in REGISTRY]


def run_stages() -> list[str]:
    """The stages of ``synthweb run``, in order (those with a plan)."""
    return [n for n in REGISTRY if get(n).plan is not None]


def find(name: str | None) -> Stage | None:
    """The registered stage of that name, or None (a stats.json of another tool, a stage since removed)."""
    return get(name) if name in REGISTRY else None


def subsets() -> dict[str, tuple[str, str]]:
    """The final datasets: name -> (the stage folder that makes it, its shard folder)."""
    return {s.subset: (s.run_folder, s.main_tag) for s in all_stages() if s.subset}


def funnel() -> list[tuple[str, str, str]]:
    """The report's funnel: (stage folder, label, shard folder), in pipeline order."""
    return [(s.run_folder, s.funnel, s.main_tag) for s in all_stages() if s.funnel]


def refiners() -> list[str]:
    """The stages that run once per final dataset and replace it downstream, in pipeline order."""
    return [s.run_folder for s in all_stages() if s.refines]


def main_tags() -> tuple[str, ...]:
    """Every folder name a stage keeps its final shards in."""
    return tuple(sorted({s.main_tag for s in all_stages()}))


def unregister(name: str) -> None:
    """Remove a stage added with ``register`` (and its config sections)."""
    REGISTRY.pop(name, None)
    _MODEL.clear()


def register(stage: Stage, after: str | None = None) -> None:
    """Add a stage (a plugin, a test's toy stage); with a plan, it runs in ``synthweb run`` after ``after``."""
    items = [(k, v) for k, v in REGISTRY.items() if k != stage.name]
    at = [k for k, _ in items].index(after) + 1 if after else len(items)
    items.insert(at, (stage.name, stage))
    REGISTRY.clear()
    REGISTRY.update(items)
    _MODEL.clear()  # its sections and its name in run.stages join the config: `--set toy.key=value` works at once
