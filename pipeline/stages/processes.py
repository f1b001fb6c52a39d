"""Process control of a local run: orphans re-parented to us, and every descendant stopped on failure."""

from __future__ import annotations


def become_subreaper() -> None:
    """Orphans of our workers (e.g. the extraction sandbox of a worker the pool terminated) are
    re-parented to us instead of init, so that a failed run can stop them (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def kill_descendants() -> None:
    import psutil

    def is_tracker(p: psutil.Process) -> bool:  # it exits by itself with us, and complains if killed
        try:
            return "resource_tracker" in " ".join(p.cmdline())
        except psutil.Error:
            return True

    procs = [p for p in psutil.Process().children(recursive=True) if not is_tracker(p)]
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)
