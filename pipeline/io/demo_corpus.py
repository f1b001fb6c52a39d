"""An offline demo corpus that needs no download: the documentation that ships with Python itself.

Used when the Hub cannot be reached, so ``make generate`` always has real English prose to work on:
the ``pydoc`` topic pages (language reference sections) and the docstrings of standard-library
modules, read from source with ``ast`` (nothing is imported, so nothing has side effects).
"""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path
from typing import Iterator

SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "turtledemo", "__pycache__", "config-3"}
MIN_CHARS = 300


def _prose(text: str) -> str:
    """Keep the prose: drop indented blocks (code, grammar rules) and interactive-session lines."""
    keep = [ln for ln in text.splitlines() if not ln.startswith(("   ", "\t", ">>>", "...")) or not ln.strip()]
    return "\n".join(keep).strip()


def iter_python_docs() -> Iterator[dict]:
    """Yield ``{"id", "text", "url", "title"}`` dicts in a stable order."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        text = _prose(topics[name])
        if len(text) >= MIN_CHARS:
            yield {"id": f"python-docs/topic/{name}", "text": text, "url": f"pydoc://topics/{name}", "title": name}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if any(part in SKIP_DIRS or part.startswith("config-") for part in rel.parts):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        doc = _prose(doc) if doc else ""
        if len(doc) >= MIN_CHARS:
            module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
            top = module.split(".")[0]
            yield {
                "id": f"python-docs/module/{module}",
                "text": doc,
                "url": f"https://docs.python.org/3/library/{top}.html",
                "title": module,
            }
