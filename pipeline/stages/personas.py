"""Personas: who would read or write this? From a file (PersonaHub style), from seeds through the
LLM (text-to-persona), optionally expanded persona-to-persona; near-duplicates removed by embedding
similarity. The pool is saved (``personas/personas.jsonl``) with where each persona came from."""

from __future__ import annotations

import csv
import json
import random
import re
import zlib
from pathlib import Path

from pydantic import Field

from pipeline.config import Config, Strict
from pipeline.errors import UserError
from pipeline.llm.engine import sampling_for
from pipeline.llm.types import Request
from pipeline.prompts import template


class PersonasConfig(Strict):
    enabled: bool = True
    file: str | None = None  # JSONL or CSV of personas (PersonaHub style)
    file_column: str = "persona"
    file_limit: int | None = Field(default=2000, ge=1)
    from_seeds: int = Field(default=16, ge=0)  # text-to-persona LLM calls on random seeds
    expand: int = Field(default=0, ge=0)  # persona-to-persona LLM calls
    min_chars: int = Field(default=15, ge=1)
    max_chars: int = Field(default=300, ge=20)
    dedup_threshold: float = Field(default=0.9, gt=0, le=1)  # cosine similarity above which personas are duplicates
    include_probability: float = Field(default=0.5, ge=0, le=1)


def read_persona_file(path: str, column: str, limit: int | None, min_chars: int, max_chars: int,
                      on_bad: str) -> tuple[list[dict], int]:
    """Personas from JSONL or CSV; a bad row is an error naming file and line, or a counted skip."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"generate.personas.file not found: {p}")
    out, skipped = [], 0

    def bad(line: int, what: str):
        nonlocal skipped
        if on_bad == "error":
            raise UserError(f"{p}:{line}: {what} (set input.on_bad_record=skip to skip bad rows)")
        skipped += 1

    with p.open(encoding="utf-8", errors="strict", newline="") as f:
        if p.suffix.lower() == ".csv":
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or []):
                raise UserError(f"{p}:1: no column {column!r} (columns: {', '.join(reader.fieldnames or [])}); "
                                "set generate.personas.file_column")
            rows = ((i + 2, r.get(column)) for i, r in enumerate(reader))
        else:
            def jsonl():
                for i, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError as e:
                        yield i, ValueError(f"not valid JSON ({e})")
                        continue
                    if not isinstance(obj, dict):
                        yield i, ValueError(f"expected a JSON object, got {type(obj).__name__}")
                    elif column not in obj:
                        yield i, ValueError(f"no {column!r} field (fields: {', '.join(list(obj)[:8])})")
                    else:
                        yield i, obj[column]
            rows = jsonl()
        for line, value in rows:
            if isinstance(value, ValueError):
                bad(line, str(value))
                continue
            if not isinstance(value, str):
                bad(line, f"{column!r} is {type(value).__name__}, expected a string")
                continue
            text = " ".join(value.split())
            if not (min_chars <= len(text) <= max_chars):
                bad(line, f"persona of {len(text)} characters (allowed {min_chars}-{max_chars})")
                continue
            out.append({"persona": text, "source": f"file:{p.name}:{line}"})
            if limit and len(out) >= limit:
                break
    return out, skipped


_PROMPT_TALK = re.compile(r"\b(?:this|the|that|above|given)\s+(?:text|extract|excerpt|passage|page|web\s*page|article|document)s?\b"
                          r"|\bread,?\s+(?:or\s+|and\s+)?write\b|\blikely\s+to\s+(?:read|write|care)\b|\bcare\s+about\s+(?:this|the)\b",
                          re.IGNORECASE)
_HOLE = re.compile(r"\[[^\]]*\]|\{[^}]*\}|<[^>]*>")
_HEAD = re.compile(r"^(.*?)(?:\bwho\b|\bwhose\b|\bthat\b|\bwhich\b|,|;|\bwith\b|\bfrom\b|\bin\b|\bof\b|\bat\b|\bfor\b|$)",
                   re.IGNORECASE)
# the noun a description of a thing ends its head with ("A web server that ...", "A list of 20+ web pages"); on
# 4,480 PersonaHub personas starting with A/An, 4 (0.1%) end their head with one of these
_NOUN_HEAD = re.compile(r"^(.*?)(?:\bwho\b|\bwhose\b|\bthat\b|\bwhich\b|,|;|\bwith\b|\bfrom\b|\bin\b|\bof\b|\bat\b"
                        r"|\bfor\b|\bon\b|\babout\b|\bto\b|\bby\b|\b(?!(?:engineer|program|test|market|nurs|comput|bank|"
                        r"account|gam|publish|manufactur|consult|teach|learn|fund|data)ing\b)\w{2,}ing\b|$)", re.IGNORECASE)
THINGS = frozenset("""module modules library libraries function functions script scripts program programs software server servers
parser parsers website websites site page pages list lists document documents text texts tutorial tutorials database databases
app apps application applications tool tools file files table tables story stories collection collections version versions
example examples summary summaries description descriptions system systems code method methods package packages framework
frameworks api article articles book books report reports feature features interface engine engines machine device devices
computer computers browser compiler extract excerpt passage paragraph sentence section chapter topic question answer series
set type kind number way process algorithm dataset network protocol format string object value variable loop""".split())
_VERB = re.compile(r"\b(?:is|are|was|were|will|would|can|could|may|might|should|does|do|did|has|have|had)\b", re.IGNORECASE)


def not_a_person(text: str, cut: bool = False, instructions: str | None = None) -> str | None:
    """Why a persona reply is not a description of a person (None: it is one). ``instructions``: the
    prompt without its source text; a reply copying half its 4-grams from it copies the example."""
    from pipeline.gate import ngram_overlap

    if cut or text.rstrip().endswith(("..", "…")):
        return "cut at the token limit"
    if instructions and ngram_overlap(text, instructions, 4) > 0.5:
        return "copies the prompt"
    if _HOLE.search(text):
        return "holds a template hole"
    if _PROMPT_TALK.search(text):
        return "talks about the prompt"
    head = _HEAD.match(text)
    if head and _VERB.search(head.group(1)):  # "A user will likely ...": a sentence about someone, not a description
        return "a sentence, not a description"
    words = re.findall(r"[A-Za-z]+", _NOUN_HEAD.match(text).group(1))
    if words and words[-1].lower() in THINGS:
        return f"describes a thing ({words[-1].lower()}), not a person"
    return None


def _clean(text: str, min_chars: int, max_chars: int) -> str | None:
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "").strip(" \"'*`")
    line = re.sub(r"^(persona|answer)\s*:\s*", "", line, flags=re.IGNORECASE)
    if not (min_chars <= len(line) <= max_chars) or not re.match(r"^(a|an)\b(?![:.])", line, flags=re.IGNORECASE):
        return None
    return line


def dedup(personas: list[dict], encoder, threshold: float) -> tuple[list[dict], int]:
    """Greedy: keep a persona unless it is at least ``threshold`` cosine-similar to a kept one."""
    if not personas:
        return [], 0
    emb = encoder.encode([p["persona"] for p in personas])
    kept_idx: list[int] = []
    for i in range(len(personas)):
        if kept_idx and float((emb[kept_idx] @ emb[i]).max()) >= threshold:
            continue
        kept_idx.append(i)
    return [personas[i] for i in kept_idx], len(personas) - len(kept_idx)


def personas_from_file(cfg: Config) -> tuple[list[dict], int]:
    pc = cfg.generate.personas
    if not (pc.enabled and pc.file):
        return [], 0
    return read_persona_file(pc.file, pc.file_column, pc.file_limit, pc.min_chars, pc.max_chars, cfg.input.on_bad_record)


def build_personas(cfg: Config, texts: list[str], ids: list[str], engine, encoder,
                   from_file: tuple[list[dict], int] = ([], 0)) -> tuple[list[dict], dict]:
    pc = cfg.generate.personas
    seed = cfg.run.seed
    pool, skipped = list(from_file[0]), from_file[1]
    rng = random.Random(seed + 1)
    failed = 0
    from pipeline.gate import QualityGate

    gate = QualityGate(cfg.quality_gate)
    gated_out: dict[str, int] = {}

    def ask(items: list[tuple[str, str, str, str]]) -> int:
        """(request id, prompt, origin, the prompt's own words) -> usable personas appended to the pool;
        returns the unusable count."""
        reqs = [Request(rid, [{"role": "user", "content": prompt}], sampling_for(cfg.llm, rid, seed, max_tokens=60))
                for rid, prompt, _, _ in items]
        bad = 0
        for (_, _, origin, own), r in zip(items, engine.generate(reqs)):
            p = _clean(r.text, pc.min_chars, pc.max_chars) if not r.error else None
            if p and gate.enabled and not_a_person(p, bool(r.outputs) and r.outputs[0].finish_reason == "length", own):
                gated_out["not_a_person"] = gated_out.get("not_a_person", 0) + 1
                p = None
            if p and gate.enabled:  # a persona in homoglyph gibberish or looping is no persona
                v = gate.check(p, kind="short")
                if not v.passed:
                    gated_out[v.reasons[0]] = gated_out.get(v.reasons[0], 0) + 1
                    p = None
            if p:
                pool.append({"persona": p, "source": origin})
            else:
                bad += 1
        return bad
    if pc.from_seeds and texts:
        t = template("personas", "from_text", cfg.generate.prompts_dir)
        hole = "\x00text\x00"
        own = t.render(text=hole).replace(hole, "")  # the instructions (and their example), not the seed
        picks = rng.sample(range(len(texts)), min(pc.from_seeds, len(texts)))
        failed += ask([(f"persona-{ids[i]}", t.render(text=texts[i][:1200]), f"seed:{ids[i]}", own) for i in picks])
    if pc.expand and pool:
        t = template("personas", "expand", cfg.generate.prompts_dir)
        base = [pool[rng.randrange(len(pool))] for _ in range(pc.expand)]
        failed += ask([(f"persona-x{k}-{zlib.crc32(b['persona'].encode())}", t.render(persona=b["persona"]),
                        f"expand:{b['source']}", t.render(persona=b["persona"])) for k, b in enumerate(base)])
    kept, dups = dedup(pool, encoder, pc.dedup_threshold)
    stats = {"from_file": sum(p["source"].startswith("file:") for p in pool), "skipped_bad_rows": skipped,
             "from_seeds": sum(p["source"].startswith("seed:") for p in pool),
             "expanded": sum(p["source"].startswith("expand:") for p in pool),
             "llm_unusable": failed, "gate_failed": gated_out, "near_duplicates_removed": dups, "kept": len(kept)}
    return kept, stats


def save_personas(personas: list[dict], path: Path) -> None:
    from pipeline.io.writer import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in personas))


def load_personas(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.exists() else []

