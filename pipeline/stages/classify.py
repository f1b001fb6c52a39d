"""``synthweb classify`` and ``synthweb filter``: quality scores on every document, then the cut.

classify: each task streams its shards in chunks of ``classify.chunk_size`` documents; each
classifier embeds a chunk in length-sorted, token-budgeted batches (bf16 autocast on a GPU) and adds
``score`` (float) and ``int_score`` (0-5) from the first classifier, every classifier's score in
``classifier_scores``, and, for an ensemble (Nemotron-CC), ``quality_bin`` and ``quality_bucket``:
before the tasks, a sample is scored by every classifier and cut into ``classify.bins``
token-weighted percentile bins per classifier (each bin holds about the same number of words); a
document's ensemble bin is the highest of its bins, and the bucket is the label whose range holds it.

filter: keeps documents with ``int_score`` (or ``score``) at or above the threshold, or in a bucket at
or above the named one, in ``kept/``; every other document goes to ``removed/`` with its reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pyarrow as pa
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from pydantic import Field, model_validator

from classifiers.config import ClassifierConfig
from pipeline.config import Config, Strict
from pipeline.errors import UserError
from pipeline.llm.step import cpu_threads
from pipeline.stages import Call, Option, Stage
from pipeline.stages.base import RunOnce, StageContext


class ClassifyConfig(Strict):
    """``synthweb classify``: score every document with one or more classifiers (Nemotron-CC ensemble)."""

    classifiers: list[str] = []  # classifier folders; the first gives score/int_score
    ensemble: bool = True  # with several classifiers: percentile bins per classifier, ensemble = max bin
    bins: int = Field(default=20, ge=2, le=100)
    sample_size: int = Field(default=10000, ge=20)  # documents scored to fit the bin edges
    # bucket label -> first ensemble bin of that bucket (ascending); default: five equal groups of 4 bins
    buckets: dict[str, int] = {"low": 0, "medium_low": 4, "medium": 8, "medium_high": 12, "high": 16}
    chunk_size: int = Field(default=1024, ge=1)  # documents scored per call (length-sorted inside)
    device: str = "auto"
    # padded tokens per encoder batch (windows sorted by length); null: 4,096 on a CPU (the fastest of
    # bench/bench_classify.py's sweep), 32,768 on a GPU
    batch_tokens: int | None = Field(default=None, ge=256)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # the encoders' matmuls (classifier.dtype says how)

    NOT_IDENTITY: ClassVar[tuple[str, ...]] = ("batch_tokens",)  # how the work is batched, not what it scores

    @model_validator(mode="after")
    def _buckets(self) -> "ClassifyConfig":
        starts = list(self.buckets.values())
        if not starts or starts[0] != 0 or starts != sorted(set(starts)) or starts[-1] >= self.bins:
            raise ValueError(f"buckets must start at bin 0 and rise strictly below bins={self.bins}: {self.buckets}")
        return self


class FilterConfig(Strict):
    """``synthweb filter``: keep documents at or above a threshold (int_score) or a bucket."""

    threshold: float | None = 3
    column: Literal["int_score", "score"] = "int_score"  # FineWeb-Edu keeps int_score >= 3
    bucket: str | None = None  # instead of the threshold: keep this quality bucket and the ones above


CLASSIFY_FIELDS = [
    pa.field("score", pa.float32()),
    pa.field("int_score", pa.int8()),
    pa.field("classifier", pa.string()),
    pa.field("classifier_scores", pa.string()),  # JSON {classifier: score}
    pa.field("quality_bins", pa.string()),  # JSON {classifier: bin}, ensemble only
    pa.field("quality_bin", pa.int8()),  # ensemble: max over classifiers
    pa.field("quality_bucket", pa.string()),
]
FILTER_REMOVED = CLASSIFY_FIELDS + [pa.field("filter_reason", pa.string()), pa.field("error_detail", pa.string())]


def words(texts: list[str]) -> np.ndarray:
    """Token weights for the percentile bins (whitespace words: proportional to tokens, and free)."""
    return np.array([max(1, len(t.split())) for t in texts], dtype=np.float64)


def weighted_edges(scores: np.ndarray, weights: np.ndarray, bins: int) -> list[float]:
    """Score cut points so that each of ``bins`` bins holds about the same total weight."""
    order = np.argsort(scores, kind="stable")
    s, w = scores[order], weights[order]
    cum = np.cumsum(w) / w.sum()
    return [float(s[min(np.searchsorted(cum, q / bins, side="left"), len(s) - 1)]) for q in range(1, bins)]


def bin_of(scores: np.ndarray, edges: list[float]) -> np.ndarray:
    return np.searchsorted(np.asarray(edges), scores, side="right").astype(np.int8)


def bucket_of(b: int, buckets: dict[str, int]) -> str:
    label = next(iter(buckets))
    for name, start in buckets.items():
        if b >= start:
            label = name
    return label


def load_classifiers(cfg: Config):
    from classifiers.model import Classifier

    c = cfg.classify
    if not c.classifiers:
        raise UserError("no classifier given: pass --classifier DIR (repeatable) or set classify.classifiers")
    loaded = [Classifier.load(p, c.device, c.batch_tokens, c.dtype) for p in c.classifiers]
    names = [m.name for m in loaded]
    if len(set(names)) != len(names):  # two folders with the same name: tell them apart by position
        for i, m in enumerate(loaded):
            m.name = f"{m.name}#{i}"
    return loaded


def fingerprints(cfg: Config) -> str:
    """What the classifiers are (a retrained classifier makes earlier scores stale)."""
    out = []
    for folder in cfg.classify.classifiers:
        try:
            out.append(json.loads((Path(folder) / "config.json").read_text()).get("fingerprint") or folder)
        except (OSError, ValueError):
            out.append(folder)
    return "|".join(out)


def use_ensemble(cfg: Config) -> bool:
    return cfg.classify.ensemble and len(cfg.classify.classifiers) > 1


class ClassifyStep(PipelineStep):
    name = "🏷 classify"
    type = "🔢 - SCORER"
    preload = ("sentence_transformers",)  # imported once per stage, in the forkserver (pipeline/executor.py)

    def __init__(self, cfg: Config, bins_path: str | None, threads: int | None):
        super().__init__()
        self.cfg, self.bins_path, self.threads = cfg, bins_path, threads
        self.bins = None

    def _score(self, chunk: list[Document]):
        texts = [d.text for d in chunk]
        results = [(m, *m.score(texts)) for m in self.models]
        first, s0, i0 = results[0]
        for k, doc in enumerate(chunk):
            meta = doc.metadata
            meta.update(score=float(s0[k]), int_score=int(i0[k]), classifier=first.name,
                        classifier_scores=json.dumps({m.name: round(float(s[k]), 4) for m, s, _ in results}))
            if self.bins:
                per = {m.name: int(bin_of(s[k : k + 1], self.bins["edges"][m.name])[0]) for m, s, _ in results}
                top = max(per.values())
                meta.update(quality_bins=json.dumps(per), quality_bin=top,
                            quality_bucket=bucket_of(top, self.cfg.classify.buckets))
                self.stat_update(f"bucket_{meta['quality_bucket']}")
            self.stat_update(f"int_score_{int(i0[k])}")
            self.update_doc_stats(doc)
            yield doc

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        self.models = load_classifiers(self.cfg)
        if self.bins_path:  # written by the preparation (on Slurm: a job that ran before this one)
            self.bins = json.loads(Path(self.bins_path).read_text())
        chunk: list[Document] = []
        for doc in data:
            chunk.append(doc)
            if len(chunk) >= self.cfg.classify.chunk_size:
                with self.track_time(unit="chunk"):
                    yield from self._score(chunk)
                chunk = []
        if chunk:
            yield from self._score(chunk)


def prepare_bins(ctx: StageContext, printer=print) -> dict | None:
    """Ensemble bin edges per classifier from a sample (saved, and reused on a rerun)."""
    cfg = ctx.cfg
    if not use_ensemble(cfg):
        return None
    path = ctx.logging_dir / "ensemble_bins.json"
    if path.exists():
        return json.loads(path.read_text())
    from pipeline.io.readers import make_reader
    from pipeline.io.writer import atomic_write_text

    c = cfg.classify
    reader = make_reader(ctx.plan, cfg.input.model_copy(update={"limit": c.sample_size}))
    texts = [d.text for d in reader.run(None, rank=0, world_size=1)]
    if not texts:
        raise UserError(f"{cfg.input.source}: no documents to classify")
    w = words(texts)
    edges = {}
    for m in load_classifiers(cfg):
        s, _ = m.score(texts)
        edges[m.name] = weighted_edges(s, w, c.bins)
    bins = {"bins": c.bins, "sample": len(texts), "sample_words": int(w.sum()), "edges": edges, "buckets": c.buckets}
    atomic_write_text(path, json.dumps(bins, indent=2))
    printer(f"classify: ensemble bins from {len(texts):,} sampled documents for {', '.join(edges)}")
    return bins


def build_classify(ctx: StageContext) -> list:
    cfg = ctx.cfg
    if cfg.executor.kind == "local" and not use_ensemble(cfg):
        load_classifiers(cfg)  # a broken classifier folder fails here, once
    else:  # no model in the launching process (a cluster's login node): the folders are checked, the jobs load them
        if not cfg.classify.classifiers:
            raise UserError("no classifier given: pass --classifier DIR (repeatable) or set classify.classifiers")
        for folder in cfg.classify.classifiers:
            if not (Path(folder) / "config.json").is_file():
                raise UserError(f"classify: {folder} is not a classifier folder (no config.json; train one with "
                                "synthweb train-classifier)")
    bins = None
    if use_ensemble(cfg):
        bins = ctx.logging_dir / "ensemble_bins.json"
        if not bins.exists():
            ctx.run_first([RunOnce(prepare_bins, ctx.for_job())], ctx.logging_dir / "bins", tasks=1, name="bins")
    return [
        ctx.task_start(), ctx.reader(), ctx.progress(),
        ClassifyStep(cfg, str(bins) if bins else None, cpu_threads(cfg)),
        ctx.writer("data", "main", CLASSIFY_FIELDS),
    ]


# ------------------------------------------------------------------ filter


class ThresholdFilter(PipelineStep):
    name = "🔻 quality filter"
    type = "🔻 - FILTER"

    def __init__(self, cfg: Config, removed):
        super().__init__()
        self.f, self.buckets, self.removed = cfg.filter, cfg.classify.buckets, removed

    def _verdict(self, doc: Document) -> str | None:
        meta = doc.metadata
        if self.f.bucket:
            got = meta.get("quality_bucket")
            if got is None:
                raise UserError(f"record {doc.id}: no quality_bucket (classify with several classifiers first, or "
                                "filter by --threshold)")
            names = list(self.buckets)
            if got not in names:
                raise UserError(f"record {doc.id}: quality bucket {got!r} is not one of {', '.join(names)}")
            if names.index(got) < names.index(self.f.bucket):
                return f"bucket {got} below {self.f.bucket}"
            return None
        value = meta.get(self.f.column)
        if value is None:
            raise UserError(f"record {doc.id}: no {self.f.column} column (run synthweb classify first)")
        if float(value) < self.f.threshold:
            return f"{self.f.column} {float(value):g} < {self.f.threshold:g}"
        return None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.removed:
            for doc in data:
                why = self._verdict(doc)
                if why is None:
                    self.stat_update("kept")
                    self.update_doc_stats(doc)
                    yield doc
                    continue
                self.stat_update("dropped")
                self.stat_update("dropped_below_threshold" if not self.f.bucket else "dropped_below_bucket")
                doc.metadata.update(filter_reason="below_bucket" if self.f.bucket else "below_threshold", error_detail=why)
                self.removed.write(doc, rank=rank)


def check_filter_input(cfg: Config, plan) -> None:
    """Before any task: the input must carry the column the filter reads (names the file)."""
    import pyarrow.parquet as pq

    f = cfg.filter
    if f.bucket and f.bucket not in cfg.classify.buckets:
        raise UserError(f"filter.bucket {f.bucket!r} is not one of the buckets: {', '.join(cfg.classify.buckets)}")
    if not f.bucket and f.threshold is None:
        raise UserError("give filter.threshold (--threshold) or filter.bucket (--bucket)")
    need = "quality_bucket" if f.bucket else f.column
    for name in plan.files[:1]:
        path = Path(name) if Path(name).exists() else Path(plan.root or "") / name
        if path.suffix == ".parquet":
            cols = pq.read_schema(path).names
            if need not in cols:
                raise UserError(f"{path}: no {need!r} column (columns: {', '.join(cols)}); run synthweb classify first")


def build_filter(ctx: StageContext) -> list:
    cfg = ctx.cfg
    check_filter_input(cfg, ctx.plan)
    return [
        ctx.task_start(), ctx.reader(), ctx.progress(),
        ThresholdFilter(cfg, ctx.writer("removed", "filter", FILTER_REMOVED)),
        ctx.writer("kept", "main", CLASSIFY_FIELDS),
    ]


# ------------------------------------------------------------------ the three stages of this module


def train_main(cfg: Config, force: bool = False, progress: bool = True) -> dict:
    from classifiers.train import train_classifier
    from pipeline.io.lock import output_lock

    with output_lock(Path(cfg.run.output), "train-classifier", beside=True):  # the folder is replaced whole at the end
        return train_classifier(cfg.classifier, cfg.input.source, cfg.run.output, force=force)


def _train_lines(cfg: Config, m: dict) -> list[str]:
    return [f"{m['evaluated_on']} split ({m['n_evaluated']:,} texts): binary F1@{m['threshold']:g} {m['binary_f1']:.3f} "
            f"(precision {m['precision']:.3f}, recall {m['recall']:.3f}), macro-F1 {m['macro_f1']:.3f}, "
            f"accuracy {m['accuracy']:.3f}; uncalibrated binary F1 {m['uncalibrated']['binary_f1']:.3f}",
            f"per-class F1 {m['per_class_f1']}",
            f"wrote {cfg.run.output} (config.json, model weights, metrics.json, confusion_matrix.png, README.md)"]


TRAIN = Stage(
    settings={"classifier": ClassifierConfig},
    name="train-classifier", help="labelled texts -> BERT-style filter classifier (safetensors + card + metrics)",
    description="Deduplicate the labelled texts, split them stratified into train/validation/test, train an "
    "encoder classifier (classifier.mode frozen or finetune; or classifier.kind fasttext), choose the decision "
    "cut on validation data and report binary P/R/F1 at classifier.threshold, per-class F1, macro-F1 and the "
    "confusion matrix on the test split. Writes OUTPUT/config.json, model.safetensors, metrics.json, "
    "confusion_matrix.png and README.md (the model card).",
    main=train_main, summary=_train_lines,
    input_help="labelled Parquet/JSONL file or folder (e.g. an annotate run's data/)", output_help="the classifier folder to write",
    options=(Option(("--label-column",), "label column (sets classifier.label_column; default score)",
                    override=lambda v: [f"classifier.label_column={v}"]),
             Option(("--text-column",), "text column (sets classifier.text_column; default text)",
                    override=lambda v: [f"classifier.text_column={v}"])),
    plan=lambda run: [Call(run.out / "annotate" / "data", run.out / "classifier")],
    folder="classifier", markers=("config.json", "metrics.json"),
    needs=("input", "output"), required="train-classifier needs --input (labelled Parquet/JSONL) and --output (the classifier folder)",
)


def classify_main(cfg: Config, force: bool = False, progress: bool = True) -> dict:
    from pipeline.stages.base import run_stage

    return run_stage("classify", cfg, build_classify, force=force, progress=progress, extra_hash=fingerprints(cfg))


STAGE = Stage(
    settings={"classify": ClassifyConfig},
    sections=("run", "input", "executor", "writer", "classify"), funnel="classified",
    name="classify", help="shards -> the same shards with score/int_score (and ensemble bins) from classifiers",
    description="Score every document of --input with each --classifier: score and int_score from the first, "
    "every classifier's score in classifier_scores; with several classifiers, token-weighted percentile bins "
    "per classifier and the ensemble bin (max) and bucket (Nemotron-CC). Writes OUTPUT/data and stats.json.",
    main=classify_main, summary=lambda cfg, stats: [f"wrote {cfg.run.output}"], input_help="documents to score",
    options=(Option(("--classifier",), "a classifier folder (repeatable)",
                    override=lambda v: ["classify.classifiers=" + json.dumps(v)], kwargs={"action": "append", "metavar": "DIR"}),),
    plan=lambda run: [Call(run.out / "seeds" / "data", run.out / "classify",
                           ["classify.classifiers=" + json.dumps([str(run.out / "classifier")])])],
)


def filter_main(cfg: Config, force: bool = False, progress: bool = True) -> dict:
    from pipeline.stages.base import run_stage

    return run_stage("filter", cfg, build_filter, force=force, progress=progress)


def filter_card_lines(cfg: dict, st: dict, facts: dict) -> list[str]:
    """What the dataset card says of a filter run: its rule."""
    f = cfg.get("filter", {})
    rule = f"bucket >= {f['bucket']}" if f.get("bucket") else f"{f.get('column', 'int_score')} >= {f.get('threshold')}"
    return [f"- filter: kept documents with {rule}"]


FILTER = Stage(
    settings={"filter": FilterConfig},
    sections=("run", "input", "executor", "writer", "filter"), main_tag="kept", funnel="filter kept",
    subset="filtered-web", card=filter_card_lines,
    name="filter", help="classified shards -> kept/ and removed/ (with reasons) by threshold or bucket",
    description="Keep documents whose int_score (filter.column) is at or above --threshold, or whose quality bucket "
    "is --bucket or higher, in OUTPUT/kept; every other document goes to OUTPUT/removed with its reason.",
    main=filter_main, input_help="classified documents (a classify run's data/)",
    summary=lambda cfg, stats: [f"kept {stats.get('records_out', 0):,} of {stats.get('records_in', 0):,} documents; "
                                f"wrote {cfg.run.output}/kept and {cfg.run.output}/removed"],
    options=(Option(("--threshold",), "keep int_score (filter.column) >= this (sets filter.threshold)",
                    override=lambda v: [f"filter.threshold={v}", "filter.bucket=null"], kwargs={"type": float}),
             Option(("--bucket",), "keep this quality bucket and the ones above it (sets filter.bucket)",
                    override=lambda v: [f"filter.bucket={v}"])),
    plan=lambda run: [Call(run.out / "classify" / "data", run.out / "filter")],
)
