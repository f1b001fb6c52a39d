"""Diversity report of a generation run: is the synthetic data varied, or one text in many copies?

Counts by topic / audience / format, the share of the 20 most common opening phrases (first four
words), the near-duplicate rate among generations (word 5-gram Jaccard >= 0.8 to an earlier one, on a
sample), and the mean pairwise cosine similarity of their embeddings (on a sample).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

WORD = re.compile(r"\w+")
MIN_FOR_OPENINGS = 300  # as audit.min_documents_for_openings


def _shingles(text: str, n: int = 5) -> set:
    words = WORD.findall(text.lower())
    return {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def report(data_dir: Path, encoder=None, sample: int = 1000, seed: int = 0) -> dict:
    cols = ["text", "topic", "audience", "format", "persona"]
    rows = []
    for f in sorted(data_dir.glob("*.parquet")):
        rows += pq.read_table(f, columns=cols).to_pylist()
    if not rows:
        return {"generations": 0}
    rng = random.Random(seed)
    openings = Counter(" ".join(WORD.findall(r["text"].lower())[:4]) for r in rows)
    top = openings.most_common(20)
    picked = rows if len(rows) <= sample else rng.sample(rows, sample)
    shingles = [_shingles(r["text"]) for r in picked]
    dups = 0
    for i, s in enumerate(shingles):
        for t in shingles[:i]:
            inter = len(s & t)
            if inter and inter / len(s | t) >= 0.8:
                dups += 1
                break
    out = {
        "generations": len(rows),
        "by_topic": dict(Counter(r["topic"] or "(none)" for r in rows).most_common()),
        "by_audience": dict(Counter(r["audience"] for r in rows).most_common()),
        "by_format": dict(Counter(r["format"] for r in rows).most_common()),
        "with_persona": sum(1 for r in rows if r["persona"]),
        "top20_openings": [{"opening": o, "count": c} for o, c in top],
        # a share of "the 20 most common openings" over a few dozen texts is 100% by construction
        "top20_openings_share": round(sum(c for _, c in top) / len(rows), 4) if len(rows) >= MIN_FOR_OPENINGS else None,
        "near_duplicate_rate": round(dups / len(picked), 4),
        **({} if len(rows) >= MIN_FOR_OPENINGS else
           {"openings_note": f"the top-20 openings share is not rated below {MIN_FOR_OPENINGS} texts (have {len(rows)})"}),
        "near_duplicate_sample": len(picked),
    }
    if encoder is not None and len(picked) >= 2:
        emb = encoder.encode([r["text"] for r in picked[:500]])
        sim = emb @ emb.T
        n = len(emb)
        out["mean_pairwise_similarity"] = round(float((sim.sum() - np.trace(sim)) / (n * (n - 1))), 4)
        out["similarity_sample"] = n
    return out
