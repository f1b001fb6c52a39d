"""Atomic Parquet shard writer with Hugging Face file naming.

Why not datatrove's ParquetWriter: it writes straight to the final file name, so a killed task
leaves a half file that looks complete, and it cannot know the ``-of-NNNNN`` total. Here each task
writes parts as ``*.tmp`` and renames them when complete, then lists them in a per-task manifest.
:func:`finalize` (run once all tasks are done) renames the listed parts to
``data/train-00000-of-00008.parquet``; parts of killed attempts are listed nowhere and are deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipeline.records import build_schema, document_to_row, history_entry

PARTS = "_parts"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{uuid.uuid4().hex[:6]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ShardWriter(PipelineStep):
    """Terminal pipeline step (and datatrove-style ``exclusion_writer``) that writes records as shards.

    ``tag`` names the final folder (``data``, ``removed``, ...); ``writer_id`` separates several
    writers that share a tag within one task (e.g. one per filter).
    """

    name = "💾 shard writer"
    type = "💽 - WRITER"

    def __init__(
        self,
        output_dir: str,
        stage: str,
        run_id: str,
        config_hash: str,
        stage_fields: list[pa.Field] | None = None,
        tag: str = "data",
        writer_id: str = "main",
        max_rows_per_shard: int = 100_000,
        row_group_rows: int = 1_000,
        row_group_bytes: int = 64 * 2**20,
        compression_level: int = 3,
        source: str | None = None,
    ):
        super().__init__()
        self.output_dir = str(output_dir)
        self.stage, self.run_id, self.config_hash = stage, run_id, config_hash
        self.stage_fields = stage_fields or []
        self.tag, self.writer_id = tag, writer_id
        self.max_rows_per_shard = max_rows_per_shard
        self.row_group_rows, self.row_group_bytes = row_group_rows, row_group_bytes
        self.compression_level = compression_level
        self.source = source
        self._reset()

    def _reset(self) -> None:
        self._rank: int | None = None
        self._attempt = uuid.uuid4().hex[:8]
        self._buffer: list[dict] = []
        self._buffer_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._file = None
        self._part_rows = 0
        self._seq = 0
        self._done_parts: list[dict] = []

    @property
    def parts_dir(self) -> Path:
        return Path(self.output_dir) / PARTS / self.tag

    # datatrove DiskWriter protocol: used as `exclusion_writer=` by filters. One instance may be
    # shared by several filters of a pipeline (one removed set per task): entries are counted and
    # the part is closed when the outermost user is done.
    def __enter__(self):
        self._depth = getattr(self, "_depth", 0) + 1
        if self._depth == 1:
            self._reset()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._depth -= 1
        if exc_type is not None:
            self._abort()
        elif self._depth == 0:
            self.close()

    def write(self, document: Document, rank: int = 0, **_) -> None:
        if self._rank is None:
            self._rank = rank
            self._schema = build_schema(self.stage_fields)
        meta = document.metadata
        history = list(meta.get("history") or [])
        history.append(history_entry(self.stage, self.run_id, self.config_hash))
        meta["history"] = history
        if self.source and not meta.get("source"):
            meta["source"] = self.source
        if self.tag == "removed":
            meta.setdefault("filter_reason", "filtered")
        row = document_to_row(document, self._schema)
        self._buffer.append(row)
        self._buffer_bytes += len(row["text"]) + 256
        self.stat_update("written", unit=self.tag)
        if len(self._buffer) >= self.row_group_rows or self._buffer_bytes >= self.row_group_bytes:
            self._flush()
        if self._part_rows + len(self._buffer) >= self.max_rows_per_shard:
            self._flush()
            self._close_part()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.parts_dir / f"{self._part_name()}.tmp"
            self._file = open(tmp, "wb")
            self._writer = pq.ParquetWriter(
                self._file, self._schema, compression="zstd", compression_level=self.compression_level
            )
        table = pa.Table.from_pylist(self._buffer, schema=self._schema)
        self._writer.write_table(table, row_group_size=len(self._buffer))
        self._part_rows += len(self._buffer)
        self._buffer, self._buffer_bytes = [], 0

    def _part_name(self) -> str:
        return f"{self._rank:05d}-{self.writer_id}-{self._attempt}-{self._seq:04d}.parquet"

    def _close_part(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        name = self._part_name()
        os.replace(self.parts_dir / f"{name}.tmp", self.parts_dir / name)
        self._done_parts.append({"file": name, "rows": self._part_rows})
        self._writer, self._file, self._part_rows = None, None, 0
        self._seq += 1

    def close(self) -> None:
        if self._rank is None:
            return
        self._flush()
        self._close_part()
        self.parts_dir.mkdir(parents=True, exist_ok=True)  # a task may have had nothing to write
        manifest = {"rank": self._rank, "writer_id": self.writer_id, "attempt": self._attempt, "parts": self._done_parts}
        atomic_write_text(self.parts_dir / f"{self._rank:05d}-{self.writer_id}.manifest.json", json.dumps(manifest))

    def _abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
                self._file.close()
            finally:
                (self.parts_dir / f"{self._part_name()}.tmp").unlink(missing_ok=True)
        self._writer = None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self:
            for doc in data:
                self.write(doc, rank)
            if self._rank is None:  # nothing to write: still record an empty manifest for this task
                self._rank = rank
                self._schema = build_schema(self.stage_fields)
        return
        yield  # this step is terminal but must be a generator like every datatrove step


def clean_task(output_dir: str, rank: int) -> None:
    """Forget whatever an earlier, interrupted attempt of this task wrote (its manifests and parts)."""
    root = Path(output_dir) / PARTS
    if not root.exists():
        return
    for tag_dir in root.iterdir():
        if tag_dir.is_dir():
            for f in tag_dir.glob(f"{rank:05d}-*"):
                f.unlink(missing_ok=True)


class TaskStart(PipelineStep):
    """First step of every stage pipeline: a (re)started task starts from a clean slate. On the local
    executor a worker process also watches the process that started the run: when that one dies (even
    by kill -9) the worker stops within a second, with its helpers, instead of writing on beside the
    next run; it registers itself in ``_logs/workers/`` so that the next run can wait for it."""

    name = "🧹 task start"
    type = "🔧 - SETUP"

    def __init__(self, output_dir: str, watch_parent: bool = False):
        super().__init__()
        self.output_dir = str(output_dir)
        self.parent = _process_key(os.getpid()) if watch_parent else None

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if self.parent and os.getpid() != self.parent[0]:
            _watch_parent(self.parent, Path(self.output_dir) / "_logs" / "workers")
        clean_task(self.output_dir, rank)
        if data:
            yield from data


def _process_key(pid: int) -> tuple[int, float] | None:
    """A process named so that a reused pid is not mistaken for it: (pid, start time); None when it is gone
    or a zombie (dead, not yet reaped: a parent that never waits, such as a subreaper, keeps it listed)."""
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return pid, p.create_time()
    except psutil.Error:
        return None


_WATCHING: set[tuple] = set()


def _watch_parent(parent: tuple[int, float], registry: Path) -> None:
    """Once per worker process: register it, and start a thread that ends it (and its children) when
    the run's main process is gone."""
    import threading
    import time

    if parent in _WATCHING:
        return
    _WATCHING.add(parent)
    me = _process_key(os.getpid())
    try:
        registry.mkdir(parents=True, exist_ok=True)
        atomic_write_text(registry / str(os.getpid()), json.dumps(me))
    except OSError:
        pass

    def loop() -> None:
        import psutil

        while True:
            time.sleep(0.5)
            if _process_key(parent[0]) != parent:
                for child in psutil.Process().children(recursive=True):
                    try:
                        child.kill()
                    except psutil.Error:
                        pass
                os._exit(137)

    threading.Thread(target=loop, name="synthweb-parent-watch", daemon=True).start()


def wait_for_old_workers(registry: Path, timeout_s: float = 5.0) -> None:
    """Before a run starts its tasks: every worker an earlier run of this folder registered has exited
    (a worker whose parent was killed stops within a second). Raises OSError naming the pids still
    alive after ``timeout_s``."""
    import time

    if not registry.exists():
        return
    deadline = time.time() + timeout_s
    while True:
        alive = []
        for f in registry.iterdir():
            try:
                key = tuple(json.loads(f.read_text()) or ())
            except (OSError, ValueError):
                key = ()
            if key and _process_key(int(key[0])) == key:
                alive.append(int(key[0]))
            else:
                f.unlink(missing_ok=True)
        if not alive:
            return
        if time.time() > deadline:
            raise ChildProcessError(sorted(alive))
        time.sleep(0.2)


def drop_temp_files(output: Path) -> None:
    """Remove the ``*.tmp`` files (unfinished parts, progress counters) that a worker killed mid-write left;
    called only when no worker of the folder is alive, so none of them can still be renamed into place."""
    for tmp in Path(output).rglob("*.tmp"):
        tmp.unlink(missing_ok=True)


def plan_finalize(output_dir: str, split: str = "train") -> dict | None:
    """The renames that make completed parts final (``<tag>/<split>-00000-of-000NN.parquet``) and the
    rows per tag, from the parts' manifests; written to ``_parts/plan.json`` so that an interrupted
    finalize completes the same way. Nothing is renamed yet: the stage balances its books on these rows
    first. None when there is nothing to finalise (already done)."""
    out = Path(output_dir)
    parts_root = out / PARTS
    plan_path = parts_root / "plan.json"
    if not parts_root.exists():
        return None
    if plan_path.exists():
        return json.loads(plan_path.read_text())
    plan = {"moves": [], "rows": {}}
    for tag_dir in sorted(p for p in parts_root.iterdir() if p.is_dir()):
        parts = []
        for m in sorted(tag_dir.glob("*.manifest.json")):
            manifest = json.loads(m.read_text())
            parts += [(tag_dir / p["file"], p["rows"]) for p in manifest["parts"]]
        n = len(parts)
        final_dir = out / tag_dir.name
        for i, (src, _) in enumerate(parts):
            plan["moves"].append([str(src), str(final_dir / f"{split}-{i:05d}-of-{n:05d}.parquet")])
        plan["rows"][tag_dir.name] = sum(r for _, r in parts)
    atomic_write_text(plan_path, json.dumps(plan))
    return plan


def finalize(output_dir: str, split: str = "train") -> dict[str, int]:
    """Rename completed parts to their final names (see ``plan_finalize``). Idempotent: a finalize
    interrupted half-way completes on the next call. Returns rows per tag ({} when already done)."""
    out = Path(output_dir)
    parts_root = out / PARTS
    plan = plan_finalize(output_dir, split)
    if plan is None:
        return {}
    if not plan.get("applying"):  # first call: clear what an earlier run left in the final folders
        for tag in plan["rows"]:
            if (out / tag).exists():
                shutil.rmtree(out / tag)
        plan["applying"] = True
        atomic_write_text(parts_root / "plan.json", json.dumps(plan))
    for src, dst in plan["moves"]:
        if os.path.exists(src):
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    shutil.rmtree(parts_root)
    return plan["rows"]
