"""Paraphrased benchmark items: the semantic pass of ``synthweb decontaminate``.

Synthetic text rewrites what its model has seen, so a benchmark question can come back reworded with
the same answer, which no n-gram matches. After the method of LMSYS's "LLM decontaminator" (Yang et
al. 2023): a passage of a document (a window of consecutive sentences) and a benchmark item are a hit
when they are close in embedding (the encoder section) and a second check confirms it. Their second
check is a strong LLM; a 135M model is no judge, so here it is an alignment of what a paraphrase must
keep, and it runs first (it is cheap, and it spares embedding every passage against every item): most
content words of the item's gold answer (stop words out, a crude stem so "heats"/"heating" agree) and
a share of the item's own content words must be in the passage; then the passage and the item must
reach ``min_similarity`` by cosine. Text on the same subject that is not the item (a hard negative)
shares its subject's words but not the item's answer, or is far from it in embedding.

bench/bench_decontaminate.py and tests/test_decontaminate.py plant hand-written paraphrases and
on-topic hard negatives of items from ../shared/data/benchmarks.
"""

from __future__ import annotations

import functools
import re

import numpy as np
from pydantic import Field

from pipeline.config import Strict
from pipeline.stages.items import Item, words_of


class ParaphraseCheck(Strict):
    """The semantic pass of decontaminate (pipeline/stages/paraphrase.py): a passage keeping most of a benchmark
    item's answer and a share of its content words, confirmed by the encoder's cosine."""

    enabled: bool = True
    min_similarity: float = Field(default=0.8, ge=-1, le=1)  # cosine(passage, item) that confirms a candidate
    min_content_overlap: float = Field(default=0.3, gt=0, le=1)  # share of the item's content words in the passage
    min_answer_overlap: float = Field(default=0.75, ge=0, le=1)  # share of its gold answer's content words there
    # items whose answer has no content word (yes/no, a letter): more of their own words and a closer embedding
    no_answer_min_overlap: float = Field(default=0.5, gt=0, le=1)
    no_answer_min_similarity: float = Field(default=0.85, ge=-1, le=1)
    min_content_words: int = Field(default=4, ge=1)  # items with fewer content words are left to the n-gram pass
    sentences: list[int] = [2, 3, 4]  # passages: windows of each of these many consecutive sentences (stride 1)
    max_passage_words: int = Field(default=150, ge=10)
    max_candidates: int = Field(default=5, ge=1)  # items per document whose best passages the encoder confirms
    passages_per_item: int = Field(default=3, ge=1)
    batch: int = Field(default=64, ge=1)  # documents per encoder call


_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


@functools.cache
def _stop_words() -> frozenset[str]:
    # on first use, not at import: scikit-learn takes 1.2 s to import, and every CLI call loads this module
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | {"question", "answer", "following", "best", "statement", "describes",
                                            "explains", "example", "likely", "used", "use"}


def _stem(w: str) -> str:
    for suffix in ("ing", "ed", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not w.endswith("ss"):
            w = w[: -len(suffix)]
            break
    return w[:6]


def content_words(text: str) -> set[str]:
    """Words that carry an item's meaning: no stop words, no single letters, a crude stem ("heating" =
    "heat", "homes" = "home") cut to 6 letters ("photosynthesis" = "photosynthetic")."""
    return {_stem(w) for w in words_of(text.replace("_", "")) if w not in _stop_words() and len(w) > 1}


def passages(text: str, sizes: list[int], max_words: int) -> list[str]:
    """Windows of each size in ``sizes`` of consecutive sentences (stride 1), each cut at ``max_words`` words:
    a paraphrased item is a question and its answer in one to a few sentences, among the page's own."""
    sents = [s.strip() for s in _SENT.split(text) if s and s.strip()]
    out: dict[str, None] = {}
    for k in sizes:
        for i in range(max(1, len(sents) - k + 1)):
            out[" ".join(" ".join(sents[i:i + k]).split()[:max_words])] = None
    return [p for p in out if p]


class SemanticIndex:
    """Benchmark items indexed by their content words; ``match_many`` finds paraphrased items in a batch of
    documents. Items are embedded only when a passage makes them a candidate (and then once per task), so a
    run against all 29k items of ../shared/data/benchmarks embeds the few hundred that come close."""

    def __init__(self, items: list[Item], encoder, cfg):
        from scipy import sparse

        self.cfg, self.encoder = cfg, encoder
        words = [content_words(it.text) for it in items]
        keep = [i for i, w in enumerate(words) if len(w) >= cfg.min_content_words]
        self.items = [items[i] for i in keep]
        self.words = [words[i] for i in keep]
        self.answers = [content_words(it.answer) for it in self.items]
        self.vocab: dict[str, int] = {}
        rows, cols = [], []
        for i, ws in enumerate(self.words):
            for w in ws:
                rows.append(i)
                cols.append(self.vocab.setdefault(w, len(self.vocab)))
        self.q = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(self.items), len(self.vocab)))
        self.sizes = np.array([len(w) for w in self.words], np.float32)
        df = np.asarray(self.q.sum(axis=0)).ravel()
        idf = np.log((1 + len(self.items)) / (1 + df)).astype(np.float32)  # rare words say more about an item
        self.idf_q = self.q.multiply(idf[None, :]).tocsr()
        self.idf_total = np.asarray(self.idf_q.sum(axis=1)).ravel() + 1e-9
        self._emb: dict[int, np.ndarray] = {}

    def _item_embeddings(self, idx: list[int]) -> np.ndarray:
        todo = [i for i in idx if i not in self._emb]
        if todo:
            for i, e in zip(todo, self.encoder.encode([self.items[i].text for i in todo])):
                self._emb[i] = e
        return np.stack([self._emb[i] for i in idx])

    def _candidates(self, parts: list[str]) -> list[tuple[int, int, float, float]]:
        """(passage, item, content overlap, its IDF-weighted share) where the passage keeps what a paraphrase
        of the item must keep."""
        from scipy import sparse

        c = self.cfg
        have = [content_words(p) for p in parts]
        rows, cols = [], []
        for r, ws in enumerate(have):
            for w in ws:
                j = self.vocab.get(w)
                if j is not None:
                    rows.append(r)
                    cols.append(j)
        if not rows:
            return []
        pm = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(parts), len(self.vocab)))
        counts = (pm @ self.q.T).tocoo()
        share = counts.data / self.sizes[counts.col]
        ok = (counts.data >= 2) & (share >= c.min_content_overlap)
        weighted = pm @ self.idf_q.T
        out = []
        for r, i, sh in zip(counts.row[ok], counts.col[ok], share[ok]):
            answer = self.answers[i]
            if answer:
                if len(answer & have[r]) / len(answer) < c.min_answer_overlap:
                    continue
            elif sh < c.no_answer_min_overlap:
                continue
            out.append((int(r), int(i), float(sh), float(weighted[r, i] / self.idf_total[i])))
        return out

    def match_many(self, texts: list[str]) -> list[tuple[Item, float, float, str] | None]:
        """Per document: (item, cosine, content overlap, passage) of its best confirmed paraphrase, or None."""
        c = self.cfg
        out: list = [None] * len(texts)
        if not self.items:
            return out
        owner, parts = [], []
        for d, t in enumerate(texts):
            for p in passages(t, c.sentences, c.max_passage_words):
                owner.append(d)
                parts.append(p)
        # per document, the items with the most of their rare words in one passage (max_candidates of them), each
        # with its passages_per_item best passages (rarest words kept, then the shortest): the encoder sees a few
        # passages per document, not every window against every item
        by_item: dict[tuple[int, int], list] = {}
        for r, i, sh, w in self._candidates(parts) if parts else []:
            by_item.setdefault((owner[r], i), []).append((r, i, sh, w))
        per_doc: dict[int, list] = {}
        for (d, _), xs in by_item.items():
            xs.sort(key=lambda x: (-x[3], len(parts[x[0]])))
            per_doc.setdefault(d, []).append(xs[: c.passages_per_item])
        cands = [x for groups in per_doc.values() for g in sorted(groups, key=lambda g: -g[0][3])[: c.max_candidates]
                 for x in g]
        if not cands:
            return out
        used = sorted({r for r, _, _, _ in cands})
        at = {r: k for k, r in enumerate(used)}
        pe = self.encoder.encode([parts[r] for r in used])
        ie = self._item_embeddings([i for _, i, _, _ in cands])
        for (r, i, sh, _), e in zip(cands, ie):
            sim = float(pe[at[r]] @ e)
            need = c.min_similarity if self.answers[i] else c.no_answer_min_similarity
            d = owner[r]
            if sim >= need and (out[d] is None or sim > out[d][1]):
                out[d] = (self.items[i], sim, sh, parts[r])
        return out
