"""The datatrove step every LLM stage builds on: documents in, one request each, results attached.

The engine is created inside the task (it cannot be pickled to the workers), fed in chunks of
``llm.chunk_size`` requests, and each chunk's answers are committed to the request cache before the
documents move on, so a task killed at any point resumes from its last chunk. A failed request
(prompt too long, unparsable structured reply, server error) goes to the stage's removed set with
its reason and raw reply instead of vanishing.
"""

from __future__ import annotations

import os
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipeline.llm.config import LLMConfig
from pipeline.llm.types import Request, Result


def cpu_threads(cfg) -> int | None:
    """Intra-op threads per task for in-process CPU inference: the cores this process may use divided
    among the local workers running at once, and never more than an OMP_NUM_THREADS the user set
    (oversubscribed OpenMP threads spin against each other: two 2-thread forward passes side by side
    on 2 cores took 2.3x as long as two 1-thread ones, measured 2026-12-07)."""
    if cfg.executor.kind != "local":
        return None
    ex = cfg.executor
    workers = min(ex.tasks, ex.workers if ex.workers != -1 else ex.tasks)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // max(1, workers))
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(cap)) if cap.isdigit() and int(cap) > 0 else threads


def default_cache_path(cfg: LLMConfig, output: str) -> str | None:
    if not cfg.cache.enabled:
        return None
    return cfg.cache.path or str(Path(output) / "_llm_cache" / "requests.sqlite")


def origin_of(doc: Document) -> str:
    """The id of the record read that a row comes from (a seed of its generations, a page of its
    rephrasings, a prompt of its n samples)."""
    m = doc.metadata
    return str(m.get("seed_id") or m.get("source_id") or str(doc.id).split("#", 1)[0])


class _Recording:
    """The removed-rows writer (or none), noting whose row each removal is, for the books."""

    def __init__(self, writer, seen: set):
        self.writer, self.seen = writer, seen

    def write(self, doc: Document, rank: int = 0, **kw):
        self.seen.add(origin_of(doc))
        if self.writer is not None:
            self.writer.write(doc, rank=rank, **kw)

    def __getattr__(self, name):
        return getattr(self.writer, name)


class LLMStep(PipelineStep):
    """Subclasses say how a document becomes a request and how the result goes back on it."""

    name = "🤖 llm"
    type = "🤖 - LLM"

    def __init__(self, llm: LLMConfig, run_seed: int, output: str, failures=None, threads: int | None = None):
        super().__init__()
        self.llm, self.run_seed, self.threads = llm, run_seed, threads
        self.cache_path = default_cache_path(llm, output)
        self.metrics_dir = str(Path(output) / "_logs" / "llm")
        self.failures = failures

    @property
    def preload(self) -> tuple[str, ...]:
        """The in-process model's libraries (sentence-transformers brings torch and transformers, and the
        gate's encoder needs it): imported once in the forkserver (pipeline/executor.py)."""
        return ("sentence_transformers",) if self.llm.backend == "transformers" else ()

    def request_for(self, doc: Document) -> Request:
        raise NotImplementedError

    def apply(self, doc: Document, result: Result) -> list[Document]:
        """The documents to pass on for a successful result (several when n > 1)."""
        raise NotImplementedError

    def failed(self, doc: Document, result: Result) -> Document:
        doc.metadata["filter_reason"] = result.error
        doc.metadata["error_detail"] = (result.error_detail or "")[:2000]
        if result.outputs:  # the raw reply, for whoever wants to see why it did not parse
            doc.metadata["raw_reply"] = result.outputs[0].text
        return doc

    def _flush(self, engine, chunk: list[Document]):
        requests = [self.request_for(d) for d in chunk]
        results = engine.generate(requests)
        for doc, res in zip(chunk, results):
            self.stat_update("requests")
            if res.cached:
                self.stat_update("cache_hits")
            if res.error:
                self.stat_update("dropped")
                self.stat_update(f"dropped_llm_{res.error}")
                if self.failures is not None:
                    self.failures.write(self.failed(doc, res), rank=self._rank)
                continue
            for out in self.apply(doc, res):
                self.update_doc_stats(out)
                yield out

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from pipeline.llm.engine import make_engine

        self._rank = rank
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if self.threads and self.llm.backend == "transformers":
            import torch  # workers side by side on a CPU: share the cores instead of fighting over them

            torch.set_num_threads(self.threads)
        engine = make_engine(self.llm, self.cache_path, Path(self.metrics_dir) / f"{rank:05d}.json")
        if self.failures is not None:
            self.failures.__enter__()
        writer, self._seen = self.failures, set()
        self.failures = _Recording(writer, self._seen)
        exc_info: tuple = (None, None, None)
        try:
            chunk: list[Document] = []
            for doc in data:
                chunk.append(doc)
                if len(chunk) >= self.llm.chunk_size:
                    yield from self._accounted(engine, chunk)
                    chunk = []
            if chunk:
                yield from self._accounted(engine, chunk)
        except BaseException as e:  # the failures writer drops its unfinished part instead of listing it
            exc_info = (type(e), e, e.__traceback__)
            raise
        finally:
            engine.close()
            self.failures = writer
            if self.failures is not None:
                self.failures.__exit__(*exc_info)

    def _accounted(self, engine, chunk: list[Document]):
        """The chunk's rows, then the books: each record read that left a row, kept or removed, is
        counted (``records_accounted``); the stage checks the count against the records read."""
        self._seen.clear()
        for out in self._flush(engine, chunk):
            self._seen.add(origin_of(out))
            yield out
        for d in chunk:
            if str(d.id) in self._seen:
                self.stat_update("records_accounted")
