"""Terminal output of the libraries we drive: progress bars and per-task logs stay out of ours.

Low in the layers (stages, train, llm, classifiers and embed all use it), so it imports nothing of ours.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

# the loguru level put back after a stage; ``synthweb run``, which chains stages in one process, keeps WARNING
_restore = {"level": "INFO"}


def keep_warnings_between_stages() -> None:
    """Between chained stages datatrove stays as quiet as within one (``synthweb run``)."""
    _restore["level"] = "WARNING"


def quiet_hf() -> None:
    """No per-load progress bars from transformers/hub in our terminal output (ours is enough)."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


@contextmanager
def quiet_datatrove():
    """datatrove logs every task to the terminal; keep warnings there, the rest is in the task logs."""
    from loguru import logger

    logger.remove()
    handler = logger.add(sys.stderr, level="WARNING", format="{level}: {message}")
    try:
        yield
    finally:
        try:
            logger.remove(handler)
        except ValueError:  # a task run in this process (one worker) has reset the handlers already
            logger.remove()
        if _restore["level"] == "INFO":
            logger.add(sys.stderr, level="INFO")
        else:
            logger.add(sys.stderr, level=_restore["level"], format="{level}: {message}")
