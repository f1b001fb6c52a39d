"""The front door: --help everywhere, the default job offline, and the Ray executor on a local Ray."""

import importlib.util

import pytest

from tests.conftest import CC_SAMPLE, load_stats, need, read_rows, synthweb


def test_help_for_every_subcommand():
    r = synthweb("--help")
    assert r.returncode == 0 and "seeds" in r.stdout
    r = synthweb("seeds", "--help")
    assert r.returncode == 0 and "--input" in r.stdout and "--set KEY=VALUE" in r.stdout


def test_default_config_offline_says_so_and_falls_back(tmp_path):
    """What `make generate` does on a machine without the Hub (HF_HUB_OFFLINE=1 keeps it offline anywhere)."""
    out = tmp_path / "gen"
    r = synthweb("seeds", "--output", str(out), "--set", "input.limit=60", "--set", "executor.tasks=2", "--no-progress")
    assert r.returncode == 0, r.stderr
    notice = [ln for ln in r.stdout.splitlines() if "Hub unreachable" in ln]
    assert len(notice) == 1 and "python" in notice[0].lower()
    rows = read_rows(out / "data")
    assert rows and all(r["source"] == "python-docs" and r["url"] for r in rows)
    assert load_stats(out)["records_in"] == 60


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install 'synthweb[ray]')")
def test_ray_executor_on_a_local_ray_instance(tmp_path):
    out = tmp_path / "ray"
    r = synthweb(
        "seeds", "--input", str(need(CC_SAMPLE)), "--output", str(out), "--set", "input.limit=200",
        "--set", "executor.kind=ray", "--set", "executor.tasks=2", "--set", "executor.workers=2", "--no-progress",
        env={"RAY_ADDRESS": "", "RAY_DEDUP_LOGS": "0", "RAY_worker_niceness": "0"},  # tests/test_ray.py says why
    )
    assert r.returncode == 0, r.stderr[-3000:]
    stats = load_stats(out)
    assert stats["records_in"] == 200 and stats["records_out"] == len(read_rows(out / "data")) > 0
    assert stats["records_out"] + stats["removed"] == 200


def test_stage_workers_fork_from_a_server_that_already_imported_their_libraries():
    """The local executor's forkserver imports what a stage's steps declare (spaCy for the seeds filters'
    tokenizer, sentence-transformers for model steps) once, so that each worker does not; a stage that
    needs another list gets a server of its own (`synthweb run` runs many stages in one process)."""
    import multiprocess
    from datatrove.pipeline.filters import GopherQualityFilter

    from pipeline.executor import preload_modules, use_forkserver_preload
    from pipeline.stages.classify import ClassifyStep
    from pipeline.words import word_tokenizer

    seeds = preload_modules([GopherQualityFilter(language=word_tokenizer("eng"))])
    assert {"spacy.lang.en", "datatrove.pipeline.filters.gopher_quality_filter"} <= set(seeds)
    assert "sentence_transformers" in ClassifyStep.preload
    # asked in the worker, before it imports anything: spaCy is there, and torch is not (thinc, under spaCy,
    # imports it when it can: ~2 CPU s per process for nothing a blank tokenizer uses); torch still imports
    loaded = "('spacy.lang.en' in __import__('sys').modules, 'torch' in __import__('sys').modules)"
    after = "(__import__('torch').ones(2).sum().item(), __import__('thinc.compat').compat.has_torch)"
    try:
        for modules, want in ((["json"], (False, False)), (seeds, (True, False)), (["json"], (False, False))):
            use_forkserver_preload(modules)
            with multiprocess.get_context("forkserver").Pool(1) as pool:
                assert pool.apply(eval, (loaded,)) == want, modules
                if want[0]:
                    assert pool.apply(eval, (after,)) == (2.0, False)
    finally:
        use_forkserver_preload([])
