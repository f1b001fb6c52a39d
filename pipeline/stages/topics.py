"""Topics: embed a sample of seeds, cluster them, have the LLM name and rate each cluster.

Clustering is scikit-learn's KMeans on L2-normalised embeddings (so Euclidean k-means ranks points
as cosine similarity does). K-means because generation needs what it gives: a centroid per topic,
so that every later seed (and seeds of a later run) can be assigned by one nearest-centroid lookup,
and no "noise" class that would leave seeds without a topic by construction. The number of clusters
is not a guess: with ``n_clusters: auto`` it is the k between ``min_clusters`` and ``max_clusters``
(capped at one cluster per 5 sampled seeds) with the best cosine silhouette on the sample.

Each cluster is shown to the LLM through a few random members: one prompt names the subject, a
second rates its educational value 1-5 (choice-constrained to a digit). When the free-text name
cannot be read (small models ramble), the LLM picks the name among the cluster's most distinctive
TF-IDF words instead (choice-constrained); a cluster still unnamed or unrated is dropped with that
reason, never given a default. Topics are kept or dropped by
rating and by the ``keep``/``drop`` lists. Centroids and labels are saved (``topics/``) and reused
by the generation tasks and by later runs.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from pipeline.config import Config, Strict
from pipeline.errors import UserError
from pipeline.llm.engine import sampling_for
from pipeline.llm.types import Request
from pipeline.prompts import template


class TopicsConfig(Strict):
    enabled: bool = True
    sample_size: int = Field(default=2000, ge=8)  # seeds embedded and clustered
    n_clusters: int | Literal["auto"] = "auto"  # auto: the best silhouette between min and max clusters
    min_clusters: int = Field(default=4, ge=2)
    max_clusters: int = Field(default=40, ge=2)
    members_for_label: int = Field(default=5, ge=1)  # random members shown to the LLM per cluster
    member_chars: int = Field(default=400, ge=50)
    min_rating: int = Field(default=2, ge=1, le=5)  # topics rated below are dropped (1-5 educational value)
    keep: list[str] = []  # only these topics (by label, case-insensitive); empty: all
    drop: list[str] = []
    max_distance: float = Field(default=0.75, gt=0, le=2)  # cosine distance beyond which a seed gets no topic
    # an LLM name must resemble its cluster: nearest to its own centroid, at least this cosine (else the keyword pick)
    min_label_similarity: float = Field(default=0.2, ge=-1, le=1)
    include_probability: float = Field(default=0.7, ge=0, le=1)  # how often the topic is named in the prompt

    @model_validator(mode="after")
    def _lists(self) -> "TopicsConfig":
        both = {t.lower() for t in self.keep} & {t.lower() for t in self.drop}
        if both:
            raise ValueError(f"topics listed in both keep and drop: {', '.join(sorted(both))}")
        if self.max_clusters < self.min_clusters:
            raise ValueError("max_clusters must be >= min_clusters")
        return self


DIGITS = {"type": "choice", "choices": ["1", "2", "3", "4", "5"]}


@dataclass
class Topic:
    id: int
    label: str | None
    rating: int | None
    size: int
    kept: bool
    reason: str | None  # why it was dropped
    examples: list[str]  # ids of members shown to the LLM
    keywords: str = ""
    label_method: str | None = None  # free (named by the LLM) | keyword_choice (picked among keywords)
    rejected_label: dict | None = None  # the LLM's free name, when it did not resemble the cluster, and why


class TopicModel:
    def __init__(self, topics: list[Topic], centroids: np.ndarray, max_distance: float, info: dict):
        self.topics, self.centroids, self.max_distance, self.info = topics, centroids, max_distance, info

    def assign(self, emb: np.ndarray) -> list[tuple[Topic | None, float]]:
        """Nearest topic per embedding, and the cosine distance; None beyond ``max_distance``."""
        if len(emb) == 0:
            return []
        dist = 1.0 - emb @ self.centroids.T
        best = dist.argmin(axis=1)
        out = []
        for i, j in enumerate(best):
            d = float(dist[i, j])
            out.append((self.topics[j] if d <= self.max_distance else None, d))
        return out

    def save(self, folder: Path) -> None:
        from pipeline.io.writer import atomic_write_text

        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "centroids.npy", self.centroids)
        atomic_write_text(folder / "topics.json", json.dumps(
            {**self.info, "max_distance": self.max_distance, "topics": [asdict(t) for t in self.topics]},
            indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> "TopicModel":
        data = json.loads((folder / "topics.json").read_text())
        topics = [Topic(**t) for t in data.pop("topics")]
        return cls(topics, np.load(folder / "centroids.npy"), data.pop("max_distance"), data)


def choose_k(emb: np.ndarray, cfg, seed: int) -> tuple[int, dict[int, float]]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(emb)
    if cfg.n_clusters != "auto":
        if cfg.n_clusters > n:
            raise UserError(f"generate.topics.n_clusters is {cfg.n_clusters} but only {n} seeds were sampled")
        return cfg.n_clusters, {}
    hi = max(2, min(cfg.max_clusters, n // 5))
    lo = min(cfg.min_clusters, hi)
    grid = sorted({int(round(k)) for k in np.geomspace(lo, hi, num=min(8, hi - lo + 1))})
    scores = {}
    for k in grid:
        labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(emb)
        if len(set(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(emb, labels, metric="cosine", sample_size=min(n, 2000), random_state=seed))
    if not scores:
        return lo, {}
    return max(scores, key=scores.get), scores


def _clean_label(text: str) -> str | None:
    """The subject name in a reply; small models wrap it ("The subject is ...", lists, quotes)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    line = lines[0]
    if line.endswith(":") and len(lines) > 1:  # "The subjects are:\n- Tenancy law"
        line = lines[1]
    quoted = re.search(r"[\"“]([^\"”]{3,60})[\"”]", line)
    if quoted:
        line = quoted.group(1)
    line = re.sub(r"^((subject|topic|answer|name)\s*:\s*)+", "", line, flags=re.IGNORECASE)
    line = re.sub(r"^(the\s+)?(common\s+|shared\s+)?(subject|topic)s?\b.*?\b(is|are|of)\s+", "", line, flags=re.IGNORECASE)
    line = re.sub(r"^([-*•]|\d+[.)]|\[\d+\])\s*", "", line)
    line = line.strip(" \"'*`.#-:")
    if not line or len(line) > 60 or len(line.split()) > 8 or not re.search(r"[A-Za-z]", line):
        return None
    return line[0].upper() + line[1:]


def label_unfit(labels: dict[int, str | None], centroids: np.ndarray, encoder, min_similarity: float) -> dict[int, str]:
    """Labels that do not name their own cluster: cluster -> why. A label must be closer to its own
    cluster's centroid than to any other's, and at least ``min_similarity`` (cosine) from it."""
    named = [c for c, lab in labels.items() if lab]
    if not named:
        return {}
    sims = encoder.encode([labels[c] for c in named]) @ centroids.T
    out = {}
    for row, c in zip(sims, named):
        best = int(row.argmax())
        if best != c and len(centroids) > 1:
            out[c] = f"closer to cluster {best} ({row[best]:.2f}) than to its own ({row[c]:.2f})"
        elif row[c] < min_similarity:
            out[c] = f"similarity to its cluster {row[c]:.2f} < {min_similarity:g}"
    return out


# verbs of explanatory prose: a cluster's distinctive word, never its name ("Refers" was a topic)
NOT_TOPICS = ("refers", "refer", "uses", "used", "using", "provides", "provided", "returns", "returned", "called",
              "calls", "defines", "defined", "allows", "allowed", "makes", "means", "contains", "supports",
              "implements", "includes", "described", "describes", "given", "gives", "need", "needs", "based")


def keywords(texts: list[str], labels, k: int, n: int = 8) -> dict[int, str]:
    """The words that set each cluster apart (TF-IDF over clusters as documents), shown to the LLM."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

    docs = [" ".join(texts[i][:3000] for i in range(len(texts)) if labels[i] == c) for c in range(k)]
    vec = TfidfVectorizer(stop_words=sorted(ENGLISH_STOP_WORDS | set(NOT_TOPICS)), max_features=20000,
                          token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]{2,}\b")
    m = vec.fit_transform(docs)
    vocab = vec.get_feature_names_out()
    return {c: ", ".join(vocab[j] for j in m[c].toarray()[0].argsort()[::-1][:n]) for c in range(k)}


def build_topics(cfg: Config, texts: list[str], ids: list[str], engine, encoder, printer=print) -> TopicModel:
    from sklearn.cluster import KMeans

    t = cfg.generate.topics
    seed = cfg.run.seed
    if len(texts) < 2:
        raise UserError(f"topics need at least 2 seeds to cluster, got {len(texts)}")
    emb = encoder.encode(texts)
    k, scores = choose_k(emb, t, seed)
    km = KMeans(n_clusters=k, n_init=5, random_state=seed).fit(emb)
    centroids = km.cluster_centers_ / np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True)
    rng = random.Random(seed)
    members = {c: [i for i, lab in enumerate(km.labels_) if lab == c] for c in range(k)}
    shown = {c: rng.sample(m, min(len(m), t.members_for_label)) for c, m in members.items()}
    extracts = {c: [texts[i][: t.member_chars] for i in idx] for c, idx in shown.items()}
    prompts_dir = cfg.generate.prompts_dir
    label_t, rate_t = template("topics", "label", prompts_dir), template("topics", "rate", prompts_dir)
    greedy = dict(temperature=0.0, max_tokens=24)
    words = keywords(texts, km.labels_, k)
    label_reqs = [Request(f"topic-label-{c}", [{"role": "user", "content": label_t.render(extracts=extracts[c], keywords=words[c])}],
                          sampling_for(cfg.llm, f"topic-label-{c}", seed, **greedy)) for c in range(k)]
    labels = {c: (_clean_label(r.text) if not r.error else None) for c, r in enumerate(engine.generate(label_reqs))}
    rejected: dict[int, dict] = {}
    from pipeline.gate import QualityGate

    gate = QualityGate(cfg.quality_gate)
    if gate.enabled:  # a label in mixed scripts or looping is not a name: the cluster picks among its keywords
        labels = {c: (lab if lab and gate.check(lab, kind="short").passed else None) for c, lab in labels.items()}
        unfit = label_unfit(labels, centroids, encoder, t.min_label_similarity)
        for c, why in unfit.items():  # "Refers", "A list of 20+ web pages": a name that resembles no pages of its own
            rejected[c] = {"label": labels[c], "why": why}
            labels[c] = None
    method = {c: "free" for c in range(k) if labels[c]}
    # a cluster the LLM could not name freely: it picks among the cluster's distinctive words
    # (choice-constrained, so a small model's answer is still its own decision, not a default)
    pick_t = template("topics", "pick", prompts_dir)
    unnamed = [c for c in range(k) if not labels[c]]
    pick_reqs = []
    for c in unnamed:
        options = [w.capitalize() for w in words[c].split(", ") if w]
        pick_reqs.append(Request(f"topic-pick-{c}", [{"role": "user", "content": pick_t.render(
            extracts=extracts[c], keywords=", ".join(options))}],
            sampling_for(cfg.llm, f"topic-pick-{c}", seed, temperature=0.0, max_tokens=8),
            {"type": "choice", "choices": options}))
    for c, r in zip(unnamed, engine.generate(pick_reqs)):
        if not r.error:
            labels[c], method[c] = r.outputs[0].parsed, "keyword_choice"
    rate_reqs = [Request(f"topic-rate-{c}", [{"role": "user", "content": rate_t.render(topic=labels[c], extracts=extracts[c])}],
                         sampling_for(cfg.llm, f"topic-rate-{c}", seed, temperature=0.0, max_tokens=4), DIGITS)
                 for c in range(k) if labels[c]]
    ratings = {int(r.request_id.rsplit("-", 1)[1]): (int(r.outputs[0].parsed) if not r.error else None)
               for r in engine.generate(rate_reqs)}
    keep = {x.lower() for x in t.keep}
    drop = {x.lower() for x in t.drop}
    topics = []
    for c in range(k):
        label, rating = labels[c], ratings.get(c)
        reason = None
        if label is None:
            reason = "no_label"
        elif rating is None:
            reason = "no_rating"
        elif label.lower() in drop:
            reason = "drop_list"
        elif keep and label.lower() not in keep:
            reason = "not_in_keep_list"
        elif rating < t.min_rating:
            reason = "low_rating"
        topics.append(Topic(c, label, rating, len(members[c]), reason is None, reason,
                            [ids[i] for i in shown[c][:3]], words[c], method.get(c), rejected.get(c)))
    known = {tp.label.lower() for tp in topics if tp.label}
    warnings = [f"generate.topics.{name} lists {x!r}, which matches no topic (topics: "
                f"{', '.join(sorted(tp.label for tp in topics if tp.label))})"
                for name, entries in (("keep", t.keep), ("drop", t.drop)) for x in entries if x.lower() not in known]
    for w in warnings:
        printer(f"warning: {w}")
    if not any(tp.kept for tp in topics):
        raise UserError("every topic was dropped (" + ", ".join(f"{tp.label or tp.id}: {tp.reason}" for tp in topics)
                        + "); lower generate.topics.min_rating or change the keep/drop lists")
    info = {"k": k, "silhouette_by_k": scores, "sample_size": len(texts), "warnings": warnings,
            "encoder": cfg.encoder.model, "model": cfg.llm.model}
    return TopicModel(topics, centroids.astype(np.float32), t.max_distance, info)
