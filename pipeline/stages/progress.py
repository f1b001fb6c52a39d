"""The live progress of a stage: a counter step in every task, and the bar (or the batch-log line)
that sums them."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipeline.io.writer import atomic_write_text


class Progress(PipelineStep):
    """Counts documents flowing past and publishes the count for the progress bar (a file per task)."""

    name = "⏱ progress"
    type = "🔧 - SETUP"

    def __init__(self, logging_dir: str, every_s: float = 0.5):
        super().__init__()
        self.logging_dir, self.every_s = logging_dir, every_s

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        """Counts in this thread; a timer thread writes the count every ``every_s`` while it changes, so the
        count is right while a later step (an LLM chunk) holds the documents already read."""
        path = Path(self.logging_dir) / "progress" / f"{rank:05d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        count, stop = [0], threading.Event()

        def flush() -> None:
            written = -1
            while not stop.wait(self.every_s):
                if count[0] != written:
                    written = count[0]
                    atomic_write_text(path, json.dumps({"docs": written}))

        timer = threading.Thread(target=flush, name="synthweb-progress", daemon=True)
        timer.start()
        try:
            for doc in data:
                count[0] += 1
                yield doc
        finally:
            stop.set()
            timer.join(timeout=5)
        atomic_write_text(path, json.dumps({"docs": count[0]}))


class ProgressMonitor:
    """Background thread that sums the per-task counters into one line: documents read, tasks done and,
    for an LLM stage, the answers written (from the cache, too) against the requests asked so far, with
    output tok/s and an ETA from the answer rate. On a terminal a tqdm bar; in a batch log (no TTY) a
    plain line every ``every_s`` seconds whether or not anything moved, so a log shows the run is alive."""

    def __init__(self, logging_dir: Path, total: int | None, tasks: int, enabled: bool = True, stage: str = "",
                 every_s: float = 30.0):
        self.dir, self.total, self.tasks, self.enabled, self.stage = logging_dir, total, tasks, enabled, stage
        self.every_s = float(os.environ.get("SYNTHWEB_PROGRESS_EVERY_S", every_s))
        self._stop = threading.Event()
        self._out = sys.stderr  # the terminal or log as it is now: a task run in this process swaps sys.stderr
        self._first: dict | None = None  # the LLM counters when this run started (a resume starts from them)
        self._t0 = time.monotonic()

    def _counts(self) -> tuple[int, int]:
        docs = 0
        for f in (self.dir / "progress").glob("*.json"):
            try:
                docs += json.loads(f.read_text())["docs"]
            except (ValueError, OSError, KeyError):
                pass
        done = len(list((self.dir / "completions").glob("*"))) if (self.dir / "completions").exists() else 0
        return docs, done

    def llm(self) -> dict | None:
        """The engines' answer counters summed over tasks (None before any LLM request)."""
        total = {"asked": 0, "answered": 0, "cached": 0, "completion_tokens": 0}
        since = []
        for f in (self.dir / "llm-progress").glob("*.json"):
            try:
                p = json.loads(f.read_text())
            except (ValueError, OSError):
                continue
            for k in total:
                total[k] += int(p.get(k, 0))
            since.append(float(p.get("since", time.time())))
        if not total["asked"]:
            return None
        return {**total, "since": min(since)}

    def line(self, snapshot: bool = False) -> str:
        docs, done = self._counts()
        parts = [f"{docs:,}" + (f"/{self.total:,}" if self.total else "") + " documents read", f"tasks {done}/{self.tasks}"]
        llm = self.llm()
        if llm:
            if snapshot:  # one look (synthweb status): the rate since the engines started
                first = {"answered": llm["cached"], "completion_tokens": 0, "t": time.monotonic() - (time.time() - llm["since"])}
            else:
                first = self._first = self._first or {**llm, "t": time.monotonic()}
            dt = max(1e-6, time.monotonic() - first["t"])
            rate = (llm["answered"] - first["answered"]) / dt
            tok_s = (llm["completion_tokens"] - first["completion_tokens"]) / dt
            left = llm["asked"] - llm["answered"]
            eta = f", ETA {_clock(left / rate)}" if rate > 0 and left else ""
            parts.append(f"answers {llm['answered']:,}/{llm['asked']:,} asked ({llm['cached']:,} from cache), "
                         f"{tok_s:,.1f} out tok/s{eta}")
        return ", ".join(parts)

    def _loop(self) -> None:
        if not self._out.isatty():  # a batch log: one line every every_s seconds, moving or not
            last = time.monotonic()
            while not self._stop.wait(0.5):
                if time.monotonic() - last >= self.every_s:
                    last = time.monotonic()
                    print(f"{self.stage + ': ' if self.stage else ''}{self.line()} "
                          f"[{_clock(time.monotonic() - self._t0)}]", file=self._out, flush=True)
            return
        from tqdm import tqdm

        docs, done = self._counts()
        with tqdm(total=self.total, initial=docs, unit="doc", desc="documents", dynamic_ncols=True, mininterval=0.5,
                  file=self._out) as bar:
            while not self._stop.wait(0.5):
                docs, done = self._counts()
                bar.update(docs - bar.n)
                bar.set_postfix_str(self.line().split(", ", 1)[1])
            docs, done = self._counts()
            bar.update(docs - bar.n)
            bar.set_postfix_str(self.line().split(", ", 1)[1], refresh=False)

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._stop.set()
            self._thread.join(timeout=5)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
