"""``synthweb audit``: how synthetic a set of shards reads, per shard and per stage.

For every shard of a stage output (or any Parquet/JSONL folder): the share of documents with LLM
proxy phrases ("as an AI language model", "delve", "tapestry", ...; ``audit.phrases``) and the rate
per 1,000 words, the refusal rate (``audit.refusals``), the share of the most common opening words
(a model repeating itself), and mean length. Grouped by the stage that last wrote each row
(``history``), so a run's folders show where model-collapse risk builds up. Written to
``audit.json`` and printed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.config import AuditConfig
from pipeline.errors import UserError


class Auditor:
    def __init__(self, cfg: AuditConfig):
        self.cfg = cfg
        self.phrases = [re.compile(r"\b" + re.escape(p.lower()) + r"\w*", re.I) for p in cfg.phrases]
        self.refusals = [re.compile(p, re.I) for p in cfg.refusals]

    def texts(self, texts: list[str]) -> dict:
        n = len(texts)
        if not n:
            return {"documents": 0}
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
        return {
            "documents": n,
            "mean_words": round(total_words / n, 1),
            "proxy_phrase_doc_rate": round(docs_with / n, 4),
            "proxy_phrases_per_1k_words": round(1000 * sum(hits.values()) / max(1, total_words), 3),
            "proxy_phrase_counts": dict(hits.most_common()),
            "refusal_rate": round(refused / n, 4),
            f"top{self.cfg.top_openings}_openings_share": round(sum(c for _, c in top) / n, 4),
            "most_common_openings": [{"opening": o, "documents": c} for o, c in top[:5]],
            "empty_documents": sum(1 for w in words if not w),
        }


def _stage_of(history) -> str:
    if history:
        last = history[-1]
        return (last.get("stage") if isinstance(last, dict) else None) or "unknown"
    return "unknown"


def audit(folder: str | Path, cfg: AuditConfig, text_column: str = "text") -> dict:
    """Audit every Parquet shard under ``folder`` (a run folder: its data/, kept/ and the like)."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"audit: {folder} does not exist")
    files = sorted(p for p in folder.rglob("*.parquet") if "_parts" not in p.parts and "removed" not in p.parts)
    if not files:
        raise UserError(f"audit: no Parquet shards under {folder}")
    a = Auditor(cfg)
    per_shard, by_stage = {}, {}
    for f in files:
        t = pq.read_table(f)
        if text_column not in t.column_names:
            raise UserError(f"audit: {f} has no column {text_column!r} (columns: {', '.join(t.column_names)})")
        texts = [x or "" for x in t.column(text_column).to_pylist()]
        hist = t.column("history").to_pylist() if "history" in t.column_names else [None] * len(texts)
        per_shard[str(f.relative_to(folder))] = a.texts(texts)
        for text, h in zip(texts, hist):
            by_stage.setdefault(_stage_of(h), []).append(text)
    overall = a.texts([x for v in by_stage.values() for x in v])
    return {"folder": str(folder), "overall": overall, "by_stage": {k: a.texts(v) for k, v in by_stage.items()},
            "by_shard": per_shard}


def summary_line(r: dict) -> str:
    o = r["overall"] if "overall" in r else r
    if not o.get("documents"):
        return "audit: no documents"
    key = next(k for k in o if k.endswith("_openings_share"))
    return (f"audit: {o['documents']} documents, {o['mean_words']:.0f} words on average; proxy phrases in "
            f"{o['proxy_phrase_doc_rate']:.1%} ({o['proxy_phrases_per_1k_words']:.2f} per 1k words); refusals "
            f"{o['refusal_rate']:.1%}; {key.split('_')[0]} openings cover {o[key]:.1%}")


def write(r: dict, out: Path) -> None:
    from pipeline.io.writer import _atomic_write_text

    _atomic_write_text(out, json.dumps(r, indent=2, ensure_ascii=False))
