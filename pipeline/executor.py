"""datatrove executors from config: local multi-process (default), Slurm, or Ray.

The local executor is datatrove's, made quiet on the terminal: each task's full log (with any
traceback) still goes to ``OUTPUT/_logs/logs/task_NNNNN.log``, while the CLI shows one progress bar
and a summary table instead of interleaved per-task logs.
"""

from __future__ import annotations

import os
import sys

from datatrove.executor import LocalPipelineExecutor

from pipeline.config import ExecutorConfig
from pipeline.errors import UserError


def preload_modules(pipeline: list) -> list[str]:
    """What a stage's workers import before their first document: the steps' modules and the heavy libraries
    they declare (``preload``: sentence-transformers and torch for model steps, spaCy for the filters'
    tokenizer)."""
    mods: list[str] = []
    for step in pipeline:
        mods.append(type(step).__module__)
        mods.extend(getattr(step, "preload", ()) or ())
        mods.extend(getattr(getattr(step, "language", None), "preload", ()) or ())  # a warm word tokenizer
    return [m for m in dict.fromkeys(mods) if m != "builtins"]  # in the steps' order: a preload's order holds


def use_forkserver_preload(modules: list[str]) -> None:
    """Import ``modules`` once in the forkserver that forks a stage's workers, instead of once per worker
    (sentence-transformers alone is ~5 CPU s). A forkserver left by an earlier stage of this process with
    another list is stopped, so that each stage's workers fork from a server holding what they need.
    Importing is all the server does: no model is loaded, no thread started before the fork."""
    import multiprocess.forkserver as fs

    server, wanted = fs._forkserver, ["__main__", *modules]
    if getattr(server, "_preload_modules", None) == wanted:
        return
    if getattr(server, "_forkserver_pid", None) is not None and hasattr(server, "_stop"):
        server._stop()
    server.set_forkserver_preload(wanted)


class QuietLocalExecutor(LocalPipelineExecutor):
    def run(self):
        if self.workers > 1 and self.start_method == "forkserver":
            use_forkserver_preload(preload_modules(self.pipeline))
        return super().run()

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        from loguru import logger

        saved = sys.stderr
        sys.stderr = open(os.devnull, "w")  # datatrove binds its console log to sys.stderr per task
        try:
            return super()._run_for_rank(rank, local_rank, node_rank)
        finally:
            devnull, sys.stderr = sys.stderr, saved
            logger.remove()
            logger.add(sys.stderr, level="WARNING", format="{level}: {message}")
            devnull.close()


def check_executor(cfg: ExecutorConfig) -> None:
    """Before anything is written: the cluster named by the config is there (one line if not)."""
    import shutil
    import subprocess

    if cfg.kind == "slurm":
        if not shutil.which("sbatch"):
            raise UserError("executor.kind is slurm but sbatch is not on PATH: run on a Slurm login node (or install "
                            "Slurm's client tools), or use executor.kind local or ray")
        if not cfg.slurm.partition:
            raise UserError("executor.kind is slurm but executor.slurm.partition is not set")
        r = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60)
        known = sorted(set(r.stdout.split()))
        if r.returncode == 0 and cfg.slurm.partition not in known:
            raise UserError(f"executor.slurm.partition {cfg.slurm.partition!r}: no such partition "
                            f"(sinfo lists: {', '.join(known) or 'none'})")
    if cfg.kind == "ray" and cfg.ray.address and cfg.ray.address != "auto":
        import socket

        hostport = cfg.ray.address.split("://", 1)[-1]
        host, _, port = hostport.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=5).close()
        except (OSError, ValueError):
            raise UserError(f"executor.ray.address {cfg.ray.address!r} does not answer (is the cluster up? "
                            "`ray start --head` starts one; `ray status` shows it)") from None


def ray_init(cfg: ExecutorConfig, log_to_driver: bool = False) -> None:
    """Connect this process to the Ray cluster of executor.ray.address (once; inside a task it already is)."""
    try:
        import ray
    except ImportError:
        raise UserError("executor.kind is ray but ray is not installed: pip install 'synthweb[ray]'") from None

    if not ray.is_initialized():
        try:
            ray.init(address=cfg.ray.address, include_dashboard=False, log_to_driver=log_to_driver, ignore_reinit_error=True)
        except ConnectionError as e:
            raise UserError(f"executor.ray.address {cfg.ray.address!r}: {str(e).splitlines()[0]}") from None


def build_executor(cfg: ExecutorConfig, pipeline: list, logging_dir: str, tasks: int | None = None, depends=None, job_suffix: str = ""):
    tasks = tasks or cfg.tasks
    workers = cfg.workers if cfg.workers != -1 else tasks
    if cfg.kind == "local":
        return QuietLocalExecutor(
            pipeline, tasks=tasks, workers=min(workers, tasks), logging_dir=logging_dir, start_method=cfg.start_method
        )
    if cfg.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = cfg.slurm
        if not s.partition:
            raise UserError("executor.kind is slurm but executor.slurm.partition is not set")
        return SlurmPipelineExecutor(
            pipeline, tasks=tasks, workers=workers, time=s.time, partition=s.partition, cpus_per_task=s.cpus_per_task,
            mem_per_cpu_gb=s.mem_per_cpu_gb, gpus_per_task=s.gpus_per_task, qos=s.qos, job_name=s.job_name + job_suffix,
            env_command=s.env_command, sbatch_args=dict(s.sbatch_args), logging_dir=logging_dir, depends=depends,
        )
    if cfg.kind == "ray":
        from datatrove.executor import RayPipelineExecutor

        ray_init(cfg)
        r = cfg.ray
        return RayPipelineExecutor(
            pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, cpus_per_task=r.cpus_per_task,
            mem_per_cpu_gb=r.mem_per_cpu_gb, gpus_per_task=r.gpus_per_task, depends=depends,
        )
    raise UserError(f"unknown executor.kind {cfg.kind!r}")


def wait_for_slurm(executor, logging_dir, tasks: int, poll: float = 3) -> None:
    """Block until a submitted Slurm executor's tasks are all complete or its job left the queue."""
    import subprocess
    import time
    from pathlib import Path

    job = getattr(executor, "job_id", None)
    completions = Path(logging_dir) / "completions"
    while job not in (None, -1):
        if completions.is_dir() and len(list(completions.glob("*"))) >= tasks:
            return
        q = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%i"], capture_output=True, text=True, timeout=60)
        if (q.returncode == 0 and not q.stdout.strip()) or "Invalid job id" in q.stderr:
            return  # finished: the caller counts what completed (a failed squeue is asked again)
        time.sleep(poll)
