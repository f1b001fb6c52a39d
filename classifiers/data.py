"""Labelled training data for the classifier: read, check, deduplicate.

Reads Parquet or JSONL[.gz] files (a file or a folder of them; synthweb annotate output included).
Labels must be numbers; a text labelled several times (the LLM-scored FineWeb set scores some pages
up to five times) becomes one example with the mean label, so no page can sit on both sides of a
train/validation split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import UserError

SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz")


@dataclass
class Labelled:
    texts: list[str]
    labels: np.ndarray  # float32
    rows_read: int
    duplicates_merged: int  # rows folded into an earlier copy of the same text
    empty_skipped: int  # rows whose text is empty or blank (counted, not trained on)
    conflicting: int  # distinct texts whose copies carried different labels
    files: list[str]


def _files(source: str) -> list[Path]:
    from pipeline.io.readers import kept_rows_of

    p, nested = Path(source), []
    if p.exists():  # a finished stage's folder means its kept rows (never removed/); an unfinished one is refused
        p, nested = kept_rows_of(p, source)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(SUFFIXES) and "_logs" not in f.parts
                       and not any(f.is_relative_to(n) for n in nested))
        if not files:
            raise UserError(f"{source}: no Parquet or JSONL files in this folder")
        return files
    raise UserError(f"training data not found: {source}")


def _read(f: Path, columns: list[str]):
    import pandas as pd

    try:
        if f.name.endswith(".parquet"):
            import pyarrow.parquet as pq

            names = pq.read_schema(f).names
            missing = [c for c in columns if c not in names]
            if missing:
                raise UserError(f"{f}: no column {missing[0]!r} (columns: {', '.join(names)})")
            return pq.read_table(f, columns=columns).to_pandas()
        df = pd.read_json(f, lines=True, dtype=False)
    except UserError:
        raise
    except ValueError as e:
        raise UserError(f"{f}: cannot read it ({str(e).splitlines()[0]})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{f}: no column {missing[0]!r} (columns: {', '.join(map(str, df.columns))})")
    return df[columns]


def load_labelled(source: str, text_column: str = "text", label_column: str = "score") -> Labelled:
    import pandas as pd

    files = _files(source)
    frames = []
    for f in files:
        df = _read(f, [text_column, label_column])
        col = df[label_column]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            bad = next(((i, v) for i, v in enumerate(col) if not isinstance(v, (int, float, bool, np.number))), (0, col.iloc[0]))
            raise UserError(f"{f}: label column {label_column!r} holds {type(bad[1]).__name__} values "
                            f"(row {bad[0] + 1}: {bad[1]!r}); labels must be numbers")
        na = col.isna().to_numpy()
        if na.any():
            raise UserError(f"{f}: label column {label_column!r} is empty at row {int(np.argmax(na)) + 1}")
        texts = df[text_column]
        bad_text = texts.map(lambda t: not isinstance(t, str)).to_numpy()
        if bad_text.any():
            raise UserError(f"{f}: text column {text_column!r} is not a string at row {int(np.argmax(bad_text)) + 1}")
        frames.append(pd.DataFrame({"text": texts.to_numpy(), "label": col.astype("float32").to_numpy()}))
    data = pd.concat(frames, ignore_index=True)
    total = len(data)
    data = data[data.text.str.strip().str.len() > 0]
    empty = total - len(data)
    if data.empty:
        raise UserError(f"{source}: no labelled texts")
    data["key"] = [hashlib.sha1(" ".join(t.split()).encode()).hexdigest() for t in data.text]
    groups = data.groupby("key", sort=False)
    merged = groups.agg(text=("text", "first"), label=("label", "mean"), n=("label", "size"), distinct=("label", "nunique"))
    return Labelled(texts=merged.text.tolist(), labels=merged.label.to_numpy(np.float32), rows_read=total,
                    empty_skipped=empty,
                    duplicates_merged=int(len(data) - len(merged)), conflicting=int((merged.distinct > 1).sum()),
                    files=[str(f) for f in files])
