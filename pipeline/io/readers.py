"""Readers: Hugging Face datasets, Parquet, JSONL (.gz/.zst), WARC, folders of HTML files.

All readers are datatrove pipeline steps yielding ``Document``s with ``metadata["url"]``,
``metadata["source"]`` and ``metadata["content_type"]`` (``html`` or ``text``).

datatrove's own JSONL/Parquet readers are not used directly because they skip bad lines without
naming the line, stop reading a file silently on invalid UTF-8, and shard by file only (one big
file would run on one task). Here every bad record is an error naming file and record, or a counted
skip (``on_bad_record: skip``); with fewer files than tasks, records are dealt out round-robin.
The Hub reader is datatrove's.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipeline.config import InputConfig
from pipeline.errors import UserError

EXTENSIONS = {
    "jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst", ".ndjson", ".jsonl.bz2"),
    "parquet": (".parquet",),
    "warc": (".warc", ".warc.gz", ".arc.gz", ".warc.wet.gz", ".wet.gz"),
    "html": (".html", ".htm", ".html.gz", ".htm.gz", ".xhtml"),
}
HF_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_name(src: str) -> bool:
    """owner/name, and not a path someone meant: no leading ./ ~ /, no data-file extension
    (``myseeds/pages.jsonl`` is a file that does not exist, not a dataset)."""
    if src.startswith((".", "/", "~")) or not HF_NAME.match(src):
        return False
    return _format_of(src) is None and not src.lower().endswith((".json", ".csv", ".txt", ".gz", ".zst", ".bz2"))


def _stage_folder(path: Path) -> str | None:
    """The stage whose output folder ``path`` is (finished or not), else None."""
    for marker in (path / "_logs" / "state.json", path / "stats.json"):
        if marker.is_file():
            try:
                d = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(d, dict) and d.get("stage") and "config_hash" in d:  # ours, not any stats.json
                return str(d["stage"])
    return None


def _check_finished(path: Path, src: str) -> None:
    """A stage's output folder (or its data/, kept/, removed/) is input only once the stage finished: an
    unfinished run's _parts and data/ hold kept and removed rows alike, and some tasks' rows not yet."""
    for folder in (path, path.parent) if path.name in ("data", "kept", "removed") else (path,):
        stage = _stage_folder(folder)
        if stage is None:
            continue
        stats = folder / "stats.json"
        done = False
        if stats.is_file():
            try:
                done = bool(json.loads(stats.read_text()).get("complete"))
            except (OSError, ValueError):
                done = False
        if not done:
            raise UserError(f"{src} is the output of an unfinished {stage} run ({folder} has no complete stats.json); "
                            f"rerun that stage's command to finish it, or point at a finished run")
        return


def _nested_runs(root: Path) -> list[Path]:
    """Stage output folders found inside a plain input folder: never read as pages."""
    return sorted({p.parent.parent if p.name == "state.json" else p.parent
                   for p in list(root.rglob("_logs/state.json")) + list(root.rglob("stats.json"))
                   if _stage_folder(p.parent.parent if p.name == "state.json" else p.parent)})


def _run_folder_data(path: Path) -> Path | None:
    """The kept-rows folder of a synthweb stage output (stats.json beside data/ or kept/), else None."""
    if not (path.is_dir() and (path / "stats.json").exists()):
        return None
    for tag in ("data", "kept"):
        if (path / tag).is_dir() and any((path / tag).glob("*.parquet")):
            return path / tag
    return None


def kept_rows_of(path: Path, src: str) -> tuple[Path, list[Path]]:
    """For readers outside the datatrove path (train-classifier): ``path`` as input, by the rules every
    stage follows: an unfinished stage output is refused, a finished one means its kept rows, and the
    stage output folders found inside a plain folder are returned to be left out."""
    _check_finished(path if path.is_dir() else path.parent, src)
    run_data = _run_folder_data(path)
    if run_data is not None:
        return run_data, []
    return path, _nested_runs(path) if path.is_dir() else []


class BadRecord(Exception):
    """A record that cannot be read; carries the position for the error message."""


def _format_of(name: str) -> str | None:
    low = name.lower()
    for fmt, exts in EXTENSIONS.items():
        if low.endswith(exts):
            return fmt
    return None


def _dig(data: dict, dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@dataclass
class InputPlan:
    """What to read, decided once in the main process so every task sees the same file list."""

    format: str
    source: str
    files: list[str] = field(default_factory=list)
    root: str = ""
    total_hint: int | None = None
    notice: str | None = None  # one line to show the user (e.g. the offline fallback)
    skipped: dict[str, int] = field(default_factory=dict)  # files left out under on_bad_record: skip, by reason
    revision: str | None = None  # a Hub dataset: the commit every task reads (pinned when the run starts)


def plan_input(cfg: InputConfig, text_key_setting: str = "input.text_key") -> InputPlan:
    """Resolve ``input.source`` to a format and a file list; raise a one-line UserError on problems
    (``text_key_setting``: what the error about a missing text column tells the user to set)."""
    src = cfg.source
    if cfg.format == "python-docs":
        return InputPlan("python-docs", "python-docs")
    path = Path(src).expanduser()
    if cfg.format == "hf" or (not path.exists() and cfg.format == "auto" and looks_like_hub_name(src)):
        return _plan_hf(cfg)
    if not path.exists():
        if path.name in ("data", "kept", "removed"):  # the kept rows of a stage that has not finished yet?
            _check_finished(path, src)
        raise UserError(f"input not found: {src} (no such file or folder, and not a Hub dataset name like owner/name)")
    _check_finished(path if path.is_dir() else path.parent, src)
    run_data = _run_folder_data(path)
    if run_data is not None:  # a synthweb output folder: its kept rows, never its removed/
        inner = plan_input(cfg.model_copy(update={"source": str(run_data)}), text_key_setting)
        inner.notice = (f"{src} is a synthweb {json.loads((path / 'stats.json').read_text()).get('stage', '')} output "
                        f"folder: reading its kept rows in {run_data} (not removed/)")
        return inner
    nested_note = None
    if path.is_dir():
        if _stage_folder(path):
            raise UserError(f"{src} is a finished {_stage_folder(path)} output with no kept rows (no data/ or kept/ shards)")
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if cfg.glob:
            files = sorted(str(p) for p in path.glob(cfg.glob) if p.is_file())
        nested = _nested_runs(path)
        if nested:  # e.g. an output folder written inside the input folder by an earlier run
            files = [f for f in files if not any(Path(f).is_relative_to(n) for n in nested)]
            nested_note = (f"{src}: left out {len(nested)} synthweb output folder(s) inside it "
                           f"({', '.join(str(n) for n in nested[:3])}): an output is never read as pages")
        root = str(path)
    else:
        files, root = [str(path)], str(path.parent)
    if cfg.format == "auto":
        found = {f: _format_of(f) for f in files}
        kinds = {k for k in found.values() if k}
        if not kinds:
            exts = sorted({"".join(Path(f).suffixes[-2:]) or Path(f).name for f in files})[:8]
            what = f"files with extensions {exts}" if files else "no files"
            raise UserError(f"{src}: cannot tell the input format ({what}); set input.format to one of jsonl, parquet, warc, html")
        if len(kinds) > 1:
            raise UserError(f"{src}: mixed input formats {sorted(kinds)}; point input.source at one kind or set input.glob")
        fmt = kinds.pop()
        files = [f for f, k in found.items() if k == fmt]
    else:
        fmt = cfg.format
    good, empty = [], 0
    for f in files:
        if os.path.getsize(f) == 0:
            if cfg.on_bad_record == "error":
                raise UserError(f"{f}: empty file (0 bytes); remove it or set input.on_bad_record=skip")
            empty += 1
            continue
        good.append(f)
    if not good:
        raise UserError(f"{src}: no readable {fmt} input (all files are empty)")
    plan = InputPlan(fmt, src, good, root, skipped={"empty_file": empty} if empty else {}, notice=nested_note)
    if fmt == "parquet":
        _check_parquet(plan, cfg, text_key_setting)
    if fmt == "html":
        plan.total_hint = len(good)
    if cfg.limit and plan.total_hint:
        plan.total_hint = min(cfg.limit, plan.total_hint)
    return plan


def _check_parquet(plan: InputPlan, cfg: InputConfig, text_key_setting: str = "input.text_key") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    total = 0
    for f in plan.files:
        try:
            meta = pq.read_metadata(f)
            schema = meta.schema.to_arrow_schema()
        except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds for a broken footer
            raise UserError(f"{f}: not a readable Parquet file ({e})") from None
        total += meta.num_rows
        if cfg.text_key not in schema.names:
            raise UserError(f"{f}: no column {cfg.text_key!r} (columns: {', '.join(schema.names)}); set {text_key_setting}")
        typ = schema.field(cfg.text_key).type
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            raise UserError(f"{f}: column {cfg.text_key!r} has type {typ}, expected string")
    plan.total_hint = total


def _hub_reachable(timeout: float = 5.0) -> tuple[bool, str]:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False, "HF_HUB_OFFLINE is set"
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True, ""
    except OSError as e:
        return False, f"{endpoint.hostname}: {e.strerror or e}"


def _plan_hf(cfg: InputConfig) -> InputPlan:
    if Path(cfg.source).expanduser().exists():  # a local dataset folder or script: no Hub needed
        return InputPlan("hf", cfg.source, total_hint=cfg.limit)
    ok, why = _hub_reachable()
    if ok:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

        try:
            info = HfApi().dataset_info(cfg.source, revision=cfg.hf_revision, timeout=10)
        except RepositoryNotFoundError:
            raise UserError(f"Hub dataset not found: {cfg.source} (check the name, or log in for a gated/private one)") from None
        except (HfHubHTTPError, OSError) as e:
            ok, why = False, str(e).splitlines()[0]
    if ok:  # pinned: every task, and a resume next week, read this commit even if the dataset moves on
        return InputPlan("hf", cfg.source, total_hint=cfg.limit, revision=info.sha or cfg.hf_revision)
    if cfg.offline_fallback == "none":
        raise UserError(f"cannot reach the Hugging Face Hub for {cfg.source} ({why}) and input.offline_fallback is none")
    from pipeline.config import InputConfig

    if cfg.source != InputConfig().source:  # the demo corpus stands in for the default source only, never for a name typed
        raise UserError(f"cannot reach the Hugging Face Hub for {cfg.source} ({why}); no local path of that name "
                        "exists either (the offline demo corpus replaces only the default source)")
    notice = (
        f"Hub unreachable ({why}): reading the offline demo corpus (Python's bundled documentation) "
        f"instead of {cfg.source}"
    )
    plan = InputPlan("python-docs", "python-docs", notice=notice)
    return plan


# ------------------------------------------------------------------ reader steps


def _task_limit(limit: int | None, rank: int, world_size: int) -> int | None:
    """Share a global limit between tasks so that all tasks together read exactly ``limit``."""
    if not limit:
        return None
    return limit // world_size + (1 if rank < limit % world_size else 0)


class RecordReader(PipelineStep):
    """Shared logic of the file readers: sharding, a global limit, bad-record policy, field mapping."""

    type = "📖 - READER"
    name = "reader"

    def __init__(self, plan: InputPlan, cfg: InputConfig):
        super().__init__()
        self.plan = plan
        self.cfg = cfg

    # format-specific: yield (position, raw) where raw is a dict or a BadRecord
    def iter_file(self, path: str) -> Iterator[tuple[str, Any]]:
        raise NotImplementedError

    def to_document(self, raw: dict, path: str, pos: str) -> Document:
        cfg = self.cfg
        if cfg.text_key not in raw:
            raise BadRecord(f"no {cfg.text_key!r} field (fields: {', '.join(list(raw)[:12])})")
        text = raw.pop(cfg.text_key)
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise BadRecord(f"field {cfg.text_key!r} is {type(text).__name__}, expected a string")
        doc_id = _dig(raw, cfg.id_key) if cfg.id_key else None
        url = _dig(raw, cfg.url_key) if cfg.url_key else None
        if url is None:
            url = _dig(raw, "metadata.url") or raw.get("url")
        raw.pop(cfg.id_key, None)
        raw.pop("url", None)
        meta = raw.pop("metadata", None)
        metadata: dict[str, Any] = {}
        if isinstance(meta, dict):
            meta.pop("url", None)
            metadata.update(meta)
        elif meta is not None:
            metadata["metadata"] = meta
        metadata.update(raw)
        metadata["url"] = str(url) if url is not None else None
        metadata.setdefault("content_type", "text")
        rel = os.path.relpath(path, self.plan.root) if self.plan.root else path
        metadata["source"] = f"{self.plan.source}" if len(self.plan.files) == 1 else f"{self.plan.source}/{rel}"
        if doc_id is None or doc_id == "":
            doc_id = f"{rel}#{pos}"
        return Document(text=text, id=str(doc_id), metadata=metadata)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        files = self.plan.files
        by_files = len(files) >= world_size
        mine = files[rank::world_size] if by_files else files
        limit = _task_limit(self.cfg.limit, rank, world_size) if by_files else self.cfg.limit
        n_out = 0
        g = 0  # global record counter (record-level sharding)
        for path in mine:
            self.stat_update("input_files")
            for pos, raw in self.iter_file(path):
                if not by_files:
                    if limit is not None and g >= limit:
                        return
                    g += 1
                    if (g - 1) % world_size != rank:
                        continue
                elif limit is not None and n_out >= limit:
                    return
                try:
                    if isinstance(raw, BadRecord):
                        raise raw
                    with self.track_time():
                        doc = self.to_document(raw, path, pos)
                except BadRecord as e:
                    if self.cfg.on_bad_record == "error":
                        raise UserError(f"{path}:{pos}: {e} (set input.on_bad_record=skip to skip and count such records)") from None
                    self.stat_update("skipped_bad_record")
                    continue
                self.stat_update("documents")
                n_out += 1
                yield doc


class JsonlReader(RecordReader):
    name = "📖 jsonl"

    @staticmethod
    def _open(path: str):
        low = path.lower()
        if low.endswith(".gz"):
            return gzip.open(path, "rb")
        if low.endswith(".zst"):
            import zstandard

            return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
        if low.endswith(".bz2"):
            import bz2

            return bz2.open(path, "rb")
        return open(path, "rb")

    def iter_file(self, path: str):
        with self._open(path) as f:
            li = 0
            while True:
                try:
                    line = f.readline()
                except (OSError, EOFError) as e:  # truncated or corrupt compressed file
                    yield f"line {li + 1}", BadRecord(f"compressed stream is corrupt or truncated ({e})")
                    return
                if not line:
                    return
                li += 1
                if not line.strip():
                    continue
                pos = f"line {li}"
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield pos, BadRecord(f"invalid UTF-8 at byte {e.start}")
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    yield pos, BadRecord(f"not valid JSON ({e.msg} at column {e.colno})")
                    continue
                if not isinstance(obj, dict):
                    yield pos, BadRecord(f"expected a JSON object, got {type(obj).__name__}")
                    continue
                yield pos, obj


class ParquetReader(RecordReader):
    name = "📖 parquet"

    def iter_file(self, path: str):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        row = 0
        for batch in pf.iter_batches(batch_size=1000):
            for rec in batch.to_pylist():
                row += 1
                yield f"row {row}", rec


_CANONICAL = re.compile(
    rb"""<link[^>]+rel=["']?canonical["']?[^>]*href=["']([^"'>]+)|<link[^>]+href=["']([^"'>]+)["'][^>]*rel=["']?canonical"""
    rb"""|<meta[^>]+property=["']og:url["'][^>]*content=["']([^"'>]+)""",
    re.I,
)


def _decode_html(raw: bytes) -> str:
    """Decode HTML bytes: UTF-8 first, then the detected charset. Binary data is a BadRecord."""
    head = raw[:8192]
    if b"\x00" in head:
        raise BadRecord("binary data, not HTML (NUL bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    import cchardet

    enc = cchardet.detect(raw).get("encoding")
    if enc:
        try:
            text = raw.decode(enc)
            if "<" in text[:4096]:
                return text
        except (UnicodeDecodeError, LookupError):
            pass
    raise BadRecord("binary data or unknown encoding, not HTML text")


class HtmlFolderReader(RecordReader):
    """One document per HTML file; the URL comes from input.url_map, else the page's canonical link."""

    name = "📖 html"

    def __init__(self, plan: InputPlan, cfg: InputConfig, url_map: dict[str, str] | None = None):
        super().__init__(plan, cfg)
        self.url_map = url_map or {}

    def iter_file(self, path: str):
        p = Path(path)
        raw = p.read_bytes()
        if p.suffix == ".gz":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as e:
                yield "file", BadRecord(f"broken gzip ({e})")
                return
        try:
            html = _decode_html(raw)
        except BadRecord as e:
            yield "file", e
            return
        if "<" not in html[:65536]:
            yield "file", BadRecord("no HTML markup found")
            return
        key = p.name.split(".")[0]
        url = self.url_map.get(key) or self.url_map.get(p.name)
        if not url:
            m = _CANONICAL.search(raw[:200_000])
            if m:
                url = next(g for g in m.groups() if g).decode("utf-8", "replace")
        yield "file", {"text": html, "id": f"{key}", "url": url, "content_type": "html"}

    def to_document(self, raw: dict, path: str, pos: str) -> Document:
        doc = super().to_document(raw, path, pos)
        doc.metadata["content_type"] = "html"
        return doc


class WarcReader(RecordReader):
    """WARC (response records, HTML) and WET (conversion records, text) files, read with warcio.

    The payload type comes from WARC-Identified-Payload-Type, else the HTTP Content-Type header, else
    libmagic (datatrove's ``process_record`` trusts only the first and libmagic, and misses pages).
    Records that are not HTML are normal in a crawl: they are counted (``skipped_non_html``).
    """

    name = "📖 warc"
    HTML_TYPES = ("text/html", "application/xhtml+xml")

    def _payload_type(self, record, body: bytes) -> str | None:
        mime = record.rec_headers.get_header("WARC-Identified-Payload-Type")
        if not mime and record.http_headers is not None:
            mime = record.http_headers.get_header("Content-Type")
        if not mime:
            import magic

            mime = magic.from_buffer(body[:4096], mime=True)
        return mime.split(";")[0].strip().lower() if mime else None

    def iter_file(self, path: str):
        from warcio.archiveiterator import ArchiveIterator
        from warcio.exceptions import ArchiveLoadFailed

        with open(path, "rb") as f:
            try:
                for ri, record in enumerate(ArchiveIterator(f), start=1):
                    if record.rec_type not in ("response", "conversion"):
                        continue
                    body = record.content_stream().read()
                    is_text = record.rec_type == "conversion"
                    if not is_text and self._payload_type(record, body) not in self.HTML_TYPES:
                        self.stat_update("skipped_non_html")
                        continue
                    try:
                        text = _decode_html(body) if not is_text else body.decode("utf-8", "replace")
                    except BadRecord as e:
                        yield f"record {ri}", e
                        continue
                    yield f"record {ri}", {
                        "text": text,
                        "id": record.rec_headers.get_header("WARC-Record-ID"),
                        "url": record.rec_headers.get_header("WARC-Target-URI"),
                        "warc_date": record.rec_headers.get_header("WARC-Date"),
                        "content_type": "text" if is_text else "html",
                    }
            except ArchiveLoadFailed as e:
                yield "file", BadRecord(f"not a readable WARC file ({str(e).splitlines()[0]})")


class PythonDocsReader(RecordReader):
    name = "📖 python-docs"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from pipeline.io.demo_corpus import iter_python_docs

        if data:
            yield from data
        for i, rec in enumerate(iter_python_docs()):
            if self.cfg.limit and i >= self.cfg.limit:
                break
            if i % world_size != rank:
                continue
            self.stat_update("documents")
            meta = {"url": rec["url"], "title": rec["title"], "source": "python-docs", "content_type": "text"}
            yield Document(text=rec["text"], id=rec["id"], metadata=meta)


class HubReader(PipelineStep):
    """A Hub dataset by name through datatrove's HuggingFaceDatasetReader (streaming supported)."""

    type = "📖 - READER"
    name = "📖 hub"

    def __init__(self, plan: InputPlan, cfg: InputConfig):
        super().__init__()
        self.plan, self.cfg = plan, cfg

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datatrove.pipeline.readers import HuggingFaceDatasetReader

        cfg = self.cfg
        options: dict[str, Any] = {"split": cfg.hf_split}
        if cfg.hf_name:
            options["name"] = cfg.hf_name
        if self.plan.revision or cfg.hf_revision:
            options["revision"] = self.plan.revision or cfg.hf_revision
        limit = _task_limit(cfg.limit, rank, world_size)
        reader = HuggingFaceDatasetReader(
            cfg.source, dataset_options=options, streaming=cfg.streaming, limit=limit if limit is not None else -1,
            text_key=cfg.text_key, id_key=cfg.id_key,
        )
        for doc in reader.run(data, rank, world_size):
            meta = doc.metadata
            url = _dig(meta, cfg.url_key) if cfg.url_key else None
            meta["url"] = str(url if url is not None else meta.get("url") or "") or None
            meta["source"] = f"hf://datasets/{cfg.source}" + (f"/{cfg.hf_name}" if cfg.hf_name else "")
            meta["content_type"] = "text"
            meta.pop("dataset", None)
            self.stat_update("documents")
            yield doc


def load_url_map(path: str | None) -> dict[str, str]:
    """A JSON file mapping file name (or name without extensions) to URL; values may be {"url": ...}."""
    if not path:
        return {}
    p = Path(path)
    if not p.exists():
        raise UserError(f"input.url_map not found: {path}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object mapping file names to URLs")
    return {k: (v.get("url") if isinstance(v, dict) else v) for k, v in data.items() if v}


def make_reader(plan: InputPlan, cfg: InputConfig) -> PipelineStep:
    if plan.format == "jsonl":
        return JsonlReader(plan, cfg)
    if plan.format == "parquet":
        return ParquetReader(plan, cfg)
    if plan.format == "html":
        return HtmlFolderReader(plan, cfg, load_url_map(cfg.url_map))
    if plan.format == "warc":
        return WarcReader(plan, cfg)
    if plan.format == "hf":
        return HubReader(plan, cfg)
    if plan.format == "python-docs":
        return PythonDocsReader(plan, cfg)
    raise UserError(f"unknown input format {plan.format!r}")
