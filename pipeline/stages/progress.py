"""The live progress of a stage: a counter step in every task, and the bar (or the batch-log line)
that sums them."""

from __future__ import annotations

import json
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
        path = Path(self.logging_dir) / "progress" / f"{rank:05d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        n, last = 0, 0.0
        for doc in data:
            n += 1
            now = time.monotonic()
            if now - last > self.every_s:
                atomic_write_text(path, json.dumps({"docs": n}))
                last = now
            yield doc
        atomic_write_text(path, json.dumps({"docs": n}))


class ProgressMonitor:
    """Background thread that sums the per-task counters into one tqdm bar (rate, ETA when known)."""

    def __init__(self, logging_dir: Path, total: int | None, tasks: int, enabled: bool = True):
        self.dir, self.total, self.tasks, self.enabled = logging_dir, total, tasks, enabled
        self._stop = threading.Event()

    def _counts(self) -> tuple[int, int]:
        docs = 0
        for f in (self.dir / "progress").glob("*.json"):
            try:
                docs += json.loads(f.read_text())["docs"]
            except (ValueError, OSError, KeyError):
                pass
        done = len(list((self.dir / "completions").glob("*"))) if (self.dir / "completions").exists() else 0
        return docs, done

    def _llm(self) -> str:
        """Live engine figures for the bar: output tokens/s (recent) and cache hits."""
        tok_s = hits = toks = 0.0
        for f in (self.dir / "llm").glob("*.json"):
            try:
                m = json.loads(f.read_text())
            except (ValueError, OSError):
                continue
            tok_s += m.get("recent_output_tok_s", 0.0)
            hits += m.get("cache_hits", 0)
            toks += m.get("completion_tokens", 0)
        if not toks and not hits:
            return ""
        return f", {tok_s:,.0f} out tok/s, {toks:,.0f} tok, {hits:,.0f} cached"

    def _loop(self) -> None:
        from tqdm import tqdm

        docs, done = self._counts()
        tty = sys.stderr.isatty()  # in batch logs: an update every 30 s, not a stream of redraws
        with tqdm(total=self.total, initial=docs, unit="doc", desc="documents", dynamic_ncols=True,
                  mininterval=0.5 if tty else 30) as bar:
            while not self._stop.wait(0.5):
                docs, done = self._counts()
                bar.update(docs - bar.n)
                bar.set_postfix_str(f"tasks {done}/{self.tasks}{self._llm()}", refresh=False)
            docs, done = self._counts()
            bar.update(docs - bar.n)
            bar.set_postfix_str(f"tasks {done}/{self.tasks}{self._llm()}", refresh=False)

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._stop.set()
            self._thread.join(timeout=5)
