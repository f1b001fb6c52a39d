"""Quality scorers: any classifier that turns a text into one number, behind one ``score(texts)``.

The meaning checks (``quality_gate.meaning.quality``) score every LLM output and its source with one
of these and log both, the way FinePhrase logs the FineWeb-Edu and DCLM scores of its inputs and
outputs. Three kinds, named by one string:

- a ``synthweb train-classifier`` folder (``config.json`` with our format): its calibrated score;
- ``fasttext:PATH[#LABEL]``: a fastText model file. With numeric labels (``__label__0`` ...
  ``__label__5``) the score is the expected label; otherwise the probability of ``LABEL`` (DCLM's
  classifier: ``fasttext:openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin#hq``);
- anything else: a Hugging Face sequence-classification model, a Hub ID or a local folder (e.g.
  ``HuggingFaceFW/fineweb-edu-classifier``, a regression head: the score is its logit). Two labels:
  P(label 1); more: the expected label index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import UserError


class Scorer:
    name = "scorer"

    def score(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


class _Ours(Scorer):
    def __init__(self, folder: str, device: str):
        from classifiers.model import Classifier

        self.clf = Classifier.load(folder, device=device)
        self.name = f"classifier:{self.clf.name}"

    def score(self, texts: list[str]) -> np.ndarray:
        return self.clf.score(texts)[0].astype(np.float32) if texts else np.zeros(0, np.float32)


class _FastText(Scorer):
    def __init__(self, spec: str):
        from classifiers.fasttext_model import _line, load_fasttext

        path, _, label = spec.removeprefix("fasttext:").partition("#")
        if not Path(path).is_file():
            raise UserError(f"quality classifier {spec!r}: no such fastText model file: {path}")
        self.model, self._line = load_fasttext(Path(path)), _line
        labels = [x.removeprefix("__label__") for x in self.model.get_labels()]
        self.numeric = all(x.lstrip("-").isdigit() for x in labels)
        self.label = label.removeprefix("__label__") if label else None
        if not self.numeric and self.label not in labels:
            raise UserError(f"quality classifier {spec!r}: its labels are {', '.join(labels)}; name the one to score "
                            f"as fasttext:{path}#LABEL")
        self.name = f"fasttext:{Path(path).name}" + (f"#{self.label}" if self.label else "")

    def score(self, texts: list[str]) -> np.ndarray:
        out = np.zeros(len(texts), dtype=np.float32)
        for i, t in enumerate(texts):  # model.f.predict: fasttext 0.9.2's wrapper breaks under NumPy 2
            probs = {lab.removeprefix("__label__"): p for p, lab in self.model.f.predict(self._line(t) + "\n", -1, 0.0, "replace")}
            if self.label:
                out[i] = probs.get(self.label, 0.0)
            else:
                total = sum(probs.values()) or 1.0
                out[i] = sum(int(k) * p for k, p in probs.items()) / total
        return out


class _SequenceClassifier(Scorer):
    def __init__(self, name: str, device: str, max_length: int = 512, batch_size: int = 16):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from pipeline.logs import quiet_hf

        quiet_hf()
        try:
            self.tok = AutoTokenizer.from_pretrained(name)
            self.model = AutoModelForSequenceClassification.from_pretrained(name)
        except (OSError, ValueError) as e:
            raise UserError(f"quality classifier {name!r}: cannot load it as a sequence classifier "
                            f"({str(e).splitlines()[0]})") from None
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.model.to(self.device).eval()
        self.max_length, self.batch_size = min(max_length, getattr(self.tok, "model_max_length", max_length)), batch_size
        self.name = f"hf:{name}"

    def score(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tok(texts[i:i + self.batch_size], truncation=True, max_length=self.max_length, padding=True,
                             return_tensors="pt").to(self.device)
            with torch.inference_mode():
                logits = self.model(**batch).logits.float()
            if logits.shape[-1] == 1:
                s = logits[:, 0]
            elif logits.shape[-1] == 2:
                s = logits.softmax(-1)[:, 1]
            else:
                s = (logits.softmax(-1) * torch.arange(logits.shape[-1], device=logits.device)).sum(-1)
            out.append(s.cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def check_spec(spec: str) -> None:
    """What can be checked of a spec before any task starts (files exist); a Hub ID is checked when it loads."""
    if spec.startswith("fasttext:"):
        path = spec.removeprefix("fasttext:").partition("#")[0]
        if not Path(path).is_file():
            raise UserError(f"quality classifier {spec!r}: no such fastText model file: {path}")
        return
    path = Path(spec).expanduser()
    if path.exists() and not (path / "config.json").exists():
        raise UserError(f"quality classifier {spec!r}: {path} is neither a classifier folder (no config.json) nor "
                        "a model folder; for a fastText model file write fasttext:PATH")
    if not path.exists() and spec.startswith((".", "/", "~")):
        raise UserError(f"quality classifier {spec!r}: no such folder")


def load_scorer(spec: str, device: str = "auto") -> Scorer:
    """The scorer a spec names (see the module docstring); a bad spec is one line naming it."""
    if spec.startswith("fasttext:"):
        return _FastText(spec)
    path = Path(spec).expanduser()
    if (path / "config.json").exists():
        import json

        try:
            raw = json.loads((path / "config.json").read_text())
        except ValueError:
            raw = {}
        if "format_version" in raw and raw.get("kind") in ("encoder", "fasttext"):
            return _Ours(str(path), device)
        return _SequenceClassifier(str(path), device)
    if path.exists():
        raise UserError(f"quality classifier {spec!r}: {path} is neither a classifier folder (no config.json) nor "
                        "a model folder; for a fastText model file write fasttext:PATH")
    if spec.startswith((".", "/", "~")):
        raise UserError(f"quality classifier {spec!r}: no such folder")
    return _SequenceClassifier(spec, device)
