"""Meaning: is an LLM output about its source, does it hold together, is it any good?

Form checks (pipeline/gate.py) pass fluent nonsense: a reply about WordPress plugins written from a
page on Python's ``io`` module reads like a web page. Three measurements catch what form cannot:

- ``faithfulness``: cosine between the embeddings of the source (the seed extract, the rephrased
  chunk) and the output, with the encoder section's model (all-MiniLM-L6-v2 by default). On real
  web pages the first 150 words against the next 300 give a median of 0.64 (97% reach 0.30);
  the 135M model's off-seed textbooks gave a median of 0.04.
- ``coherence``: cosine between the two halves of the output's first ``coherence_words`` words
  (does it drift away from itself?); real pages: median 0.63, 99% reach 0.20.
- ``quality``: any configured classifier's score of the output and of its source, and the
  difference (classifiers/scorer.py).

Everything is measured in batches (one encoder call per chunk of replies), so the checks cost a few
percent of the generation's time.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import EncoderConfig
from pipeline.gate_config import MeaningCheck

# check names, in the order they are reported (filter_reason gate_<name>)
MEANING_CHECKS = ("off_topic", "incoherent", "quality_drop")


def check_meaning(cfg: MeaningCheck) -> None:
    """Before the tasks start: a quality classifier that cannot load is one line, not a task's traceback."""
    if cfg.enabled and cfg.quality.classifier:
        from classifiers.scorer import check_spec

        check_spec(cfg.quality.classifier)


def halves(text: str, words: int, min_words: int) -> tuple[str, str] | None:
    """The first ``words`` words of a text as two halves; None for a text under ``min_words``."""
    w = text.split()[:words]
    if len(w) < min_words:
        return None
    mid = len(w) // 2
    return " ".join(w[:mid]), " ".join(w[mid:])


def _round(x) -> float | None:
    return None if x is None else round(float(x), 4)


class Meaning:
    """Built once per task; the encoder and the scorer load on first use."""

    def __init__(self, cfg: MeaningCheck, encoder: EncoderConfig | None = None):
        self.cfg, self.encoder_cfg = cfg, encoder or EncoderConfig()
        self._scorer = None

    @property
    def encoder(self):
        from pipeline.embed import shared_encoder

        return shared_encoder(self.encoder_cfg)

    @property
    def scorer(self):
        q = self.cfg.quality
        if q.classifier and self._scorer is None:
            from classifiers.scorer import load_scorer

            self._scorer = load_scorer(q.classifier, q.device)
        return self._scorer

    def measure(self, texts: list[str], sources: list[str | None] | None = None) -> list[dict]:
        """Per text: faithfulness (with a source), coherence (when long enough), quality of text and
        source and their difference (with a classifier). Missing measurements are None."""
        n = len(texts)
        if not n:
            return []
        sources = sources or [None] * n
        out = [{"faithfulness": None, "coherence": None} for _ in range(n)]
        enc = self.encoder
        with_src = [i for i in range(n) if sources[i] and texts[i].strip()]
        uniq = list(dict.fromkeys(sources[i] for i in with_src))  # two teachers answer one seed: embed it once
        cuts = {i: h for i in range(n) if (h := halves(texts[i], self.cfg.coherence_words, self.cfg.min_words))}
        batch = [texts[i] for i in with_src] + uniq + [p for h in cuts.values() for p in h]
        emb = enc.encode(batch) if batch else np.zeros((0, 1), np.float32)
        k = len(with_src)
        src_row = {s: k + j for j, s in enumerate(uniq)}
        for j, i in enumerate(with_src):
            out[i]["faithfulness"] = _round(emb[j] @ emb[src_row[sources[i]]])
        at = k + len(uniq)
        for i in cuts:
            out[i]["coherence"] = _round(emb[at] @ emb[at + 1])
            at += 2
        if self.scorer is not None:
            uniq_all = list(dict.fromkeys(s for s in sources if s))
            scores = self.scorer.score([t for t in texts] + uniq_all)
            src_score = {s: scores[n + j] for j, s in enumerate(uniq_all)}
            for i in range(n):
                q = out[i]
                q["quality"] = _round(scores[i])
                if sources[i]:
                    q["source_quality"] = _round(src_score[sources[i]])
                    q["quality_delta"] = _round(scores[i] - src_score[sources[i]])
        return out

    def failures(self, m: dict) -> dict[str, str]:
        """The meaning checks a measurement fails: check -> what failed."""
        c, fails = self.cfg, {}
        if m.get("faithfulness") is not None and m["faithfulness"] < c.min_faithfulness:
            fails["off_topic"] = f"similarity to its source {m['faithfulness']:.2f} < {c.min_faithfulness:g}"
        if m.get("coherence") is not None and m["coherence"] < c.min_coherence:
            fails["incoherent"] = f"its two halves' similarity {m['coherence']:.2f} < {c.min_coherence:g}"
        drop = c.quality.max_drop
        if drop is not None and m.get("quality_delta") is not None and m["quality_delta"] < -drop:
            fails["quality_drop"] = (f"quality {m['quality']:.2f} vs its source's {m['source_quality']:.2f} "
                                     f"(more than {drop:g} lower)")
        return fails


def rank_score(m: dict | None) -> float:
    """One number to rank answers to the same prompt by (the judge of kind ``measures``): faithfulness
    plus coherence, plus the quality score over 5 when a classifier measured it."""
    if not m:
        return float("-inf")
    return sum(m.get(k) or 0.0 for k in ("faithfulness", "coherence")) + (m.get("quality") or 0.0) / 5.0
