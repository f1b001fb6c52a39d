"""Stages on a Ray cluster started by the test (`ray start --head` on this machine, 2 CPUs), reached by
executor.ray.address: seeds and dedup (MinHash's four passes, exact's hashes and decisions) give the
local executor's ids."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import read_rows, real_pages, synthweb

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
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}

    r = subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2",
                        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp}"],
                       capture_output=True, text=True, timeout=180, env={**os.environ, **env})
    if r.returncode != 0:
        pytest.fail(f"ray start --head failed: {r.stderr[-1500:]}")
    yield ["--set", "executor.kind=ray", "--set", f"executor.ray.address=127.0.0.1:{port}", "--no-progress"], env
    subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120, env={**os.environ, **env})


def ids(folder: Path) -> list[str]:
    return sorted(r["id"] for r in read_rows(folder))


def test_seeds_and_dedup_on_a_ray_cluster_give_the_local_ids(ray_cluster, tmp_path):
    pages = [{"id": p["id"], "text": p["text"]} for p in real_pages(40, 2000)]
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(r) + "\n" for r in pages + [{"id": f"{r['id']}-copy", "text": r["text"]}
                                                                     for r in pages[:5]]))
    args, env = ray_cluster
    env = {**env, "RAY_ADDRESS": "", "RAY_DEDUP_LOGS": "0"}
    for stage, extra in (("seeds", []), ("dedup", ["--method", "minhash"]), ("dedup", ["--method", "exact"])):
        local, remote = tmp_path / f"{stage}{extra}-local", tmp_path / f"{stage}{extra}-ray"
        common = [stage, "--input", str(docs), *extra, "--set", "executor.tasks=2"]
        r = synthweb(*common, "--output", str(local), "--no-progress")
        assert r.returncode == 0, r.stderr[-2000:]
        r = synthweb(*common, "--output", str(remote), *args, env=env, timeout=900)
        assert r.returncode == 0, (stage, extra, r.stderr[-3000:])
        assert json.loads((remote / "stats.json").read_text())["complete"]
        assert ids(remote / "data") == ids(local / "data"), (stage, extra)
        assert ids(remote / "removed") == ids(local / "removed"), (stage, extra)
