"""Structured output: what each backend can constrain, and the parser every backend falls back on.

A response format is ``{"type": "choice", "choices": [...]}`` or ``{"type": "json", "schema": {...}}``.
vLLM constrains decoding to it, an OpenAI-compatible server gets ``response_format`` (JSON) or
``guided_choice`` (choices), the transformers backend constrains choices with a token trie. Whatever
came back is parsed here; a reply that does not parse is a failure kept with its raw text, never a
default value.
"""

from __future__ import annotations

import json
import re
from typing import Any


class Unparsable(ValueError):
    pass


def _json_objects(text: str):
    """Every balanced {...} block in the text, outermost first (string-aware)."""
    for start in [m.start() for m in re.finditer(r"\{", text)]:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(text)):
            ch = text[i]
            if in_str:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == '"':
                    in_str = False
            elif ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    yield text[start : i + 1]
                    break


def parse(text: str, fmt: dict) -> Any:
    """The structured value in ``text``; raises :class:`Unparsable` with the reason."""
    if fmt["type"] == "choice":
        choices = fmt["choices"]
        stripped = text.strip().strip("\"'`*.").strip()
        for c in choices:
            if stripped == c or stripped.lower() == c.lower():
                return c
        # the last whole-word mention of exactly one choice ("... so the answer is B")
        best, best_pos = None, -1
        for c in choices:
            for m in re.finditer(rf"(?<![\w]){re.escape(c)}(?![\w])", text, flags=re.IGNORECASE):
                if m.start() > best_pos:
                    best, best_pos = c, m.start()
        if best is None:
            raise Unparsable(f"none of the choices {choices} in the reply")
        return best
    import jsonschema

    errors = []
    fenced = re.findall(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL)
    for candidate in [*fenced, text.strip(), *_json_objects(text)]:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        try:
            jsonschema.validate(value, fmt["schema"])
            return value
        except jsonschema.ValidationError as e:
            errors.append(e.message)
    raise Unparsable(f"no JSON object matching the schema ({errors[0] if errors else 'no JSON found'})")
