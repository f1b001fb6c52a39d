"""A trained filter classifier on disk and in memory: load, score, save. No pickle anywhere.

A classifier folder holds ``config.json`` (what it is, how to run it, its threshold and calibration),
``README.md`` (the model card), ``metrics.json``, ``confusion_matrix.png`` and the weights:
``model.safetensors`` (the head) with ``encoder/`` (only after fine-tuning; a frozen classifier
names its encoder instead), or ``model.bin`` for a fastText classifier (fastText's own binary format).

Scores: a regression classifier predicts the label scale (0-5); when calibrated, its raw output is
mapped piecewise-linearly so that the cut chosen on validation data lands on ``threshold - 0.5``,
which makes ``int_score = round(score) >= threshold`` the chosen decision (FineWeb-Edu keeps
int_score >= 3). A binary classifier gives P(positive); its cut maps onto 0.5.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import UserError

FORMAT_VERSION = 1


@dataclass
class ClassifierSpec:
    kind: str  # encoder | fasttext
    task: str  # regression | binary
    encoder: str | None = None  # frozen: the encoder as configured; finetune: "encoder" (the subfolder)
    mode: str | None = None  # frozen | finetune
    max_length: int | None = None
    windows: int = 1
    head: dict = field(default_factory=dict)  # {type, hidden, dropout, dim}
    threshold: float = 3.0
    cut: float | None = None  # raw decision cut chosen on validation (None: uncalibrated)
    label_min: float = 0.0
    label_max: float = 5.0
    label_column: str = "score"
    name: str | None = None
    fingerprint: str | None = None  # hash of the training config and data: a rerun with both unchanged reuses it
    format_version: int = FORMAT_VERSION

    def required_files(self) -> list[str]:
        files = ["config.json"]
        if self.kind == "fasttext":
            return files + ["model.bin"]
        files.append("model.safetensors")
        if self.mode == "finetune":
            files += ["encoder/config.json", "encoder/modules.json"]
        return files


def make_head(dim: int, kind: str, hidden: int, dropout: float):
    import torch.nn as nn

    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, 1))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


def decision_boundary(spec: ClassifierSpec) -> float:
    """Where the calibrated score crosses into the positive class."""
    return 0.5 if spec.task == "binary" else spec.threshold - 0.5


def calibrate(raw: np.ndarray, spec: ClassifierSpec) -> np.ndarray:
    """Raw outputs -> scores: monotone piecewise-linear through (lo, lo), (cut, boundary), (hi, hi)."""
    lo, hi = (0.0, 1.0) if spec.task == "binary" else (spec.label_min, spec.label_max)
    raw = np.asarray(raw, dtype=np.float64)
    if spec.cut is not None and lo < spec.cut < hi:
        b = decision_boundary(spec)
        below = lo + (raw - lo) * (b - lo) / (spec.cut - lo)
        above = b + (raw - spec.cut) * (hi - b) / (hi - spec.cut)
        raw = np.where(raw < spec.cut, below, above)
    return np.clip(raw, lo, hi).astype(np.float32)


def int_scores(scores: np.ndarray, spec: ClassifierSpec) -> np.ndarray:
    if spec.task == "binary":
        return (scores >= 0.5).astype(np.int8)
    return np.clip(np.rint(scores), spec.label_min, spec.label_max).astype(np.int8)


class Classifier:
    """A loaded classifier: ``score(texts)`` -> (score float32, int_score int8)."""

    def __init__(self, spec: ClassifierSpec, folder: Path, encoder=None, head=None, ft_model=None):
        self.spec, self.folder, self.encoder, self.head, self.ft = spec, folder, encoder, head, ft_model
        self.name = spec.name or folder.name

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto", batch_tokens: int | None = None,
             dtype: str = "auto") -> "Classifier":
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"classifier folder not found: {folder}")
        cfg_path = folder / "config.json"
        if not cfg_path.exists():
            raise UserError(f"{folder} is not a classifier folder: config.json is missing")
        try:
            raw = json.loads(cfg_path.read_text())
            spec = ClassifierSpec(**raw)
        except (ValueError, TypeError) as e:
            raise UserError(f"{cfg_path}: not a synthweb classifier config ({e})") from None
        if spec.format_version > FORMAT_VERSION:
            raise UserError(f"{cfg_path}: format version {spec.format_version} is newer than this synthweb reads")
        missing = [f for f in spec.required_files() if not (folder / f).exists()]
        if missing:
            raise UserError(f"classifier {folder} is incomplete: missing {', '.join(missing)}")
        if spec.kind == "fasttext":
            from classifiers.fasttext_model import load_fasttext

            return cls(spec, folder, ft_model=load_fasttext(folder / "model.bin"))
        from safetensors.torch import load_file

        from classifiers.encoder import TextEncoder

        enc_name = str(folder / "encoder") if spec.mode == "finetune" else spec.encoder
        encoder = TextEncoder(enc_name, device, spec.max_length, spec.windows, batch_tokens, dtype=dtype)
        h = spec.head
        head = make_head(h["dim"], h["type"], h.get("hidden", 256), h.get("dropout", 0.0))
        try:
            head.load_state_dict(load_file(str(folder / "model.safetensors")))
        except (RuntimeError, OSError) as e:
            raise UserError(f"{folder / 'model.safetensors'}: does not match the head in config.json ({str(e).splitlines()[0]})") from None
        head.to(encoder.device).eval()
        return cls(spec, folder, encoder=encoder, head=head)

    def raw(self, texts: list[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        if self.ft is not None:
            from classifiers.fasttext_model import predict_fasttext

            return predict_fasttext(self.ft, texts, self.spec.task)
        import torch

        emb = self.encoder.encode(texts) if embeddings is None else embeddings
        with torch.inference_mode():
            out = self.head(torch.from_numpy(emb).to(self.encoder.device)).squeeze(-1).float()
            if self.spec.task == "binary":
                out = torch.sigmoid(out)
        return out.cpu().numpy()

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        s = calibrate(self.raw(texts), self.spec)
        return s, int_scores(s, self.spec)


def save_spec(spec: ClassifierSpec, folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps(asdict(spec), indent=2))
