"""``synthweb decontaminate``: drop documents that contain benchmark items.

Benchmark items are read from local files (JSONL, CSV, Parquet; the layouts of
../shared/data/benchmarks and HellaSwag's 6-line text format load as they are; any other file by
``decontaminate.columns``) or from Hugging Face datasets (``hf:NAME[:CONFIG]:SPLIT``). Each item is
normalised (lowercase words, punctuation dropped) and indexed by its word n-grams (default 10; an item
shorter than that by its whole text). A document sharing an n-gram with an item is a candidate; it is
confirmed when the characters that match in order (difflib.SequenceMatcher) between the item and the
document text around the hit cover at least ``min_overlap`` of the item. Confirmed documents go to
``removed/`` naming the benchmark, the item and the overlap; ``report.json`` counts hits and unique
items per benchmark, with examples.
"""

from __future__ import annotations

import bz2
import csv
import difflib
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from datatrove.pipeline.base import PipelineStep

from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.stages.base import StageContext

DECONT_FIELDS = [
    pa.field("contamination_benchmark", pa.string()),
    pa.field("contamination_item", pa.string()),
    pa.field("contamination_overlap", pa.float32()),
    pa.field("contamination_item_text", pa.string()),
]
REMOVED_FIELDS = DECONT_FIELDS + [pa.field("filter_reason", pa.string())]

_WORD = re.compile(r"\w+", re.UNICODE)
_LABELS = re.compile(r"\b(?:Question|Answer|Passage|Context|Choices)\s*:", re.I)
_LETTER = re.compile(r"^[A-Z]$")
KNOWN_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".csv", ".parquet", ".txt.bz2")


def words_of(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


@dataclass
class Item:
    benchmark: str
    key: str
    text: str


# ------------------------------------------------------------------ loading


def _item_text(row: dict, columns: list[str], where: str) -> str:
    """The text of one benchmark row: the question with its gold answer, by layout."""
    if columns:
        missing = [c for c in columns if c not in row]
        if missing:
            raise UserError(f"{where}: no column {', '.join(missing)} (columns found: {', '.join(row)})")
        return " ".join(str(row[c]) for c in columns if row[c] is not None)
    if "context_options" in row and "continuation" in row:  # winogrande
        return f"{row['context_options'][int(row['gold'])]} {row['continuation']}"
    if "query" in row:
        text = row["query"]
        if "context" in row:
            text = f"{row['context']} {text}"
        choices, gold = row.get("choices"), row.get("gold")
        if choices and gold is not None and not _LETTER.match(str(choices[int(gold)])):
            text = f"{text} {choices[int(gold)]}"  # lettered choices are already inside the query
        return _LABELS.sub(" ", text)
    if "context" in row and "continuation" in row:  # lambada
        return f"{row['context']} {row['continuation']}"
    for col in ("question", "text", "prompt"):
        if col in row and isinstance(row[col], str):
            return row[col]
    raise UserError(f"{where}: cannot tell which columns hold the benchmark text (columns found: "
                    f"{', '.join(row)}); set decontaminate.columns, e.g. [question, answer]")


def _hellaswag(path: Path) -> list[tuple[str, str]]:
    lines = bz2.open(path, "rt", encoding="utf-8").read().splitlines()
    if len(lines) % 6:
        raise UserError(f"{path}: expected 6 lines per item (context, gold index, 4 endings), got {len(lines)} lines")
    out = []
    for i in range(0, len(lines), 6):
        ctx = lines[i].split(": ", 1)[-1]
        try:
            gold = int(lines[i + 1])
        except ValueError:
            raise UserError(f"{path}:{i + 2}: expected the gold ending's index, got {lines[i + 1][:40]!r}") from None
        out.append((str(i // 6), f"{ctx} {lines[i + 2 + gold]}"))
    return out


def _rows(path: Path):
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz", ".json")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield n, json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    elif name.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                yield n, row
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for n, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield n, row
    else:
        raise UserError(f"{path}: unknown benchmark format (known: {', '.join(KNOWN_SUFFIXES)})")


def load_benchmark(spec: str, columns: list[str] | None = None) -> list[Item]:
    """Items of one benchmark file or ``hf:NAME[:CONFIG]:SPLIT`` dataset."""
    columns = columns or []
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if len(parts) not in (2, 3):
            raise UserError(f"{spec}: expected hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT")
        from datasets import load_dataset

        name, split = parts[0], parts[-1]
        ds = load_dataset(name, parts[1] if len(parts) == 3 else None, split=split)
        return [Item(name, str(i), _item_text(r, columns, f"{spec} row {i}")) for i, r in enumerate(ds)]
    path = Path(spec)
    if not path.exists():
        raise UserError(f"benchmark file not found: {spec}")
    bench = path.name.split(".")[0]
    if path.name.endswith(".txt.bz2"):
        return [Item(bench, k, t) for k, t in _hellaswag(path)]
    return [Item(bench, str(n), _item_text(row, columns, f"{path}:{n}")) for n, row in _rows(path)]


def benchmark_files(specs: list[str]) -> list[str]:
    """Files (a folder: every benchmark file in it) and hf: names, in order."""
    out = []
    for s in specs:
        p = Path(s)
        if not s.startswith("hf:") and p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.name.endswith(KNOWN_SUFFIXES))
            if not found:
                raise UserError(f"{s}: no benchmark files in this folder (looked for {', '.join(KNOWN_SUFFIXES)})")
            out.extend(found)
        else:
            out.append(s)
    return out


# ------------------------------------------------------------------ index and matching


class BenchmarkIndex:
    def __init__(self, items: list[Item], n: int, min_words: int):
        self.n, self.items = n, []
        self.grams: dict[str, list[int]] = {}
        self.lengths: set[int] = set()
        self.too_short = 0
        for it in items:
            w = words_of(it.text)
            if len(w) < min_words:
                self.too_short += 1
                continue
            idx = len(self.items)
            self.items.append((it, " ".join(w)))
            k = min(n, len(w))
            self.lengths.add(k)
            for i in range(len(w) - k + 1):
                self.grams.setdefault(" ".join(w[i : i + k]), []).append(idx)

    def match(self, text: str, min_overlap: float) -> tuple[Item, float] | None:
        """The best confirmed item in ``text``, with its overlap, or None."""
        w = words_of(text)
        candidates: dict[int, int] = {}
        for k in self.lengths:
            for i in range(len(w) - k + 1):
                for idx in self.grams.get(" ".join(w[i : i + k]), ()):
                    candidates.setdefault(idx, i)
        best = None
        for idx, pos in candidates.items():
            item, norm = self.items[idx]
            span = len(norm.split())
            window = " ".join(w[max(0, pos - span) : pos + 2 * span])
            sm = difflib.SequenceMatcher(None, norm, window, autojunk=False)
            overlap = sum(b.size for b in sm.get_matching_blocks()) / max(1, len(norm))
            if overlap >= min_overlap and (best is None or overlap > best[1]):
                best = (item, overlap)
        return best


class DecontaminateStep(PipelineStep):
    name = "🧪 decontaminate"
    type = "🫂 - DEDUP"

    def __init__(self, cfg: Config, failures=None):
        super().__init__()
        self.d, self.failures = cfg.decontaminate, failures
        self.files = benchmark_files(cfg.decontaminate.benchmarks)

    def run(self, data, rank: int = 0, world_size: int = 1):
        items = [it for f in self.files for it in load_benchmark(f, self.d.columns)]
        index = BenchmarkIndex(items, self.d.ngram, self.d.min_item_words)
        if self.failures is not None:
            self.failures.__enter__()
        exc: tuple = (None, None, None)
        try:
            for doc in data:
                self.stat_update("documents")
                if not _WORD.search(doc.text):
                    self.stat_update("no_words")
                elif not doc.text.isascii() and sum(c.isascii() for c in doc.text) < len(doc.text) / 2:
                    self.stat_update("mostly_non_ascii")  # non-Latin scripts: matched like any other text, counted
                hit = index.match(doc.text, self.d.min_overlap)
                if hit is None:
                    self.update_doc_stats(doc)
                    yield doc
                    continue
                item, overlap = hit
                self.stat_update("dropped")
                self.stat_update(f"hits_{item.benchmark}")
                doc.metadata.update(contamination_benchmark=item.benchmark, contamination_item=item.key,
                                    contamination_overlap=round(overlap, 4), contamination_item_text=item.text[:1000],
                                    filter_reason="contaminated")
                if self.d.action == "flag":
                    yield doc
                elif self.failures is not None:
                    self.failures.write(doc, rank=rank)
        except BaseException as e:
            exc = (type(e), e, e.__traceback__)
            raise
        finally:
            if self.failures is not None:
                self.failures.__exit__(*exc)


def report(out: Path, cfg: Config) -> dict:
    """Hits per benchmark (documents), unique items hit, examples; from removed/ (or flagged rows)."""
    import pyarrow.parquet as pq

    folder = out / ("data" if cfg.decontaminate.action == "flag" else "removed")
    rows = [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()
            if r.get("contamination_benchmark")]
    per: dict[str, dict] = {}
    for f in benchmark_files(cfg.decontaminate.benchmarks):
        name = f[3:].split(":")[0] if f.startswith("hf:") else Path(f).name.split(".")[0]
        per.setdefault(name, {"hits": 0, "unique_items": 0, "examples": []})
    items: dict[str, set] = {}
    for r in rows:
        b = per.setdefault(r["contamination_benchmark"], {"hits": 0, "unique_items": 0, "examples": []})
        b["hits"] += 1
        items.setdefault(r["contamination_benchmark"], set()).add(r["contamination_item"])
        if len(b["examples"]) < cfg.decontaminate.examples:
            b["examples"].append({"document": r["id"], "item": r["contamination_item"], "overlap": r["contamination_overlap"],
                                  "item_text": r["contamination_item_text"][:300]})
    for name, s in items.items():
        per[name]["unique_items"] = len(s)
    return {"documents_hit": len(rows), "ngram": cfg.decontaminate.ngram, "min_overlap": cfg.decontaminate.min_overlap,
            "benchmarks": per}


def build(ctx: StageContext) -> list:
    from pipeline.io.readers import make_reader

    cfg = ctx.cfg
    if not cfg.decontaminate.benchmarks:
        raise UserError("decontaminate needs benchmarks: --benchmarks FILE_OR_DIR (or decontaminate.benchmarks)")
    files = benchmark_files(cfg.decontaminate.benchmarks)
    for f in files:  # a bad file fails here, before the tasks start
        load_benchmark(f, cfg.decontaminate.columns)
    failures = ctx.writer("removed", "failures", REMOVED_FIELDS)
    return [ctx.task_start(), make_reader(ctx.plan, cfg.input), ctx.progress(),
            DecontaminateStep(cfg, failures), ctx.writer("data", "main", DECONT_FIELDS)]
