"""A stage is one module plus one registry line: a toy stage defined here, registered from this file,
runs alone through the CLI and inside `synthweb run` with the same stats.json (no other file touched)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from datatrove.pipeline.base import PipelineStep

from pipeline import cli
from pipeline.config import Strict
from pipeline.stages import Call, Stage, register
from pipeline.stages.base import run_stage
from tests.conftest import read_rows, real_pages


class WordcountConfig(Strict):
    """The toy stage's own config section (`wordcount:` in a config, `--set wordcount.min_words=5`)."""

    min_words: int = 0


class CountWords(PipelineStep):
    name = "🔢 count words"

    def __init__(self, min_words: int):
        super().__init__()
        self.min_words = min_words

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            doc.metadata["n_words"] = len(doc.text.split())
            doc.metadata["long"] = doc.metadata["n_words"] >= self.min_words
            self.stat_update("documents")
            yield doc


def build(ctx) -> list:
    return [ctx.task_start(), ctx.reader(), ctx.progress(), CountWords(ctx.cfg.wordcount.min_words),
            ctx.writer("data", "main", [pa.field("n_words", pa.int32()), pa.field("long", pa.bool_())])]


def main(cfg, force: bool = False, progress: bool = True) -> dict:
    from pathlib import Path

    stats = run_stage("wordcount", cfg, build, force=force, progress=progress)
    if stats.get("complete") and "words" not in stats:  # the stage's own contribution to stats.json
        stats["words"] = sum(r["n_words"] for r in read_rows(Path(cfg.run.output) / "data"))
        (Path(cfg.run.output) / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


TOY = Stage(name="wordcount", help="documents -> the same with n_words", description="Counts words.", main=main,
            summary=lambda cfg, stats: [f"wordcount: {stats.get('words')} words"],
            plan=lambda run: [Call(run.out / "seeds" / "data", run.out / "wordcount")],
            settings=WordcountConfig, sections=("run", "input", "executor", "writer", "wordcount"),
            funnel="words counted", subset="counted",
            card=lambda cfg, st, facts: [f"- wordcount: long means at least {cfg['wordcount']['min_words']} words"])


@pytest.fixture
def registered():
    from pipeline import stages

    saved = dict(stages.REGISTRY)
    register(TOY, after="seeds")
    yield
    stages.REGISTRY.clear()
    stages.REGISTRY.update(saved)
    stages.unregister("wordcount")


VOLATILE = {"run_id", "output", "wall_time_s", "docs_per_s", "steps", "config_hash", "shards", "resumed"}


def test_a_toy_stage_runs_alone_and_inside_run_with_the_same_stats(registered, tmp_path, capsys):
    pages = tmp_path / "pages.jsonl"
    pages.write_text("".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in real_pages(30, 2000)))
    fast = ["--set", "executor.tasks=2", "--set", "executor.workers=1", "--no-progress"]
    run = tmp_path / "run"
    assert cli.main(["run", "--output", str(run), "--set", f"input.source={pages}", "--set", "run.stages=[seeds, wordcount]",
                     *fast]) == 0
    out = capsys.readouterr().out
    assert "=== run 2/2: wordcount" in out and "wordcount: " in out
    alone = tmp_path / "alone"
    assert cli.main(["wordcount", "--input", str(run / "seeds" / "data"), "--output", str(alone), *fast]) == 0
    a = json.loads((alone / "stats.json").read_text())
    b = json.loads((run / "wordcount" / "stats.json").read_text())
    assert a.keys() == b.keys() and "words" in a and a["words"] > 0
    assert {k: v for k, v in a.items() if k not in VOLATILE} == {k: v for k, v in b.items() if k not in VOLATILE}
    assert a["records_in"] == a["records_out"] == len(read_rows(run / "seeds" / "data"))
    m = json.loads((run / "run.json").read_text())
    assert m["stages"]["wordcount"]["status"] == "ran"
    assert m["stages"]["wordcount"]["commands"][0].startswith(f"synthweb wordcount --input {run / 'seeds' / 'data'} --output")


def test_an_unknown_stage_in_run_stages_says_so(registered, tmp_path, capsys):
    assert cli.main(["run", "--output", str(tmp_path / "r"), "--set", "run.stages=[seeds, wordcnt]"]) == 2
    assert "did you mean 'wordcount'?" in capsys.readouterr().err


def test_a_toy_stage_owns_its_section_hash_scope_funnel_row_and_card(registered, tmp_path, capsys):
    """Registered from this file only: the toy stage is in `synthweb --help`, takes `--set wordcount.min_words`
    with a did-you-mean on a typo, hashes only its own sections (a generate setting does not touch it, its own
    does, by name), has its row in the report's funnel and its lines in the dataset card."""
    from pipeline.stages import funnel, subsets

    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0 and "wordcount" in capsys.readouterr().out
    pages = tmp_path / "pages.jsonl"
    docs = real_pages(20, 1500)
    pages.write_text("".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in docs))
    mid = sorted(len(p["text"].split()) for p in docs)[10]  # half the pages are long
    out = tmp_path / "o"
    args = ["wordcount", "--input", str(pages), "--output", str(out), "--set", "executor.tasks=1", "--no-progress"]
    assert cli.main([*args, "--set", "wordcount.min_word=300"]) == 2
    assert "unknown key 'wordcount.min_word'" in (err := capsys.readouterr().err) and "did you mean 'min_words'" in err
    assert cli.main([*args, "--set", f"wordcount.min_words={mid}"]) == 0
    rows = read_rows(out / "data")
    assert rows and all(r["long"] == (r["n_words"] >= mid) for r in rows) and len({r["long"] for r in rows}) == 2
    capsys.readouterr()
    assert cli.main([*args, "--set", f"wordcount.min_words={mid}", "--set", "generate.num_prompts=7"]) == 0
    assert "already complete" in capsys.readouterr().out  # not its section: the same identity
    assert cli.main([*args, "--set", "wordcount.min_words=5"]) == 2
    assert f"changed: wordcount.min_words: {mid} -> 5" in capsys.readouterr().err
    assert ("wordcount", "words counted", "data") in funnel() and subsets()["counted"] == ("wordcount", "data")
    assert cli.main(["publish", "--subset", f"counted={out}", "--dry-run", str(tmp_path / "pub")]) == 0
    assert f"- wordcount: long means at least {mid} words" in (tmp_path / "pub" / "README.md").read_text()


def test_no_list_of_stage_names_outside_the_registry():
    """A stage declares its facts on its Stage; nothing else keeps a list of stages (a tuple or list of two or
    more stage names in the code, a section list aside), so that a stage registered from code is treated as a
    built-in one."""
    import re
    from pathlib import Path

    from pipeline.stages import REGISTRY

    names = "|".join(re.escape(n) for n in REGISTRY)
    pair = re.compile(rf'[(\[{{]\s*"({names})",\s*"({names})"')
    root = Path(__file__).resolve().parent.parent
    found = []
    for f in sorted((root / "pipeline").rglob("*.py")) + sorted((root / "classifiers").rglob("*.py")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if pair.search(line) and "sections=" not in line and not line.lstrip().startswith("#"):
                found.append(f"{f.relative_to(root)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)


def test_each_stage_owns_its_config_sections_and_the_model_is_assembled_from_the_registry():
    """pipeline/config.py keeps the shared sections and the loader (< 400 lines); every other section is
    declared by the stage that owns it, in its module (or beside the code that reads it: llm, quality gate,
    classifier), and the whole model travels to a worker process by pickle (tasks get their config so)."""
    import pickle
    import subprocess
    import sys
    from pathlib import Path

    from pipeline import config
    from pipeline.stages import all_stages, config_model, load_config

    root = Path(__file__).resolve().parent.parent
    assert len((root / "pipeline" / "config.py").read_text().splitlines()) < 400
    owners: dict[str, str] = {}
    for stage in all_stages():
        for name, model in stage.sections_owned.items():
            assert name not in owners, f"section {name!r} declared by {owners[name]} and {stage.name}"
            owners[name] = stage.name
            assert model.__module__ != "pipeline.config", f"{stage.name}: its section {name!r} is in pipeline/config.py"
            assert model.__module__ in (stage.main.__module__, "classifiers.config"), (name, model.__module__)
    model = config_model()
    shared = set(config.Config.model_fields) | {"llm", "quality_gate"}
    assert set(model.model_fields) == shared | set(owners)
    for f in sorted((root / "configs").glob("*.yaml")):
        load_config(f)
    cfg = load_config(None, ["dedup.bands=9", "generate.num_prompts=3"])
    code = "import pickle, sys; c = pickle.loads(sys.stdin.buffer.read()); print(c.dedup.bands, c.generate.num_prompts, c.hash())"
    r = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(cfg), capture_output=True, cwd=root)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert r.stdout.decode().split() == ["9", "3", cfg.hash()]


def test_a_check_across_sections_is_declared_by_its_stage_and_located():
    from pipeline.errors import UserError
    from pipeline.stages import load_config

    with pytest.raises(UserError, match="rephrase.routing leaves quality bucket 'top' unmapped"):
        load_config(None, ["classify.buckets={low: 0, top: 10}"])
