"""Prompt templates: Jinja2 files under ``prompts/<family>/``, rendered in a sandboxed environment.

Each template starts with a declaration comment naming its variables::

    {#- requires: seed_extract audience ; optional: topic persona -#}

Loading checks the declaration against what the template really uses (a variable used but not
declared is an error), and rendering checks that every required variable is given and not empty.
A syntax error names the file and line. No prompt text lives in Python files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from pipeline.config import REPO_ROOT
from pipeline.errors import UserError

PROMPTS_DIR = REPO_ROOT / "prompts"
_DECL = re.compile(r"\{#-?\s*requires:(?P<req>[^;#]*)(?:;\s*optional:(?P<opt>[^#]*))?-?#\}")


@dataclass
class PromptTemplate:
    name: str
    path: Path
    required: tuple[str, ...]
    optional: tuple[str, ...]
    template: object

    def render(self, **variables) -> str:
        missing = [v for v in self.required if variables.get(v) in (None, "")]
        if missing:
            raise UserError(f"{self.path}: template needs {', '.join(missing)} (declared as required), "
                            "but it was not given")
        values = {v: variables.get(v) for v in self.required + self.optional}
        return self.template.render(**values).strip()


def _env() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, trim_blocks=True,
                                lstrip_blocks=True, autoescape=False)


def load_template(path: str | Path) -> PromptTemplate:
    path = Path(path)
    if not path.exists():
        raise UserError(f"prompt template not found: {path}")
    source = path.read_text(encoding="utf-8")
    env = _env()
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as e:
        raise UserError(f"{path}:{e.lineno}: template syntax error: {e.message}") from None
    m = _DECL.search(source)
    if not m:
        raise UserError(f"{path}:1: the template must declare its variables in a first-line comment, "
                        "e.g. {#- requires: seed_extract ; optional: topic -#}")
    required = tuple(w for w in m.group("req").split() if w.isidentifier())
    optional = tuple(w for w in (m.group("opt") or "").split() if w.isidentifier())
    used = meta.find_undeclared_variables(ast)
    undeclared = sorted(used - set(required) - set(optional))
    if undeclared:
        line = next((i + 1 for i, text in enumerate(source.splitlines()) if undeclared[0] in text), 1)
        raise UserError(f"{path}:{line}: the template uses {', '.join(undeclared)}, which it does not declare "
                        f"(declared: {', '.join(required + optional)})")
    return PromptTemplate(path.stem, path, required, optional, env.from_string(source))


@lru_cache(maxsize=64)
def template(family: str, name: str, prompts_dir: str | None = None) -> PromptTemplate:
    root = Path(prompts_dir) if prompts_dir else PROMPTS_DIR
    return load_template(root / family / f"{name}.j2")


def load_yaml(family: str, name: str, prompts_dir: str | None = None) -> dict:
    root = Path(prompts_dir) if prompts_dir else PROMPTS_DIR
    path = root / family / name
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"prompt file not found: {path}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"{path}:{mark.line + 1 if mark else 1}: invalid YAML: {getattr(e, 'problem', e)}") from None
