"""Packed token streams: memory-mapped token files -> fixed-length training sequences.

Memory stays flat in corpus size: token files are ``np.memmap``-ed and each epoch keeps only a
permutation of window indices. The position in the stream is a few integers, saved in every
checkpoint, so a resumed run reads exactly the batches an uninterrupted run would have read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.train.tokenize import MANIFEST


class TokenFiles:
    """The token files of one split of one tokenized dataset, seen as one array."""

    def __init__(self, folder: str | Path, part: str):
        folder = Path(folder)
        m = json.loads((folder / MANIFEST).read_text())
        self.manifest = m
        dtype = np.uint32 if m["token_size"] == 4 else np.uint16
        self.maps = []
        for rel in m["files"].get(part, []):
            p = folder / rel
            if not p.is_file():
                raise UserError(f"{folder}: token file {rel} listed in {MANIFEST} is missing; tokenize again (--force)")
            if p.stat().st_size:
                self.maps.append(np.memmap(p, dtype=dtype, mode="r"))
        self.ends = np.cumsum([len(a) for a in self.maps]) if self.maps else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def slice(self, start: int, end: int) -> np.ndarray:
        """Tokens [start, end) as int64, across file boundaries."""
        out = np.empty(end - start, dtype=np.int64)
        i = int(np.searchsorted(self.ends, start, side="right"))
        filled = 0
        while filled < end - start:
            base = int(self.ends[i - 1]) if i else 0
            lo = start + filled - base
            take = min(len(self.maps[i]) - lo, end - start - filled)
            out[filled:filled + take] = self.maps[i][lo:lo + take]
            filled += take
            i += 1
        return out


class PackedSource:
    """Windows of ``seq_len + 1`` tokens (inputs and shifted targets), in a seeded order per epoch."""

    def __init__(self, files: TokenFiles, seq_len: int, seed: int, name: str = ""):
        self.files, self.seq_len, self.seed, self.name = files, seq_len, seed, name
        self.windows = (len(files) - 1) // seq_len
        if self.windows < 1:
            raise UserError(f"dataset {name!r}: {len(files):,} tokens, fewer than one sequence of {seq_len + 1}")
        self.epoch, self.pos = 0, 0
        self._perm = None

    def _order(self) -> np.ndarray:
        if self._perm is None:
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.windows)
        return self._perm

    def next(self) -> np.ndarray:
        if self.pos >= self.windows:
            self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
        w = int(self._order()[self.pos])
        self.pos += 1
        return self.files.slice(w * self.seq_len, w * self.seq_len + self.seq_len + 1)

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.epoch, self.pos, self._perm = state["epoch"], state["pos"], None


class Mixture:
    """Several sources drawn in proportion to their weights, deterministically (smooth weighted
    round-robin: the source furthest behind its share goes next), so the state is just the counts."""

    def __init__(self, sources: list[PackedSource], weights: list[float]):
        self.sources = sources
        total = sum(weights)
        self.shares = np.array([w / total for w in weights])
        self.counts = np.zeros(len(sources), dtype=np.int64)

    def next_batch(self, n: int) -> np.ndarray:
        rows = []
        for _ in range(n):
            j = int(np.argmin((self.counts + 1) / self.shares))
            self.counts[j] += 1
            rows.append(self.sources[j].next())
        return np.stack(rows)

    def state(self) -> dict:
        return {"counts": self.counts.tolist(), "sources": [s.state() for s in self.sources]}

    def load(self, state: dict) -> None:
        self.counts = np.array(state["counts"], dtype=np.int64)
        for s, st in zip(self.sources, state["sources"]):
            s.load(st)

    def epochs(self) -> dict[str, float]:
        """How many passes over each source so far (repetition, for the report)."""
        return {s.name: round(s.epoch + s.pos / s.windows, 3) for s in self.sources}


def validation_batches(files: TokenFiles, seq_len: int, batch: int, max_batches: int):
    """The first ``max_batches`` batches of consecutive held-out windows (the same in every run).
    A held-out split shorter than one sequence is read as one shorter window."""
    seq_len = min(seq_len, len(files) - 1)
    n = min((len(files) - 1) // seq_len, batch * max_batches)
    for start in range(0, n, batch):
        idx = range(start, min(start + batch, n))
        yield np.stack([files.slice(w * seq_len, w * seq_len + seq_len + 1) for w in idx])
