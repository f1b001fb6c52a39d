"""Request-level cache: a finished request is never sent again, even after a kill -9.

One SQLite file (WAL mode) shared by every worker process and every rerun: keys are
``Request.cache_key`` hashes, values the JSON of the ``Result``. Each process opens its own
connection; writers wait for each other (busy timeout) instead of failing. Results are committed
as soon as a batch returns, so a crash loses at most the batch that was in flight.

datatrove's InferenceRunner has a request cache too, but it is one file per rank keyed by document
id; this one is keyed by content, so it survives a change of task count and serves equal requests
from different documents or stages.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from pipeline.llm.types import Result

CACHEABLE_ERRORS = (None, "unparsable")  # the model answered; server faults are retried instead


class RequestCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        import filelock

        # switching to WAL needs the database to itself and does not wait on a busy handler: the
        # first opening is serialised across processes with a lock file
        with filelock.FileLock(str(self.path) + ".lock", timeout=300):
            self._db = sqlite3.connect(str(self.path), timeout=120, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, model TEXT, result TEXT, created REAL)"
            )

    def get_many(self, keys: list[str]) -> dict[str, Result]:
        found: dict[str, Result] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            q = f"SELECT key, result FROM results WHERE key IN ({','.join('?' * len(part))})"
            for key, raw in self._db.execute(q, part):
                found[key] = Result.from_json(raw)
        return found

    def put_many(self, items: list[tuple[str, str, Result]]) -> None:
        """Store (key, model, result) triples in one transaction."""
        rows = [(k, m, r.to_json(), time.time()) for k, m, r in items if r.error in CACHEABLE_ERRORS]
        if not rows:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self._db.close()
