"""``synthweb dedup``: exact duplicates (normalised text) or near-duplicates (datatrove's MinHash).

Exact: every task hashes each document's normalised text (``dedup.exact_normalise``) into
``dedup.hash_buckets`` files by hash; each bucket is then grouped by hash and the copy to keep is
chosen (``dedup.keep``: first read, highest ``priority_column``, longest); the final pass removes
the others, each recording its cluster (the hash) and the kept copy's id. Memory: one bucket, then
one task's removals.

MinHash:
Four datatrove pipelines, each resumable (completed tasks are skipped on a rerun, so a run killed
at any point finishes correctly): (1) per input task, a MinHash signature of every document
(word 5-gram shingles, 14 bands x 8 hashes by default), beside it a list of the task's document ids;
(2) per band, the candidate pairs; (3) one task clusters the pairs (union-find) and marks all but one
document per cluster for removal; then we name each cluster's kept representative from the id lists;
(4) per input task again, the documents go to ``data/`` or, with their ``minhash_cluster_id`` and
``duplicate_of`` (the kept id), to ``removed/``. Memory per task follows the shard and the band,
not the corpus; step (3) holds the duplicate pairs only.

Semantic (for synthetic outputs, where paraphrases are the duplicates): every task embeds its
documents with the ``encoder`` section (float16 on disk); the neighbours at cosine >=
``dedup.similarity`` are found by blocked brute force, or with a usearch HNSW index above
``dedup.ann_above`` documents; clusters are joined (union-find) and the earliest document of each is
kept. Memory: the embeddings of the corpus (768 bytes per document for MiniLM).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
from datatrove.utils.text import simplify_text
from pydantic import Field

from pipeline.config import Config, Strict
from pipeline.errors import StageFailed, UserError
from pipeline.stages import Call, Option, Stage, subsets
from pipeline.stages.base import LOGS, RunOnce, StageContext


class DedupConfig(Strict):
    """``synthweb dedup``: near-duplicates removed through datatrove's MinHash stages."""

    method: Literal["exact", "minhash", "semantic"] = "minhash"  # semantic: for synthetic text (paraphrases)
    # exact: which text counts as the same (applied before hashing)
    exact_normalise: list[Literal["lowercase", "whitespace", "punctuation", "digits", "nfkc"]] = [
        "nfkc", "lowercase", "whitespace"]
    keep: Literal["first", "highest_score", "longest"] = "first"  # exact: the copy kept (ties: first read)
    priority_column: str = "score"  # for keep: highest_score
    hash_buckets: int = Field(default=16, ge=1)  # exact: hashes partitioned so one bucket at a time is in memory
    # semantic: the encoder section embeds each document; pairs at or above this cosine are duplicates
    similarity: float = Field(default=0.9, gt=0, le=1)
    ann_above: int = Field(default=50_000, ge=1)  # more documents than this: usearch HNSW instead of brute force
    neighbours: int = Field(default=16, ge=1)  # per document, with the ANN index
    ngram: int = Field(default=5, ge=1)  # word shingles
    bands: int = Field(default=14, ge=1)  # 14 x 8: ~0.8 Jaccard catches with high probability
    hashes_per_band: int = Field(default=8, ge=1)
    seed: int = 1
    language: str = "en"  # datatrove's word tokenizer for the shingles (with shingle_words: datatrove)
    # how a simplified text (lowercase, no punctuation, normalised whitespace: datatrove's simplify_text) becomes
    # words: whitespace splits it (6x faster than datatrove's spaCy tokenizer, the same recall and precision on
    # the planted benchmark: bench/bench_dedup.py); datatrove: its word tokenizer for `language`
    shingle_words: Literal["whitespace", "datatrove"] = "whitespace"


DEDUP_FIELDS = [
    pa.field("dedup_method", pa.string()),
    pa.field("minhash_cluster_id", pa.int64()),
    pa.field("minhash_cluster_size", pa.int32()),
    pa.field("duplicate_of", pa.string()),
    pa.field("exact_hash", pa.string()),  # exact: the cluster (normalised-text hash) of a removed copy
    pa.field("semantic_similarity", pa.float32()),  # semantic: cosine to the kept document
]
REMOVED_FIELDS = DEDUP_FIELDS + [pa.field("filter_reason", pa.string())]


class RecordIds(PipelineStep):
    """Writes the id of every document of a task, in reading order (index -> id for step 3)."""

    name = "🪪 record ids"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data, rank: int = 0, world_size: int = 1):
        path = Path(self.folder) / f"{rank:06d}.ids"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".ids.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for doc in data:
                f.write(json.dumps(str(doc.id)) + "\n")
                yield doc
        tmp.replace(path)


class SameInput(PipelineStep):
    """Pass 3 reads the same documents in the same order as pass 1 (decisions name documents by their
    position in a task, as datatrove's MinHash filter does): any other id at a position is an error,
    never a wrong document dropped."""

    name = "🪪 same input"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data, rank: int = 0, world_size: int = 1):
        path = Path(self.folder) / f"{rank:06d}.ids"
        with open(path, encoding="utf-8") as f:
            first = f.read(1)
            f.seek(0)
            ids = json.load(f) if first == "[" else [json.loads(line) for line in f]
        n = 0
        for n, doc in enumerate(data, 1):
            if n > len(ids) or ids[n - 1] != str(doc.id):
                seen = ids[n - 1] if n <= len(ids) else "nothing"
                raise StageFailed(f"dedup: the input changed between passes: task {rank} document {n} is {doc.id!r}, "
                                  f"the first pass read {seen!r} there; rerun with --force")
            yield doc
        if n != len(ids):
            raise StageFailed(f"dedup: the input changed between passes: task {rank} read {n} documents, the first "
                              f"pass {len(ids)}; rerun with --force")


class _Representatives:
    """Adds duplicate_of to each removed document before it reaches the removed/ writer."""

    def __init__(self, writer, reps_file: Path):
        self.writer, self.reps_file, self.reps = writer, reps_file, None

    def __enter__(self):
        if self.reps is None:  # written by the pass before (on Slurm: a job that ran before this one)
            self.reps = {int(k): v for k, v in json.loads(Path(self.reps_file).read_text()).items()}
        self.writer.__enter__()
        return self

    def __exit__(self, *exc):
        return self.writer.__exit__(*exc)

    def write(self, doc, rank: int = 0, **kw):
        cid = doc.metadata.get("minhash_cluster_id")
        doc.metadata.update(duplicate_of=self.reps.get(cid), filter_reason="near_duplicate", dedup_method="minhash")
        return self.writer.write(doc, rank=rank, **kw)


class MarkKept(PipelineStep):
    """Kept documents: a cluster id only when they represent a cluster (-1 from datatrove -> null)."""

    name = "🏷 mark kept"
    type = "🫂 - DEDUP"

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            if doc.metadata.get("minhash_cluster_id", -1) == -1:
                doc.metadata["minhash_cluster_id"] = None
                doc.metadata["minhash_cluster_size"] = None
            doc.metadata["dedup_method"] = "minhash"
            yield doc


def signature_step(output_folder: str, config, language: str, shingle_words: str):
    """datatrove's MinHash signature step, its words split on whitespace after its own simplify_text (the
    step's time was 85% spaCy tokenisation) unless ``shingle_words`` is datatrove. Same shingles hash,
    permutations, bucket files and later stages, so the rest of datatrove's layout holds (Slurm, Ray)."""
    if shingle_words == "datatrove":
        return MinhashDedupSignature(output_folder=output_folder, config=config, language=language)
    return WhitespaceMinhashSignature(output_folder=output_folder, config=config, language=language)


class WhitespaceMinhashSignature(MinhashDedupSignature):
    """datatrove's signature step with the words of its simplified text split on whitespace."""

    name = "🎯 MinHash stage 1 (whitespace words)"

    def get_shingles(self, text: str) -> np.ndarray:
        words = simplify_text(text, self.config.norm_config).split()
        n, h = self.config.n_grams, self._hash_func
        grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
        return np.fromiter((h(g) for g in grams), dtype=np.uint64, count=len(grams)).reshape((-1, 1))


def minhash_config(cfg: Config):
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    d = cfg.dedup
    return MinhashConfig(n_grams=d.ngram, num_buckets=d.bands, hashes_per_bucket=d.hashes_per_band, seed=d.seed)


def _read_pairs(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    raw = path.read_bytes()
    return [struct.unpack_from("<II", raw, i) for i in range(0, len(raw), 8)]


def representatives(work: Path, tasks: int) -> dict[int, str]:
    """cluster id -> the id of the document datatrove keeps (in a cluster, not marked for removal)."""
    reps: dict[int, str] = {}
    for rank in range(tasks):
        clusters = _read_pairs(work / "remove" / f"{rank:06d}.clusters")
        if not clusters:
            continue
        raw = (work / "remove" / f"{rank:06d}.remove").read_bytes() if (work / "remove" / f"{rank:06d}.remove").exists() else b""
        removed = {struct.unpack_from("<I", raw, i)[0] for i in range(0, len(raw), 4)}
        kept = {doc: cid for doc, cid in clusters if doc not in removed}
        if not kept:
            continue
        with open(work / "ids" / f"{rank:06d}.ids", encoding="utf-8") as f:
            for idx, line in enumerate(f):
                if idx in kept:
                    reps[kept[idx]] = json.loads(line)
    return reps


def write_representatives(work: Path, tasks: int) -> None:
    """After clustering: cluster id -> kept document id, in representatives.json (read by the filter pass)."""
    from pipeline.io.writer import atomic_write_text

    reps_file = work / "representatives.json"
    if not reps_file.exists():
        _first_pass_complete(work / "ids", tasks, "{rank:06d}.ids")
        reps = representatives(work, tasks)
        atomic_write_text(reps_file, json.dumps({str(k): v for k, v in reps.items()}))


def prepare(ctx: StageContext) -> Path:
    """Steps 1-3 (each a resumable datatrove run, or a Slurm job) and the representatives; their file."""
    from datatrove.pipeline.dedup.minhash import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
    )

    from pipeline.io.readers import make_reader

    cfg = ctx.cfg
    work = ctx.output / LOGS / "minhash"
    reps_file = work / "representatives.json"
    if reps_file.exists():
        return reps_file
    mh = minhash_config(cfg)
    ctx.run_first([make_reader(ctx.plan, cfg.input), RecordIds(str(work / "ids")),
                   signature_step(str(work / "signatures"), mh, cfg.dedup.language, cfg.dedup.shingle_words)],
                  work / "logs" / "signatures", name="signatures")
    ctx.run_first([MinhashDedupBuckets(input_folder=str(work / "signatures"), output_folder=str(work / "buckets"), config=mh)],
                  work / "logs" / "buckets", tasks=mh.num_buckets, name="buckets")
    ctx.run_first([MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=mh,
                                       save_cluster_id=True, save_cluster_size=True)],
                  work / "logs" / "cluster", tasks=1, name="cluster")
    ctx.run_first([RunOnce(write_representatives, work, cfg.executor.tasks)], work / "logs" / "representatives", tasks=1,
                  name="representatives")
    return reps_file


# ------------------------------------------------------------------ exact


def normalise(text: str, steps: list[str]) -> str:
    import re
    import unicodedata

    if "nfkc" in steps:
        text = unicodedata.normalize("NFKC", text)
    if "lowercase" in steps:
        text = text.lower()
    if "punctuation" in steps:
        text = re.sub(r"[^\w\s]", "", text)
    if "digits" in steps:
        text = re.sub(r"\d", "0", text)
    if "whitespace" in steps:
        text = " ".join(text.split())
    return text


class ExactHashes(PipelineStep):
    """Pass 1: (hash, priority, rank, index, id) of every document, into bucket files by hash."""

    name = "#️⃣ exact hashes"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, cfg: Config):
        super().__init__()
        self.folder, self.d = folder, cfg.dedup

    def _priority(self, doc) -> float:
        if self.d.keep == "longest":
            return float(len(doc.text))
        if self.d.keep == "highest_score":
            v = doc.metadata.get(self.d.priority_column)
            return float(v) if isinstance(v, (int, float)) else float("-inf")
        return 0.0

    def run(self, data, rank: int = 0, world_size: int = 1):
        import xxhash

        folder = Path(self.folder) / f"{rank:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        files = [open(folder / f"{b:04d}.tmp", "w", encoding="utf-8") for b in range(self.d.hash_buckets)]
        try:
            for idx, doc in enumerate(data):
                h = xxhash.xxh64_intdigest(normalise(doc.text, self.d.exact_normalise).encode("utf-8"))
                files[h % self.d.hash_buckets].write(json.dumps([h, self._priority(doc), rank, idx, str(doc.id)]) + "\n")
        finally:
            for f in files:
                f.close()
        for b in range(self.d.hash_buckets):
            (folder / f"{b:04d}.tmp").replace(folder / f"{b:04d}.jsonl")
        return
        yield


def _first_pass_complete(folder: Path, tasks: int, pattern: str) -> None:
    """Decisions are made only on every task's first-pass output (a missing one would mean its
    documents are never compared, and the done marker would make that final)."""
    missing = [r for r in range(tasks) if not (folder / pattern.format(rank=r)).exists()]
    if missing:
        raise StageFailed(f"dedup: the first pass has no output for task(s) {', '.join(map(str, missing[:10]))} in {folder}; "
                          "did its jobs fail? see the logs there, then rerun")


def exact_decisions(work: Path, tasks: int, buckets: int) -> None:
    """Pass 2, one bucket at a time: per hash the copy to keep; removals listed per task."""
    if (work / "decisions" / "done").exists():
        return
    import shutil

    out = work / "decisions"
    _first_pass_complete(work / "hashes", tasks, "{rank:06d}")
    shutil.rmtree(out, ignore_errors=True)  # an interrupted pass starts over (it is cheap)
    out.mkdir(parents=True, exist_ok=True)
    per_rank: dict[int, list] = {}
    for b in range(buckets):
        groups: dict[int, list] = {}
        for rank in range(tasks):
            f = work / "hashes" / f"{rank:06d}" / f"{b:04d}.jsonl"
            if f.exists():
                with open(f, encoding="utf-8") as fh:
                    for line in fh:
                        h, prio, r, idx, doc_id = json.loads(line)
                        groups.setdefault(h, []).append((-prio, r, idx, doc_id))
        for h, members in groups.items():
            if len(members) < 2:
                continue
            members.sort()
            kept = members[0][3]
            for _, r, idx, doc_id in members[1:]:
                per_rank.setdefault(r, []).append([idx, doc_id, kept, f"{h:016x}", len(members)])
        for r, rows in per_rank.items():
            with open(out / f"{r:06d}.jsonl", "a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(x) + "\n" for x in rows)
        per_rank.clear()
    (out / "done").write_text("")


class DuplicateFilter(PipelineStep):
    """Pass 3: removes this task's duplicate copies (to the removed writer, naming the kept copy)."""

    name = "🧹 duplicate filter"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, removed, method: str = "exact"):
        super().__init__()
        self.folder, self.removed, self.method = folder, removed, method

    def run(self, data, rank: int = 0, world_size: int = 1):
        f = Path(self.folder) / f"{rank:06d}.jsonl"
        drop = {}
        if f.exists():
            for line in f.read_text(encoding="utf-8").splitlines():
                idx, doc_id, kept, h, size = json.loads(line)
                drop[idx] = (doc_id, kept, h, size)
        self.removed.__enter__()
        exc: tuple = (None, None, None)
        try:
            for idx, doc in enumerate(data):
                doc.metadata["dedup_method"] = self.method
                if idx in drop:
                    doc_id, kept, h, size = drop[idx]
                    if doc_id != str(doc.id):  # SameInput checks the order; this names the document
                        raise StageFailed(f"dedup: task {rank} document {idx + 1} is {doc.id!r}, the decision was "
                                          f"made for {doc_id!r}; rerun with --force")
                    if self.method == "exact":
                        doc.metadata.update(duplicate_of=kept, exact_hash=h, filter_reason="exact_duplicate")
                    else:
                        doc.metadata.update(duplicate_of=kept, semantic_similarity=h, filter_reason="semantic_duplicate")
                    self.stat_update("dropped")
                    self.removed.write(doc, rank=rank)
                    continue
                yield doc
        except BaseException as e:  # the removed writer drops its unfinished part
            exc = (type(e), e, e.__traceback__)
            raise
        finally:
            self.removed.__exit__(*exc)


def build_exact(ctx: StageContext) -> list:
    from pipeline.io.readers import make_reader

    cfg = ctx.cfg
    work = ctx.output / LOGS / "exact"
    ctx.run_first([make_reader(ctx.plan, cfg.input), RecordIds(str(work / "ids")), ExactHashes(str(work / "hashes"), cfg)],
                  work / "logs" / "hashes", name="hashes")
    ctx.run_first([RunOnce(exact_decisions, work, cfg.executor.tasks, cfg.dedup.hash_buckets)], work / "logs" / "decisions",
                  tasks=1, name="decisions")
    removed = ctx.writer("removed", "failures", REMOVED_FIELDS)
    return [ctx.task_start(), make_reader(ctx.plan, cfg.input), ctx.progress(), SameInput(str(work / "ids")),
            DuplicateFilter(str(work / "decisions"), removed), ctx.writer("data", "main", DEDUP_FIELDS)]


# ------------------------------------------------------------------ semantic


class Embed(PipelineStep):
    """Pass 1: every document's embedding (float16) and id, per task."""

    name = "🧭 embed"
    type = "🫂 - DEDUP"
    preload = ("sentence_transformers",)

    def __init__(self, folder: str, cfg: Config):
        super().__init__()
        self.folder, self.e = folder, cfg.encoder

    def run(self, data, rank: int = 0, world_size: int = 1):
        import numpy as np

        from pipeline.embed import encoder_from

        enc = encoder_from(self.e)
        ids, parts, batch = [], [], []
        for doc in data:
            ids.append(str(doc.id))
            batch.append(doc.text)
            if len(batch) >= 256:
                parts.append(enc.encode(batch).astype(np.float16))
                batch = []
        if batch:
            parts.append(enc.encode(batch).astype(np.float16))
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        emb = np.concatenate(parts) if parts else np.zeros((0, 1), np.float16)
        np.save(folder / f"{rank:06d}.tmp.npy", emb)
        (folder / f"{rank:06d}.ids.tmp").write_text(json.dumps(ids))
        (folder / f"{rank:06d}.tmp.npy").replace(folder / f"{rank:06d}.npy")
        (folder / f"{rank:06d}.ids.tmp").replace(folder / f"{rank:06d}.ids")
        return
        yield


def similar_pairs(emb, threshold: float, ann_above: int, k: int) -> list[tuple[int, int, float]]:
    """(i, j, cosine) with j < i and cosine >= threshold; brute force in blocks, or usearch HNSW."""
    import numpy as np

    n = len(emb)
    pairs = []
    if n <= ann_above:
        e = emb.astype(np.float32)
        for a in range(0, n, 1024):
            sims = e[a : a + 1024] @ e[: a + 1024].T
            for r, row in enumerate(sims):
                i = a + r
                js = np.nonzero(row[:i] >= threshold)[0]
                pairs.extend((i, int(j), float(row[j])) for j in js)
        return pairs
    try:
        from usearch.index import Index
    except ImportError:
        raise UserError(f"semantic dedup of {n:,} documents (> dedup.ann_above {ann_above:,}) needs usearch: "
                        "pip install usearch") from None
    index = Index(ndim=emb.shape[1], metric="cos", dtype="f16")
    index.add(np.arange(n), emb)
    found = index.search(emb, k + 1)
    for i in range(n):
        for j, dist in zip(found.keys[i], found.distances[i]):
            if int(j) < i and 1 - float(dist) >= threshold:
                pairs.append((i, int(j), 1 - float(dist)))
    return pairs


def semantic_decisions(work: Path, tasks: int, cfg: Config) -> None:
    """Pass 2: clusters of near-paraphrases; the earliest document of each is kept."""
    import numpy as np

    out = work / "decisions"
    if (out / "done").exists():
        return
    import shutil

    _first_pass_complete(work / "embeddings", tasks, "{rank:06d}.ids")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    embs, owners, ids = [], [], []
    for rank in range(tasks):
        f = work / "embeddings" / f"{rank:06d}.npy"
        if not f.exists():
            continue
        e = np.load(f)
        task_ids = json.loads((work / "embeddings" / f"{rank:06d}.ids").read_text())
        if len(task_ids):
            embs.append(e)
            owners.extend((rank, i) for i in range(len(task_ids)))
            ids.extend(task_ids)
    if embs:
        emb = np.concatenate(embs)
        parent = list(range(len(ids)))

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for i, j, _ in similar_pairs(emb, cfg.dedup.similarity, cfg.dedup.ann_above, cfg.dedup.neighbours):
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the root is the earliest document of the cluster
        per_rank: dict[int, list] = {}
        e32 = emb.astype(np.float32)
        for i in range(len(ids)):
            root = find(i)
            if root != i:
                rank, idx = owners[i]
                sim = round(float(e32[i] @ e32[root]), 4)
                per_rank.setdefault(rank, []).append([idx, ids[i], ids[root], sim, 0])
        for rank, rows in per_rank.items():
            (out / f"{rank:06d}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    (out / "done").write_text("")


def build_semantic(ctx: StageContext) -> list:
    from pipeline.io.readers import make_reader

    cfg = ctx.cfg
    work = ctx.output / LOGS / "semantic"
    ctx.run_first([make_reader(ctx.plan, cfg.input), Embed(str(work / "embeddings"), cfg)], work / "logs" / "embed",
                  name="embed")
    ctx.run_first([RunOnce(semantic_decisions, work, cfg.executor.tasks, cfg)], work / "logs" / "decisions", tasks=1,
                  name="decisions")
    removed = ctx.writer("removed", "failures", REMOVED_FIELDS)
    return [ctx.task_start(), make_reader(ctx.plan, cfg.input), ctx.progress(), SameInput(str(work / "embeddings")),
            DuplicateFilter(str(work / "decisions"), removed, "semantic"), ctx.writer("data", "main", DEDUP_FIELDS)]


def build(ctx: StageContext) -> list:
    from datatrove.pipeline.dedup.minhash import MinhashDedupFilter

    from pipeline.io.readers import make_reader

    cfg = ctx.cfg
    if cfg.dedup.method == "exact":
        return build_exact(ctx)
    if cfg.dedup.method == "semantic":
        return build_semantic(ctx)
    reps_file = prepare(ctx)
    work = ctx.output / LOGS / "minhash"
    removed = _Representatives(ctx.writer("removed", "failures", REMOVED_FIELDS), reps_file)
    return [ctx.task_start(), make_reader(ctx.plan, cfg.input), ctx.progress(), SameInput(str(work / "ids")),
            MinhashDedupFilter(input_folder=str(work / "remove"), exclusion_writer=removed, load_cluster_ids=True,
                               load_cluster_sizes=True),
            MarkKept(), ctx.writer("data", "main", DEDUP_FIELDS)]


def main(cfg: Config, force: bool = False, progress: bool = True) -> dict:
    from pipeline.stages.base import run_stage

    return run_stage("dedup", cfg, build, force=force, progress=progress)


def _summary(cfg: Config, stats: dict) -> list[str]:
    return ([f"dedup: kept {stats.get('records_out', 0)} of {stats.get('records_in', 0)} documents; duplicates in "
             f"{cfg.run.output}/removed (with duplicate_of)"] if stats.get("complete") else []) + [f"wrote {cfg.run.output}"]


def per_dataset(run, stage: str, source) -> list[Call]:
    """One call per final dataset with rows (dedup and decontaminate run on each)."""
    calls = []
    for name in subsets():
        src = source(name)
        if run.rows(src):
            calls.append(Call(src, run.out / stage / name))
        else:
            print(f"run: {stage}: {name} has no rows ({src}); skipped")
    if not calls:
        raise UserError(f"run: {stage}: no dataset has rows to process (textbooks, rephrased and filtered-web are empty)")
    return calls


def card_lines(cfg: dict, st: dict, facts: dict) -> list[str]:
    """What the dataset card says of a dedup run: its method and what it removed."""
    return [f"- dedup: {cfg.get('dedup', {}).get('method')} ({st.get('removed', 0):,} near-duplicates removed)"]


STAGE = Stage(
    settings={"dedup": DedupConfig},
    refines=True,
    sections=("run", "input", "executor", "writer", "dedup", "encoder"), card=card_lines,
    name="dedup", help="documents -> the same without near-duplicates (MinHash), exact copies or paraphrases",
    description="MinHash near-duplicate removal through datatrove's four stages (signatures, bands, clusters, "
    "filter), resumable; or exact copies (--method exact) or paraphrases (--method semantic). Writes OUTPUT/data "
    "(one document per cluster) and OUTPUT/removed (duplicate_of = the kept document's id, and the cluster).",
    main=main, summary=_summary, input_help="documents to deduplicate",
    options=(Option(("--method",), "near-duplicates (minhash, the default), exact copies or paraphrases "
                    "(sets dedup.method)", override=lambda v: [f"dedup.method={v}"],
                    kwargs={"choices": ("minhash", "exact", "semantic")}),),
    plan=lambda run: per_dataset(run, "dedup", run.upstream), markers=("*/stats.json",),
)
