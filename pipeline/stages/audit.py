"""``synthweb audit``: how synthetic and how degenerate a set of shards reads, per shard and per stage.

For every shard of a stage output (or any Parquet/JSONL folder):

- signs of synthetic text: the share of documents with LLM proxy phrases ("as an AI language model",
  "delve", "tapestry", ...; ``audit.phrases``) and their rate per 1,000 words, the refusal rate
  (``audit.refusals``), the share of the most common openings — reported only from
  ``audit.min_documents_for_openings`` documents on, since "the top 20 openings cover 100%" says
  nothing about 24 documents;
- degeneration, by the quality gate's own checks (pipeline/gate.py) run on every document (or an even
  sample of ``audit.gate_sample``): the gate's pass rate and the share failing each check, the mean
  top 2- and 4-gram character share (Gopher's repetition measure), loops, mixed-script words,
  prompt echo (where the shards keep the ``prompt``), and the share that hit ``max_tokens`` and the
  share that still ends mid-sentence (where they keep ``finish_reason``).

Grouped by the stage that last wrote each row (``history``), so a run's folders show where
model-collapse risk builds up. Written to ``audit.json`` and printed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
from pydantic import Field

from pipeline.config import Strict
from pipeline.errors import UserError
from pipeline.gate_config import QualityGateConfig
from pipeline.stages import Option, Stage


class AuditConfig(Strict):
    """``synthweb audit`` and the audit line of generate/rephrase: signs of synthetic text."""

    phrases: list[str] = ["as an AI language model", "delve", "tapestry", "it is important to note",
                          "it's important to note", "in conclusion", "testament to", "in today's fast-paced world",
                          "navigate the complexities", "embark on a journey", "multifaceted",
                          "I hope this helps"]  # matched case-insensitively at a word start ("delve" finds "delves")
    refusals: list[str] = [r"\bI(?: am|'m) (?:sorry|unable|not able)\b", r"\bI can(?:no|')t (?:help|assist|provide|fulfil)",
                           r"\bas an AI\b"]  # regexes, looked for in the first 400 characters
    opening_words: int = Field(default=3, ge=1)
    top_openings: int = Field(default=20, ge=1)
    min_documents_for_openings: int = Field(default=300, ge=1)  # below: the openings share is not reported
    gate_sample: int | None = Field(default=5000, ge=1)  # degeneration figures on an even sample of this many per shard


class Auditor:
    def __init__(self, cfg: AuditConfig, gate_cfg: QualityGateConfig | None = None):
        from pipeline.gate import QualityGate

        self.cfg = cfg
        self.phrases = [re.compile(r"\b" + re.escape(p.lower()) + r"\w*", re.I) for p in cfg.phrases]
        self.refusals = [re.compile(p, re.I) for p in cfg.refusals]
        # the gate's checks measure; whether the gate is on for the stages does not matter here
        self.gate = QualityGate((gate_cfg or QualityGateConfig()).model_copy(update={"enabled": True}))

    def verdicts(self, texts: list[str], prompts: list | None = None, finish: list | None = None) -> list:
        """The gate's verdict per document, or None for a document outside the even sample."""
        n = len(texts)
        step = max(1, -(-n // self.cfg.gate_sample)) if self.cfg.gate_sample else 1
        out: list = [None] * n
        for i in range(0, n, step):
            out[i] = self.gate.check(texts[i] or "", echo_source=(prompts[i] if prompts else None),
                                     finish_reason=(finish[i] if finish else None))
        return out

    def texts(self, texts: list[str], prompts: list | None = None, finish: list | None = None,
              verdicts: list | None = None) -> dict:
        n = len(texts)
        if not n:
            return {"documents": 0}
        texts = [t or "" for t in texts]
        words = [t.split() for t in texts]
        total_words = sum(len(w) for w in words)
        hits = Counter()
        docs_with = 0
        for t in texts:
            found = False
            for p, rx in zip(self.cfg.phrases, self.phrases):
                k = len(rx.findall(t))
                if k:
                    hits[p] += k
                    found = True
            docs_with += found
        refused = sum(any(rx.search(t[:400]) for rx in self.refusals) for t in texts)
        openings = Counter(" ".join(w[: self.cfg.opening_words]).lower() for w in words if w)
        top = openings.most_common(self.cfg.top_openings)
        key = f"top{self.cfg.top_openings}_openings_share"
        out = {
            "documents": n,
            "mean_words": round(total_words / n, 1),
            "proxy_phrase_doc_rate": round(docs_with / n, 4),
            "proxy_phrases_per_1k_words": round(1000 * sum(hits.values()) / max(1, total_words), 3),
            "proxy_phrase_counts": dict(hits.most_common()),
            "refusal_rate": round(refused / n, 4),
            key: round(sum(c for _, c in top) / n, 4) if n >= self.cfg.min_documents_for_openings else None,
            "most_common_openings": [{"opening": o, "documents": c} for o, c in top[:5]],
            "empty_documents": sum(1 for w in words if not w),
        }
        if n < self.cfg.min_documents_for_openings:
            out["openings_note"] = (f"the top-{self.cfg.top_openings} openings share means nothing below "
                                    f"{self.cfg.min_documents_for_openings} documents (have {n}); not reported")
        if verdicts is None:
            verdicts = self.verdicts(texts, prompts, finish)
        out["degeneration"] = degeneration(verdicts, prompts is not None, finish is not None)
        return out


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(sum(xs) / len(xs), 4) if xs else None


def degeneration(verdicts: list, have_prompts: bool, have_finish: bool) -> dict:
    """The gate's figures over the sampled verdicts of one group of documents."""
    from pipeline.gate import CHECKS

    vs = [v for v in verdicts if v is not None]
    n = len(vs)
    if not n:
        return {"checked": 0}
    failing = Counter(r for v in vs for r in v.reasons)
    share = {k: round(failing[k] / n, 4) for k in CHECKS}

    def metric(name):
        return _mean([v.metrics.get(name) for v in vs])

    return {
        "checked": n,
        "gate_pass_rate": round(sum(v.passed for v in vs) / n, 4),
        "fail_share_by_check": {k: s for k, s in share.items() if s},
        "mean_top_2gram_share": metric("top_2gram_share"),
        "mean_top_4gram_share": metric("top_4gram_share"),
        "loop_share": share["loop"],
        "mixed_script_share": round(sum(1 for v in vs if v.metrics.get("mixed_script_words")) / n, 4),
        "prompt_echo_share": share["prompt_echo"] if have_prompts else None,
        "hit_max_tokens_share": round(sum(1 for v in vs if v.metrics.get("hit_max_tokens")) / n, 4) if have_finish else None,
        "cut_mid_sentence_share": share["cut_at_max_tokens"] if have_finish else None,
        "gopher_fail_share": round(sum(1 for v in vs if {"gopher_repetition", "gopher_quality"} & set(v.reasons)) / n, 4),
    }


def _stage_of(history) -> str:
    if history:
        last = history[-1]
        return (last.get("stage") if isinstance(last, dict) else None) or "unknown"
    return "unknown"


def audit(folder: str | Path, cfg: AuditConfig, text_column: str = "text", gate_cfg: QualityGateConfig | None = None) -> dict:
    """Audit every Parquet shard under ``folder`` (a run folder: its data/, kept/ and the like)."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"audit: {folder} does not exist")
    files = sorted(p for p in folder.rglob("*.parquet") if "_parts" not in p.parts and "removed" not in p.parts)
    if not files:
        raise UserError(f"audit: no Parquet shards under {folder}")
    a = Auditor(cfg, gate_cfg)
    per_shard, groups = {}, {}
    everything: dict[str, list] = {"t": [], "p": [], "f": [], "v": []}
    has_p = has_f = True
    for f in files:
        t = pq.read_table(f)
        if text_column not in t.column_names:
            raise UserError(f"audit: {f} has no column {text_column!r} (columns: {', '.join(t.column_names)})")
        texts = [x or "" for x in t.column(text_column).to_pylist()]
        prompts = t.column("prompt").to_pylist() if "prompt" in t.column_names else None
        finish = t.column("finish_reason").to_pylist() if "finish_reason" in t.column_names else None
        has_p, has_f = has_p and prompts is not None, has_f and finish is not None
        hist = t.column("history").to_pylist() if "history" in t.column_names else [None] * len(texts)
        verdicts = a.verdicts(texts, prompts, finish)
        per_shard[str(f.relative_to(folder))] = a.texts(texts, prompts, finish, verdicts)
        for i, (text, h) in enumerate(zip(texts, hist)):
            g = groups.setdefault(_stage_of(h), {"t": [], "p": [], "f": [], "v": []})
            for d in (g, everything):
                d["t"].append(text)
                d["p"].append(prompts[i] if prompts else None)
                d["f"].append(finish[i] if finish else None)
                d["v"].append(verdicts[i])

    def group(d: dict) -> dict:
        p = d["p"] if any(x is not None for x in d["p"]) else None
        f = d["f"] if any(x is not None for x in d["f"]) else None
        return a.texts(d["t"], p, f, d["v"])

    return {"folder": str(folder), "overall": group(everything), "by_stage": {k: group(v) for k, v in groups.items()},
            "by_shard": per_shard}


def summary_line(r: dict) -> str:
    o = r["overall"] if "overall" in r else r
    if not o.get("documents"):
        return "audit: no documents"
    key = next(k for k in o if k.endswith("_openings_share"))
    openings = (f"{key.split('_')[0]} openings cover {o[key]:.1%}" if o[key] is not None
                else f"openings not rated (< {o['openings_note'].split(' below ')[1].split(' ')[0]} documents)")
    line = (f"audit: {o['documents']} documents, {o['mean_words']:.0f} words on average; proxy phrases in "
            f"{o['proxy_phrase_doc_rate']:.1%} ({o['proxy_phrases_per_1k_words']:.2f} per 1k words); refusals "
            f"{o['refusal_rate']:.1%}; {openings}")
    d = o.get("degeneration") or {}
    if d.get("checked"):
        parts = [f"gate pass {d['gate_pass_rate']:.0%}", f"loops {d['loop_share']:.1%}",
                 f"mixed script {d['mixed_script_share']:.1%}", f"top-4-gram share {d['mean_top_4gram_share'] or 0:.3f}"]
        if d.get("prompt_echo_share") is not None:
            parts.append(f"prompt echo {d['prompt_echo_share']:.1%}")
        if d.get("hit_max_tokens_share") is not None:
            parts.append(f"hit max_tokens {d['hit_max_tokens_share']:.1%} (ends mid-sentence {d['cut_mid_sentence_share']:.1%})")
        line += "; degeneration: " + ", ".join(parts)
    return line


# the levels 97% of real web pages reach (MiniLM; the first 150 words of a page against its next 300 words,
# and its first 150 against the next 150): ../shared/data FineWeb and Common Crawl pages, bench/bench_meaning.py
ABOUT_SOURCE, HOLDS_TOGETHER = 0.30, 0.25


def _dist(xs: list[float]) -> dict | None:
    import numpy as np

    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    a = np.array(xs, dtype=float)
    return {"n": len(xs), "median": round(float(np.median(a)), 4), "p10": round(float(np.percentile(a, 10)), 4),
            "p90": round(float(np.percentile(a, 90)), 4), "mean": round(float(a.mean()), 4)}


def _meaning_of(rows: list[dict]) -> dict:
    faith = [r["m"].get("faithfulness") for r in rows]
    coh = [r["m"].get("coherence") for r in rows]
    measured = [r for r in rows if r["m"].get("faithfulness") is not None]
    good = [r for r in measured if r["m"]["faithfulness"] >= ABOUT_SOURCE
            and (r["m"].get("coherence") is None or r["m"]["coherence"] >= HOLDS_TOGETHER)]
    out = {"rows": len(rows), "faithfulness": _dist(faith), "coherence": _dist(coh),
           "about_source_share": round(sum(x >= ABOUT_SOURCE for x in faith if x is not None) / max(1, len(measured)), 4)
           if measured else None,
           "holds_together_share": round(sum(x >= HOLDS_TOGETHER for x in coh if x is not None)
                                         / max(1, sum(x is not None for x in coh)), 4) if any(x is not None for x in coh) else None,
           "good_share": round(len(good) / len(measured), 4) if measured else None, "good": len(good), "measured": len(measured)}
    q = [r["m"].get("quality") for r in rows]
    if any(x is not None for x in q):
        out["quality"] = _dist(q)
        out["source_quality"] = _dist([r["m"].get("source_quality") for r in rows])
        out["quality_delta"] = _dist([r["m"].get("quality_delta") for r in rows])
    return out


def meaning_report(folders: list[Path], examples: int = 5) -> dict:
    """The meaning figures of the rows in ``folders`` (their ``semantic`` column, written by the quality
    gate): faithfulness, coherence and quality distributions overall, per teacher and per style, the
    share of rows about their source and holding together (the levels of real web pages), and the
    five worst and five best rows by the judge's rank score."""
    from pipeline.meaning import rank_score

    rows = []
    for folder in folders:
        for f in sorted(Path(folder).glob("*.parquet")) if Path(folder).is_dir() else []:
            names = pq.read_schema(f).names
            if "semantic" not in names:
                continue
            src = next((c for c in ("seed_extract", "source_chunk") if c in names), None)
            cols = [c for c in ("id", "text", "semantic", "teacher", "style", "filter_reason", src) if c and c in names]
            for r in pq.read_table(f, columns=cols).to_pylist():
                m = json.loads(r["semantic"]) if r.get("semantic") else None
                if m:
                    rows.append({"id": r["id"], "text": r["text"], "m": m, "teacher": r.get("teacher"), "style": r.get("style"),
                                 "removed": r.get("filter_reason"), "source": r.get(src) if src else None})
    if not rows:
        return {"rows": 0}
    out = {**_meaning_of(rows), "levels": {"about_source": ABOUT_SOURCE, "holds_together": HOLDS_TOGETHER}}
    for key in ("teacher", "style"):
        groups = sorted({r[key] for r in rows if r[key]})
        if groups:
            out[f"by_{key}"] = {g: _meaning_of([r for r in rows if r[key] == g]) for g in groups}
    ranked = sorted(rows, key=lambda r: rank_score(r["m"]))

    def show(r):
        return {"id": r["id"], **{k: r["m"].get(k) for k in ("faithfulness", "coherence", "quality")},
                "removed": r["removed"], "text": " ".join(r["text"].split())[:300],
                "source": " ".join((r["source"] or "").split())[:200] or None}

    out["worst"] = [show(r) for r in ranked[:examples]]
    out["best"] = [show(r) for r in ranked[::-1][:examples]]
    out["verdict"] = meaning_verdict(out)
    return out


def meaning_verdict(m: dict) -> str:
    if not m.get("measured"):
        return "meaning: no row has a source to measure faithfulness against"
    f, c = m["faithfulness"], m.get("coherence")
    return (f"{m['good']} of {m['measured']} rows ({m['good_share']:.0%}) are about their source (faithfulness >= "
            f"{ABOUT_SOURCE:g}) and hold together (coherence >= {HOLDS_TOGETHER:g}), the levels 97% of real web pages "
            f"reach; median faithfulness {f['median']:.2f}" + (f", coherence {c['median']:.2f}" if c else "")
            + (f"; quality {m['quality']['mean']:.2f} vs its sources' {m['source_quality']['mean']:.2f}"
               if m.get("quality") and m.get("source_quality") else ""))


def meaning_line(m: dict) -> str:
    return "meaning: " + meaning_verdict(m).removeprefix("meaning: ")


def write(r: dict, out: Path) -> None:
    from pipeline.io.writer import atomic_write_text

    atomic_write_text(out, json.dumps(r, indent=2, ensure_ascii=False))


def add_audit(cfg, stats: dict) -> dict:
    """The synthetic-text audit of a finished LLM stage's output, kept in its stats.json: signs of synthetic
    text and degeneration (form), and the meaning of the kept rows (faithfulness, coherence, quality)."""
    from pipeline.io.writer import atomic_write_text

    out = Path(cfg.run.output)
    if stats.get("complete") and stats.get("records_out") and "audit" not in stats:
        r = audit(out / "data", cfg.audit, gate_cfg=cfg.quality_gate)
        stats["audit"] = {**r["overall"], "by_shard": r["by_shard"], "meaning": meaning_report([out / "data"])}
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    return stats


def audit_lines(stats: dict) -> list[str]:
    a = stats.get("audit", {})
    if not a.get("documents"):
        return []
    return [summary_line(a)] + ([meaning_line(a["meaning"])] if a.get("meaning", {}).get("rows") else [])


def main(cfg, force: bool = False, progress: bool = True, input: str | None = None, output: str | None = None,
         text_column: str = "text") -> dict:
    if not input:
        raise UserError("audit needs --input: a run folder or a folder of Parquet shards")
    r = audit(input, cfg.audit, text_column, cfg.quality_gate)
    # the meaning of rows the quality gate measured (their semantic column): every shard folder under input
    folders = sorted({f.parent for f in Path(input).rglob("*.parquet") if "_parts" not in f.parts and "removed" not in f.parts})
    r["meaning"] = meaning_report(folders)
    r["written_to"] = str(Path(output) if output else Path(input) / "audit.json")
    write({k: v for k, v in r.items() if k != "written_to"}, Path(r["written_to"]))
    return r


def _lines(cfg, r: dict) -> list[str]:
    return [summary_line(r), *(f"  {stage}: " + summary_line(s).removeprefix("audit: ") for stage, s in r["by_stage"].items()),
            *([meaning_line(r["meaning"])] if r.get("meaning", {}).get("rows") else []), f"wrote {r['written_to']}"]


STAGE = Stage(
    settings={"audit": AuditConfig},
    name="audit", help="shards -> signs of synthetic text per shard and per stage (proxy phrases, refusals, openings)",
    description="Read every Parquet shard under --input and report, overall, per stage (the last entry of each "
    "row's history) and per shard: mean length, the share of documents with LLM proxy phrases (audit.phrases) "
    "and their rate per 1,000 words, the refusal rate, and the share of the most common openings. Writes "
    "audit.json (in --input, or --output) and prints a summary.",
    main=main, summary=_lines, io_in_config=False, progress=False, force_help=None,
    input_help="a run folder or a folder of Parquet shards", output_help="where to write the JSON (default INPUT/audit.json)",
    options=(Option(("--text-column",), "the text column", kwargs={"default": "text"}),),
)
