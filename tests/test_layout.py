"""The code's shape: layers as pyproject.toml's import-linter contract states them, and no import cycle
except the LLM backend factory (engine <-> its backends)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_layers_contract_is_kept():
    r = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "2 kept, 0 broken" in r.stdout


def test_no_import_cycle_but_the_backend_factory():
    import grimp

    g = grimp.build_graph("pipeline", "classifiers")
    cycles = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(g.modules):
        if m not in index:
            visit(m)
    assert cycles == [["pipeline.llm.engine", "pipeline.llm.hf", "pipeline.llm.openai_api", "pipeline.llm.vllm_engine"]]
