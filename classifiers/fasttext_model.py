"""fastText as a second, cheap ensemble member (DCLM used one): n-gram bag, trains in seconds on a CPU.

Trained on the rounded labels as classes; the score is the expected label under its class
probabilities (or P(positive) for a binary task), so it sits on the same 0-5 scale as the encoder
classifier. Saved in fastText's own binary format (``model.bin``), not pickle.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import UserError

_WS = re.compile(r"\s+")


def _line(text: str, max_chars: int = 20000) -> str:
    return _WS.sub(" ", text[:max_chars]).strip().lower()


def _module():
    try:
        import fasttext
    except ImportError:
        raise UserError("classifier.kind=fasttext needs the fasttext package (pip install fasttext-wheel)") from None
    return fasttext


def train_fasttext(texts: list[str], labels: np.ndarray, params: dict, seed: int, threads: int = 2):
    ft = _module()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        for t, y in zip(texts, labels):
            f.write(f"__label__{int(round(float(y)))} {_line(t)}\n")
        path = f.name
    try:
        return ft.train_supervised(path, seed=seed, thread=threads, verbose=0, **params)
    except (TypeError, ValueError) as e:
        raise UserError(f"classifier.fasttext: {e}") from None
    finally:
        Path(path).unlink(missing_ok=True)


def load_fasttext(path: Path):
    ft = _module()
    try:
        return ft.load_model(str(path))
    except ValueError as e:
        raise UserError(f"{path}: not a fastText model ({e})") from None


def predict_fasttext(model, texts: list[str], task: str) -> np.ndarray:
    # model.f.predict, not model.predict: fasttext 0.9.2's wrapper calls np.array(copy=False), which
    # NumPy 2 rejects; the underlying call returns the same (probability, label) pairs
    out = np.zeros(len(texts), dtype=np.float32)
    for i, t in enumerate(texts):
        pairs = model.f.predict(_line(t) + "\n", -1, 0.0, "replace")
        probs = {int(label.removeprefix("__label__")): p for p, label in pairs}
        if task == "binary":
            out[i] = probs.get(1, 0.0)
        else:
            total = sum(probs.values()) or 1.0
            out[i] = sum(k * p for k, p in probs.items()) / total
    return out
