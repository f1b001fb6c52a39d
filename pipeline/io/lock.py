"""One run per output folder: an advisory lock (flock) held by the run's main process, and the rules
that keep its helpers from outliving it (see ``output_lock``). Every command that writes a folder
takes it: the stages, tokenize, train-classifier, train, ablate and publish."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from pipeline.errors import UserError

LOCK = ".synthweb.lock"


@contextmanager
def output_lock(output: Path, stage: str, beside: bool = False):
    """One run per output folder. An advisory lock (flock) on OUTPUT/.synthweb.lock, held for the
    whole run by this process; the file names the holder (pid, host, start). Workers do not hold it,
    they follow the holder: a forked helper dies with it (PDEATHSIG), a pool worker stops within a
    second of its death (TaskStart's watch) and the next run waits for it. The kernel drops the lock
    when its holder dies, so a lock left by a killed run is stale by construction and the next run
    takes it over. Two runs at once: the second refuses in one line. ``beside``: the lock file sits
    next to OUTPUT (``.NAME.synthweb.lock``), for a command that replaces the folder whole at its end
    (train-classifier renames a finished temporary folder into place)."""
    import fcntl
    import os
    import socket

    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file, not a folder")
    lock = output.parent / f".{output.name}{LOCK}" if beside else output / LOCK
    created = not output.exists() and not beside
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        raise UserError(f"--output {output}: no permission to write there") from None
    except OSError as e:
        raise UserError(f"--output {output}: cannot write there ({e.strerror})") from None
    _register_fork_hooks()
    try:
        _take(fd)
    except BlockingIOError as e:
        holder = e.filename or "another process"
        os.close(fd)
        raise UserError(f"{output} is in use by a running synthweb ({holder}); wait for it to finish, "
                        "or stop it, or use another --output") from None
    except OSError as e:  # a file system without flock (some network mounts)
        os.close(fd)
        raise UserError(f"--output {output}: cannot lock {LOCK} there ({e.strerror}); the file system may not support "
                        "flock: use an --output on a local or flock-capable file system") from None
    _FORK["fds"].add(fd)
    try:
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
                           "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        yield
    finally:
        _FORK["fds"].discard(fd)
        os.ftruncate(fd, 0)
        if created and [p.name for p in output.iterdir()] == [LOCK]:  # failed before writing anything: leave no trace
            (output / LOCK).unlink(missing_ok=True)
            output.rmdir()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


_FORK: dict = {"fds": set(), "main_thread": False}


def _before_fork() -> None:
    import threading

    _FORK["main_thread"] = threading.current_thread() is threading.main_thread()


def _in_forked_child() -> None:
    """A process forked while we hold the output lock (datatrove's multiprocess Manager, a fork-start
    worker) neither holds the lock (its copy of the descriptor is closed: the lock is the run's, and
    dies with it) nor outlives the run: it gets SIGKILL when the run's main process dies."""
    fds = list(_FORK["fds"])
    if not fds:
        return
    _FORK["fds"] = set()
    import os

    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    if _FORK["main_thread"]:  # the death signal follows the forking thread: only the main one lives as long as the run
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _register_fork_hooks() -> None:
    import os

    if not _FORK.get("registered"):
        os.register_at_fork(before=_before_fork, after_in_child=_in_forked_child)
        _FORK["registered"] = True


def _take(fd: int) -> None:
    """flock the lock file; while it is held, read who holds it (the holder writes that just after
    taking it). A holder that is dead on this host (its workers, which share the lock, are still
    stopping: they follow their parent within a second) is waited for, up to 5 s. Raises
    BlockingIOError(..., holder) when the folder stays in use."""
    import fcntl
    import os
    import socket

    deadline = time.time() + 5
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holder = ""
        for _ in range(20):  # the holder writes who it is just after taking the lock: give it a moment
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            if holder:
                break
            time.sleep(0.1)
        try:
            info = json.loads(holder) if holder else {}
        except ValueError:
            info = {}
        dead = info.get("host") == socket.gethostname() and not _alive(info.get("pid"))
        if not dead or time.time() > deadline:
            if dead:
                holder = f"{holder}: that process is gone, but processes it started still hold the lock"
            raise BlockingIOError(11, "locked", holder)
        time.sleep(0.2)


def _alive(pid) -> bool:
    """Running (a zombie, dead but not reaped yet, is not)."""
    import psutil

    try:
        return isinstance(pid, int) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
