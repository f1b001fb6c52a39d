"""A stage is one module plus one registry line: a toy stage defined here, registered from this file,
runs alone through the CLI and inside `synthweb run` with the same stats.json (no other file touched)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from datatrove.pipeline.base import PipelineStep

from pipeline import cli
from pipeline.stages import Call, Stage, register
from pipeline.stages.base import run_stage
from tests.conftest import read_rows, real_pages


class CountWords(PipelineStep):
    name = "🔢 count words"

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            doc.metadata["n_words"] = len(doc.text.split())
            self.stat_update("documents")
            yield doc


def build(ctx) -> list:
    return [ctx.task_start(), ctx.reader(), ctx.progress(), CountWords(),
            ctx.writer("data", "main", [pa.field("n_words", pa.int32())])]


def main(cfg, force: bool = False, progress: bool = True) -> dict:
    from pathlib import Path

    stats = run_stage("wordcount", cfg, build, force=force, progress=progress)
    if stats.get("complete") and "words" not in stats:  # the stage's own contribution to stats.json
        stats["words"] = sum(r["n_words"] for r in read_rows(Path(cfg.run.output) / "data"))
        (Path(cfg.run.output) / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


TOY = Stage(name="wordcount", help="documents -> the same with n_words", description="Counts words.", main=main,
            summary=lambda cfg, stats: [f"wordcount: {stats.get('words')} words"],
            plan=lambda run: [Call(run.out / "seeds" / "data", run.out / "wordcount")])


@pytest.fixture
def registered():
    from pipeline import registry, stages

    saved, names = dict(stages.REGISTRY), list(registry.STAGES)
    register(TOY, after="seeds")
    yield
    stages.REGISTRY.clear()
    stages.REGISTRY.update(saved)
    registry.STAGES[:] = names


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
