"""Engine metrics: requests, tokens, throughput (lifetime and recent), latency percentiles,
failures by kind and an estimated cost; one JSON per task, merged into the stage's stats."""

from __future__ import annotations

import json
import random
import time
from collections import deque
from pathlib import Path

from pipeline.llm.types import Result

LATENCY_SAMPLE = 5000  # reservoir size per task for the percentiles


class Metrics:
    def __init__(self, engine: str, model: str, cost_per_gpu_hour: float = 0.0, gpus: int = 1,
                 recent_window_s: float = 60.0):
        self.engine, self.model = engine, model
        self.cost_per_gpu_hour, self.gpus = cost_per_gpu_hour, gpus
        self.requests = self.sent = self.cache_hits = 0
        self.prompt_tokens = self.completion_tokens = self.truncated = 0
        self.failures: dict[str, int] = {}
        self.busy_s = 0.0  # time spent inside the backend (loading excluded)
        self.load_s = 0.0
        self._lat: list[float] = []
        self._seen = 0
        self._recent: deque[tuple[float, int]] = deque()
        self._window = recent_window_s
        self._t0 = time.monotonic()

    def add_batch(self, results: list[Result], elapsed_s: float) -> None:
        """Account results that the backend produced (not cache hits) in ``elapsed_s`` seconds."""
        self.busy_s += elapsed_s
        now = time.monotonic()
        toks = 0
        for r in results:
            self.sent += 1
            self.prompt_tokens += r.prompt_tokens
            self.completion_tokens += r.completion_tokens
            toks += r.completion_tokens
            self._sample(r.latency_s)
        self._recent.append((now, toks))
        while self._recent and now - self._recent[0][0] > self._window:
            self._recent.popleft()

    def add_result(self, r: Result) -> None:
        self.requests += 1
        if r.cached:
            self.cache_hits += 1
        if r.truncated:
            self.truncated += 1
        if r.error:
            self.failures[r.error] = self.failures.get(r.error, 0) + 1

    def _sample(self, latency: float) -> None:
        self._seen += 1
        if len(self._lat) < LATENCY_SAMPLE:
            self._lat.append(latency)
        else:
            j = random.randrange(self._seen)
            if j < LATENCY_SAMPLE:
                self._lat[j] = latency

    def recent_tok_s(self) -> float:
        if len(self._recent) < 2:
            return self.completion_tokens / self.busy_s if self.busy_s else 0.0
        span = self._recent[-1][0] - self._recent[0][0]
        toks = sum(t for _, t in list(self._recent)[1:])
        return toks / span if span > 0 else 0.0

    def snapshot(self) -> dict:
        return {
            "engine": self.engine, "model": self.model, "requests": self.requests, "sent": self.sent,
            "cache_hits": self.cache_hits, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "truncated_prompts": self.truncated,
            "failures": dict(self.failures), "busy_s": round(self.busy_s, 3), "load_s": round(self.load_s, 3),
            "wall_s": round(time.monotonic() - self._t0, 3),
            "output_tok_s": round(self.completion_tokens / self.busy_s, 2) if self.busy_s else 0.0,
            "recent_output_tok_s": round(self.recent_tok_s(), 2),
            "cost_per_gpu_hour": self.cost_per_gpu_hour, "gpus": self.gpus,
            "latency_sample": [round(x, 4) for x in self._lat],
        }

    def write(self, path: Path) -> None:
        from pipeline.io.writer import atomic_write_text

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.snapshot()))


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return round(s[k], 4)


def merge(snapshots: list[dict]) -> dict:
    """One summary over every task's snapshot (sums, merged latency sample, cost)."""
    if not snapshots:
        return {}
    keys = ("requests", "sent", "cache_hits", "prompt_tokens", "completion_tokens", "truncated_prompts")
    out: dict = {k: sum(s.get(k, 0) for s in snapshots) for k in keys}
    out["engine"] = snapshots[0]["engine"]
    out["model"] = snapshots[0]["model"]
    failures: dict[str, int] = {}
    for s in snapshots:
        for k, v in s.get("failures", {}).items():
            failures[k] = failures.get(k, 0) + v
    out["failures"] = failures
    busy = sum(s.get("busy_s", 0.0) for s in snapshots)
    wall = max(s.get("wall_s", 0.0) for s in snapshots)
    out["busy_s"], out["load_s"] = round(busy, 3), round(sum(s.get("load_s", 0.0) for s in snapshots), 3)
    # tasks run side by side: throughput per task adds up
    out["output_tok_s"] = round(sum(s.get("output_tok_s", 0.0) for s in snapshots), 2)
    out["recent_output_tok_s"] = round(sum(s.get("recent_output_tok_s", 0.0) for s in snapshots), 2)
    lat = [x for s in snapshots for x in s.get("latency_sample", [])]
    out["latency_s"] = {"p50": _pct(lat, 50), "p90": _pct(lat, 90), "p99": _pct(lat, 99), "max": _pct(lat, 100)}
    price, gpus = snapshots[0].get("cost_per_gpu_hour", 0.0), snapshots[0].get("gpus", 1)
    hours = sum(s.get("wall_s", 0.0) for s in snapshots) / 3600 * gpus
    out["gpu_hours"] = round(hours, 5)
    out["cost_usd"] = round(hours * price, 4) if price else None
    out["cost_per_million_output_tokens_usd"] = (
        round(hours * price / out["completion_tokens"] * 1e6, 4) if price and out["completion_tokens"] else None
    )
    out["wall_s"] = round(wall, 3)
    return out
