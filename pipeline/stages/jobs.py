"""The Slurm jobs of a stage folder: recorded for `synthweb status`, and checked before a rerun submits."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.errors import UserError
from pipeline.io.writer import atomic_write_text


def refuse_if_still_queued(logs: Path, output: Path) -> None:
    """A rerun on Slurm while jobs of an earlier submission of this folder are still queued or running
    (its driver died, or it was run twice) would run the same tasks twice: refuse, naming the jobs."""
    from pipeline.stages.status import QueueUnavailable, queue_states

    path = logs / "jobs.json"
    ids = sorted({str(j["job_id"]) for j in (json.loads(path.read_text()) if path.exists() else [])
                  if j.get("job_id") not in (None, -1)})
    try:
        queued = sorted({k.split("_")[0] for k in queue_states(ids)})
    except QueueUnavailable as e:
        raise UserError(f"{output}: cannot tell whether its earlier jobs still run ({e}); try again when squeue answers") from None
    if queued:
        raise UserError(f"{output}: jobs of an earlier submission are still in Slurm's queue ({', '.join(queued)}): "
                        f"wait for them (synthweb status {output}) or cancel them (scancel {' '.join(queued)}), then rerun")


def save_jobs(logs: Path, jobs: list[dict]) -> None:
    """The Slurm jobs of this submission, for `synthweb status` (a rerun's jobs are added after)."""
    path = logs / "jobs.json"
    before = json.loads(path.read_text()) if path.exists() else []
    atomic_write_text(path, json.dumps(before + [{**j, "submitted": time.time()} for j in jobs], indent=2))
