"""Stages on a Ray cluster started by the test (`ray start --head` on this machine, 2 CPUs), reached by
executor.ray.address: `synthweb run --until tokenize` (one task on the cluster that runs every stage:
seeds, generate with its topics and personas a task of their own, MinHash dedup's passes, tokenize)
and exact and semantic dedup give the local executor's ids, and the launching process loads no model."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SMALL_RUN, launcher_peak, read_rows, real_pages, synthweb

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="ray is not installed (pip install 'synthweb[ray]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = str(Path(sys.executable).parent / "ray")
    import os
    import secrets

    port, tmp = _free_port(), tmp_path_factory.mktemp("ray")
    # the cluster takes a token, as Ray's recent versions do by default: the clients get the same one
    # and its workers at the pytest worker's priority: Ray starts them at nice 15, which on a machine shared
    # with another CPU-heavy job left a task ~7% of a core (the run test went over its 900 s guard that way)
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_worker_niceness": "0"}

    r = subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2",
                        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp}"],
                       capture_output=True, text=True, timeout=180, env={**os.environ, **env})
    if r.returncode != 0:
        pytest.fail(f"ray start --head failed: {r.stderr[-1500:]}")
    yield ["--set", "executor.kind=ray", "--set", f"executor.ray.address=127.0.0.1:{port}", "--no-progress"], env
    subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120, env={**os.environ, **env})


def ids(folder: Path) -> list[str]:
    return sorted(r["id"] for r in read_rows(folder))


# a process that imports ray and datatrove and connects to the cluster, but holds no torch model (one is 500+ MB)
LAUNCHER_MB = 450


def test_synthweb_run_on_a_ray_cluster_runs_every_stage_there(ray_cluster, tmp_path):
    """`synthweb run` is one task on the cluster (its stages' own tasks are submitted from it, generate's
    topics and personas a task of their own, its diversity report another): the launcher waits, holds
    no model, and the result is the local run's."""
    pages = tmp_path / "pages.jsonl"
    pages.write_text("".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in real_pages(60, 2000)))
    args, env = ray_cluster
    small = ["run", "--until", "tokenize", "--set", f"input.source={pages}", *SMALL_RUN,
             "--set", "generate.topics.enabled=true", "--set", "generate.topics.sample_size=20",
             "--set", "generate.topics.min_clusters=2", "--set", "generate.topics.max_clusters=3",
             "--set", "generate.personas.enabled=true", "--set", "generate.personas.from_seeds=2"]
    remote, local = tmp_path / "ray", tmp_path / "local"
    r, peak_mb = launcher_peak(*small, "--output", str(remote), *args, env={**env, "RAY_ADDRESS": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    assert peak_mb < LAUNCHER_MB, f"the launching process peaked at {peak_mb:.0f} MB: a model was loaded in it"
    m = json.loads((remote / "run.json").read_text())
    assert all(m["stages"][s]["status"] == "ran" for s in ("seeds", "generate", "dedup", "tokenize")), m["stages"]
    assert "run: seeds ran, generate ran, dedup ran, tokenize ran" in r.stdout, r.stdout[-2000:]
    gen = json.loads((remote / "generate" / "stats.json").read_text())
    assert gen["prepare"]["seeds_sampled"] > 0 and gen["diversity"]["generations"] == gen["records_out"] > 0
    assert (remote / "generate" / "_logs" / "finish").is_dir()  # the diversity report ran as a task
    r = synthweb(*small, "--output", str(local), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    for sub in ("seeds/data", "generate/data", "dedup/textbooks/data"):
        assert ids(remote / sub) == ids(local / sub), sub
    tok = lambda out: json.loads((out / "tokens" / "textbooks" / "tokens.json").read_text())["documents"]  # noqa: E731
    assert tok(remote) == tok(local)
    # a second call reuses every stage, still through the cluster
    r = synthweb(*small, "--output", str(remote), *args, env={**env, "RAY_ADDRESS": ""})
    assert r.returncode == 0 and "run: seeds reused, generate reused, dedup reused, tokenize reused" in r.stdout, r.stderr[-2000:]


def test_exact_and_semantic_dedup_on_a_ray_cluster_give_the_local_ids(ray_cluster, tmp_path):
    """The two methods whose decisions are a one-task pass after the first (MinHash: the run test above)."""
    pages = [{"id": p["id"], "text": p["text"]} for p in real_pages(40, 2000)]
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(r) + "\n" for r in pages + [{"id": f"{r['id']}-copy", "text": r["text"]}
                                                                     for r in pages[:5]]))
    args, env = ray_cluster
    for method in ("exact", "semantic"):
        local, remote = tmp_path / f"{method}-local", tmp_path / f"{method}-ray"
        common = ["dedup", "--input", str(docs), "--method", method, "--set", "executor.tasks=2"]
        r = synthweb(*common, "--output", str(local), "--no-progress")
        assert r.returncode == 0, r.stderr[-2000:]
        r = synthweb(*common, "--output", str(remote), *args, env={**env, "RAY_ADDRESS": ""})
        assert r.returncode == 0, (method, r.stderr[-3000:])
        assert ids(remote / "data") == ids(local / "data"), method
        assert ids(remote / "removed") == ids(local / "removed") and len(ids(local / "removed")) >= 5, method
