"""The one record schema shared by every stage, and its explicit Parquet schema.

A record is ``id``, ``text`` and provenance: where it came from (``source``, ``url``), which stages
touched it (``history``), and a JSON ``metadata`` column for whatever else the source carried.
Stages add typed columns of their own by declaring them (``stage_fields``); everything is in one
place so that a user can explain any output row.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
from datatrove.data import Document

HISTORY_ENTRY = pa.struct(
    [
        pa.field("stage", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("config_hash", pa.string()),
        pa.field("time", pa.timestamp("ms", tz="UTC")),
    ]
)

CORE_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("source", pa.string()),
    pa.field("history", pa.list_(pa.field("element", HISTORY_ENTRY))),  # "element": as Parquet names it
    pa.field("metadata", pa.string()),  # JSON object: source fields no typed column claims
]
CORE_NAMES = {f.name for f in CORE_FIELDS}

SCHEMA_VERSION = "1"


def build_schema(stage_fields: list[pa.Field] | None = None) -> pa.Schema:
    """Core fields first, then the stage's typed columns, in a fixed order."""
    fields = list(CORE_FIELDS)
    for f in stage_fields or []:
        if f.name in CORE_NAMES:
            raise ValueError(f"stage field {f.name!r} clashes with a core field")
        fields.append(f)
    return pa.schema(fields, metadata={b"synthweb.schema_version": SCHEMA_VERSION.encode()})


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def document_to_row(doc: Document, schema: pa.Schema) -> dict:
    """Map a datatrove Document onto a schema row: typed columns from metadata, the rest as JSON."""
    meta = dict(doc.metadata)
    row: dict[str, Any] = {"id": str(doc.id), "text": doc.text}
    for name in schema.names:
        if name in ("id", "text", "metadata"):
            continue
        row[name] = meta.pop(name, None)
    # bookkeeping that datatrove adds and nobody downstream needs
    meta.pop("file_path", None)
    row["metadata"] = json.dumps({k: _jsonable(v) for k, v in meta.items()}, ensure_ascii=False, default=str) if meta else None
    return row


def row_to_document(row: dict) -> Document:
    """Inverse of :func:`document_to_row`: typed columns and JSON metadata back into ``doc.metadata``."""
    meta: dict[str, Any] = {}
    raw = row.get("metadata")
    if raw:
        try:
            loaded = json.loads(raw)
            meta.update(loaded if isinstance(loaded, dict) else {"metadata": loaded})
        except (TypeError, ValueError):
            meta["metadata"] = raw
    for key, value in row.items():
        if key not in ("id", "text", "metadata"):
            meta[key] = value
    return Document(text=row["text"], id=row["id"], metadata=meta)


def history_entry(stage: str, run_id: str, config_hash: str) -> dict:
    return {"stage": stage, "run_id": run_id, "config_hash": config_hash, "time": datetime.now(timezone.utc).replace(microsecond=0)}
