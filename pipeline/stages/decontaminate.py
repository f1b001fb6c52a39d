"""``synthweb decontaminate``: drop documents that contain benchmark items.

Benchmark items are read from local files (JSONL, CSV with or without a header, Parquet; the layouts of
../shared/data/benchmarks, MMLU's and ARC's on the Hub, and HellaSwag's 6-line text format load as they
are; any other file by ``decontaminate.columns``) or from Hugging Face datasets
(``hf:NAME[:CONFIG]:SPLIT``). An item is its question with the gold answer's text (an answer letter is
mapped to its option). Text is compared as lower-case words after NFKC folding, with hyphens and
apostrophes inside words joined ("well-known" = "wellknown"), so a copy with its punctuation stripped
reads the same. ``BenchmarkIndex`` finds candidates by 10-grams, then (for edited copies) by rarer
4-grams, and confirms each by word alignment: one shared phrase is never enough. Confirmed documents go
to ``removed/`` naming the benchmark, the item and the overlap; ``report.json`` counts hits and unique
items per benchmark, with examples. bench/bench_decontaminate.py measures recall per form.
"""

from __future__ import annotations

import bz2
import csv
import difflib
import gzip
import json
import re
from pathlib import Path
from typing import Literal

import pyarrow as pa
from datatrove.pipeline.base import PipelineStep
from pydantic import Field

from pipeline.config import Config, Strict
from pipeline.errors import UserError
from pipeline.stages import Option, Stage
from pipeline.stages.base import StageContext
from pipeline.stages.items import _WORD, Item, _squashed_words, words_of
from pipeline.stages.paraphrase import ParaphraseCheck


class DecontaminateConfig(Strict):
    """``synthweb decontaminate``: documents containing benchmark items are removed (or flagged)."""

    benchmarks: list[str] = []  # files, folders of them, or hf:NAME[:CONFIG]:SPLIT
    columns: list[str] = []  # text columns of files in another layout (joined), e.g. [question, answer]
    csv_columns: list[str] = []  # names of a headerless CSV's columns by position (default: header, or MMLU's layout)
    ngram: int = Field(default=10, ge=3)  # word n-grams on normalised text (pass 1)
    short_ngram: int = Field(default=4, ge=0)  # pass 2 for edited items when pass 1 confirms nothing (0: off)
    max_gram_items: int = Field(default=8, ge=1)  # pass 2 ignores grams shared by more items (stock phrases)
    min_overlap: float = Field(default=0.6, gt=0, le=1)  # share of the item's words matched in order, in runs of 2+
    min_item_words: int = Field(default=8, ge=1)  # shorter items are not indexed (too generic to judge)
    action: Literal["remove", "flag"] = "remove"
    examples: int = Field(default=5, ge=0)  # per benchmark, in report.json
    paraphrase: ParaphraseCheck = ParaphraseCheck()


DECONT_FIELDS = [
    pa.field("contamination_benchmark", pa.string()),
    pa.field("contamination_item", pa.string()),
    pa.field("contamination_overlap", pa.float32()),
    pa.field("contamination_item_text", pa.string()),
    pa.field("contamination_method", pa.string()),  # ngram (a copy, maybe edited) | paraphrase (the semantic pass)
    pa.field("contamination_similarity", pa.float32()),  # paraphrase: cosine of the passage and the item
]
REMOVED_FIELDS = DECONT_FIELDS + [pa.field("filter_reason", pa.string())]

_LABELS = re.compile(r"\b(?:Question|Answer|Passage|Context|Choices)\s*:", re.I)
_LETTER = re.compile(r"^\s*\(?([A-Ja-j])\)?\s*$")
_OPTION = re.compile(r"^\s*\(?([A-J])[.)]\s+(.+?)\s*$", re.M)
_COLUMN_NAME = re.compile(r"[^\W\d][\w.-]{0,39}")
KNOWN_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".csv", ".parquet", ".txt.bz2")
_HEADER_WORDS = {"question", "query", "text", "prompt", "answer", "answerkey", "choices", "context", "label", "gold",
                 "id", "subject", "input", "target", "options", "passage", "continuation"}


# ------------------------------------------------------------------ loading


def _letter_index(value, n: int) -> int | None:
    """An answer given as a letter (A-J, "(B)"), a 0-based index or a digit string, as an index below n."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if 0 <= value < n else None
    m = _LETTER.match(str(value))
    if m:
        i = ord(m.group(1).upper()) - 65
        return i if i < n else None
    return int(value) if str(value).strip().isdigit() and int(value) < n else None


def question_parts(row: dict) -> tuple[str, list[str], int | None] | None:
    """(question, options, gold index) of a multiple-choice row in a layout we know, else None.

    Layouts: llm-foundry ``{query, choices, gold}`` (options inside the query as "A. ..." lines when
    ``choices`` are letters), HF MMLU ``{question, choices, answer}``, HF ARC ``{question, choices: {text,
    label}, answerKey}``, MMLU CSV ``{question, A, B, C, D, answer}``."""
    if "query" in row:
        q, choices, gold = str(row["query"]), row.get("choices") or [], row.get("gold")
        if "context" in row and row["context"]:
            q = f"{row['context']} {q}"
        if choices and all(_LETTER.match(str(c)) for c in choices):  # options written inside the query
            opts = dict(_OPTION.findall(q))
            q = q.split("Choices:")[0] if "Choices:" in q else _OPTION.sub("", q)
            choices = [opts.get(str(c).strip(), "") for c in choices]
        return _LABELS.sub(" ", q).strip(), [str(c) for c in choices], _letter_index(gold, len(choices))
    q = row.get("question")
    if not isinstance(q, str):
        return None
    answer = row.get("answerKey", row.get("answer", row.get("label")))
    choices = row.get("choices", row.get("options"))
    if isinstance(choices, dict) and "text" in choices:  # HF ARC
        labels = [str(x) for x in choices.get("label") or []]
        texts = [str(x) for x in choices["text"]]
        gold = labels.index(str(answer)) if str(answer) in labels else _letter_index(answer, len(texts))
        return q, texts, gold
    if isinstance(choices, (list, tuple)):
        return q, [str(c) for c in choices], _letter_index(answer, len(choices))
    lettered = [row[k] for k in "ABCDEFGHIJ" if k in row]
    if lettered:
        return q, [str(c) for c in lettered], _letter_index(answer, len(lettered))
    if isinstance(answer, str) and not _LETTER.match(answer):
        return q, [answer], 0  # a free-text answer
    return q, [], None


def _item_text(row: dict, columns: list[str], where: str) -> str:
    """The text of one benchmark row: the question with its gold answer's text, by layout."""
    if columns:
        missing = [c for c in columns if c not in row]
        if missing:
            raise UserError(f"{where}: no column {', '.join(missing)} (columns found: {', '.join(row)})")
        return " ".join(str(row[c]) for c in columns if row[c] is not None)
    if "context_options" in row and "continuation" in row:  # winogrande
        return f"{row['context_options'][int(row['gold'])]} {row['continuation']}"
    if "context" in row and "continuation" in row:  # lambada
        return f"{row['context']} {row['continuation']}"
    parts = question_parts(row)
    if parts is not None:
        q, options, gold = parts
        return f"{q} {options[gold]}".strip() if gold is not None else q
    for col in ("text", "prompt"):
        if col in row and isinstance(row[col], str):
            return row[col]
    raise UserError(f"{where}: cannot tell which columns hold the benchmark text (columns found: "
                    f"{', '.join(row)}); set decontaminate.columns, e.g. [question, answer]")


def _item_answer(row: dict, columns: list[str]) -> str:
    """The gold answer's text of a row in a known layout ("" when none or when columns are named)."""
    if columns:
        return ""
    if "context_options" in row and "continuation" in row:
        return str(row["continuation"])
    if "context" in row and "continuation" in row:
        return str(row["continuation"])
    parts = question_parts(row)
    if parts is not None and parts[2] is not None:
        return parts[1][parts[2]]
    return ""


def _hellaswag(path: Path) -> list[tuple[str, str]]:
    lines = bz2.open(path, "rt", encoding="utf-8-sig").read().splitlines()
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


def _csv_rows(path: Path, csv_columns: list[str], columns: list[str]):
    """Rows of a CSV file as dicts. A header row is used when there is one; a headerless file takes
    ``csv_columns`` by position, or the MMLU layout (question, options..., answer letter) when its rows
    end in a letter. A UTF-8 byte-order mark is dropped (it would hide inside the first column's name)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        first = next(reader, None)
        if first is None:
            return
        if csv_columns:
            names, data = csv_columns, [first]
        elif {c.strip().lower() for c in first} & (_HEADER_WORDS | {c.lower() for c in columns}):
            names, data = [c.strip() for c in first], []
        elif len(first) >= 3 and _LETTER.match(first[-1]):
            names, data = ["question", *"ABCDEFGHIJ"[: len(first) - 2], "answer"], [first]
        elif all(_COLUMN_NAME.fullmatch(c.strip()) for c in first):  # names, not sentences
            names, data = [c.strip() for c in first], []
        else:
            raise UserError(f"{path}:1: the first row is neither a header (no column named question, text, answer...) "
                            f"nor MMLU's layout (question, options, answer letter); name the columns by position "
                            f"with decontaminate.csv_columns, e.g. [question, answer]")
        n = 1 if data else 2
        for row in [*data, *reader]:
            if not any(c.strip() for c in row):
                n += 1
                continue
            if len(row) != len(names):
                raise UserError(f"{path}:{n}: {len(row)} fields, expected {len(names)} ({', '.join(names)})")
            yield n, dict(zip(names, row))
            n += 1


def _rows(path: Path, csv_columns: list[str] = (), columns: list[str] = ()):
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz", ".json")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield n, json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    elif name.endswith(".csv"):
        yield from _csv_rows(path, list(csv_columns), list(columns))
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for n, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield n, row
    else:
        raise UserError(f"{path}: unknown benchmark format (known: {', '.join(KNOWN_SUFFIXES)})")


def load_benchmark(spec: str, columns: list[str] | None = None, csv_columns: list[str] | None = None) -> list[Item]:
    """Items of one benchmark file or ``hf:NAME[:CONFIG]:SPLIT`` dataset."""
    columns = columns or []
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if len(parts) not in (2, 3):
            raise UserError(f"{spec}: expected hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT")
        from datasets import load_dataset

        name, split = parts[0], parts[-1]
        ds = load_dataset(name, parts[1] if len(parts) == 3 else None, split=split)
        return [Item(name, str(i), _item_text(r, columns, f"{spec} row {i}"), _item_answer(r, columns))
                for i, r in enumerate(ds)]
    path = Path(spec)
    if not path.exists():
        raise UserError(f"benchmark file not found: {spec}")
    bench = path.name.split(".")[0]
    if path.name.endswith(".txt.bz2"):
        return [Item(bench, k, t) for k, t in _hellaswag(path)]
    return [Item(bench, str(n), _item_text(row, columns, f"{path}:{n}"), _item_answer(row, columns))
            for n, row in _rows(path, csv_columns or [], columns)]


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


def matched_words(item: list[str], window: list[str], min_run: int = 2) -> int:
    """How many of the item's words occur in order in the window, counting only runs of ``min_run``+
    words: stray common words ("the", "of") shared by two texts never add up to a match."""
    sm = difflib.SequenceMatcher(None, item, window, autojunk=False)
    return sum(b.size for b in sm.get_matching_blocks() if b.size >= min_run)


class BenchmarkIndex:
    """Items indexed by word n-grams in two spellings (punctuation as a separator, and deleted).

    Pass 1: an item sharing an ``n``-gram with the document is a candidate. Pass 2, only when pass 1
    confirms nothing: the same with ``short_ngram``-grams, leaving out grams that occur in more than
    ``max_gram_items`` items (stock phrases such as "which of the following is"), which catches items
    with a word or two changed. Every candidate is confirmed by alignment (``matched_words``) against the
    document's words around the hit: at least ``min_overlap`` of the item's words and at least
    ``min_words`` words in all, so one shared phrase is never enough (6 words of an 8-word item are not)."""

    def __init__(self, items: list[Item], n: int, min_words: int, short_ngram: int = 0, max_gram_items: int = 8):
        self.n, self.items, self.min_words = n, [], min_words
        self.grams: dict[int, list[int]] = {}
        self.short: dict[int, list[int]] = {}
        self.lengths: set[int] = set()
        self.short_n = short_ngram
        self.too_short = 0
        for it in items:
            spellings = {tuple(words_of(it.text)), tuple(_squashed_words(it.text))}
            if max(len(s) for s in spellings) < min_words:
                self.too_short += 1
                continue
            idx = len(self.items)
            self.items.append((it, [list(s) for s in spellings]))
            for w in spellings:
                k = min(n, len(w))
                self.lengths.add(k)
                for i in range(len(w) - k + 1):
                    _post(self.grams, hash(w[i : i + k]), idx)
                if short_ngram and len(w) > short_ngram:
                    for i in range(len(w) - short_ngram + 1):
                        _post(self.short, hash(w[i : i + short_ngram]), idx)
        for g in [g for g, ids in self.short.items() if len(ids) > max_gram_items]:
            del self.short[g]

    def _candidates(self, w: list[str], grams: dict[int, list[int]], lengths, min_hits: int = 1) -> dict[int, int]:
        """{item: position of its first hit} for items with ``min_hits``+ grams in the document."""
        first: dict[int, int] = {}
        hits: dict[int, int] = {}
        for k in lengths:
            for i in range(len(w) - k + 1):
                for idx in grams.get(hash(tuple(w[i : i + k])), ()):
                    first.setdefault(idx, i)
                    hits[idx] = hits.get(idx, 0) + 1
        return first if min_hits <= 1 else {i: p for i, p in first.items() if hits[i] >= min_hits}

    def _confirm(self, w: list[str], candidates: dict[int, int], min_overlap: float):
        best = None
        for idx, pos in candidates.items():
            item, spellings = self.items[idx]
            for norm in spellings:
                span = len(norm)
                window = w[max(0, pos - span) : pos + 4 * span]  # room for the options between question and answer
                matched = matched_words(norm, window)
                overlap = matched / span
                if overlap >= min_overlap and matched >= self.min_words and (best is None or overlap > best[1]):
                    best = (item, overlap)
        return best

    def match(self, text: str, min_overlap: float) -> tuple[Item, float] | None:
        """The best confirmed item in ``text``, with its overlap, or None."""
        w = words_of(text)
        best = self._confirm(w, self._candidates(w, self.grams, self.lengths), min_overlap)
        if best is None and self.short_n:
            best = self._confirm(w, self._candidates(w, self.short, (self.short_n,), 2), min_overlap)
        return best


def _post(index: dict[int, list[int]], key: int, idx: int) -> None:
    ids = index.setdefault(key, [])
    if not ids or ids[-1] != idx:
        ids.append(idx)


class DecontaminateStep(PipelineStep):
    name = "🧪 decontaminate"
    type = "🫂 - DEDUP"

    @property
    def preload(self) -> tuple[str, ...]:  # the paraphrase pass's encoder (pipeline/executor.py)
        return ("sentence_transformers",) if self.d.paraphrase.enabled else ()

    def __init__(self, cfg: Config, failures=None):
        super().__init__()
        self.d, self.failures, self.encoder = cfg.decontaminate, failures, cfg.encoder
        self.files = benchmark_files(cfg.decontaminate.benchmarks)

    def _hit(self, doc, item: Item, overlap: float, method: str, similarity: float | None = None):
        self.stat_update("dropped")
        self.stat_update(f"hits_{item.benchmark}")
        self.stat_update(f"hits_{method}")
        doc.metadata.update(contamination_benchmark=item.benchmark, contamination_item=item.key,
                            contamination_overlap=round(overlap, 4), contamination_item_text=item.text[:1000],
                            contamination_method=method,
                            contamination_similarity=None if similarity is None else round(similarity, 4),
                            filter_reason="contaminated")

    def _semantic(self, index, docs: list, rank: int):
        """The n-gram pass's clean documents of one batch through the paraphrase pass, in order."""
        hits = index.match_many([d.text for d in docs]) if index is not None else [None] * len(docs)
        for doc, hit in zip(docs, hits):
            if hit is None:
                self.update_doc_stats(doc)
                yield doc
                continue
            item, sim, share, _ = hit
            self._hit(doc, item, share, "paraphrase", sim)
            if self.d.action == "flag":
                yield doc
            elif self.failures is not None:
                self.failures.write(doc, rank=rank)

    def run(self, data, rank: int = 0, world_size: int = 1):
        items = [it for f in self.files for it in load_benchmark(f, self.d.columns, self.d.csv_columns)]
        index = BenchmarkIndex(items, self.d.ngram, self.d.min_item_words, self.d.short_ngram, self.d.max_gram_items)
        semantic = None
        if self.d.paraphrase.enabled and items:

            from pipeline.embed import shared_encoder
            from pipeline.stages.paraphrase import SemanticIndex

            semantic = SemanticIndex(items, shared_encoder(self.encoder), self.d.paraphrase)
        if self.failures is not None:
            self.failures.__enter__()
        exc: tuple = (None, None, None)
        clean: list = []  # documents the n-gram pass let through, waiting for the paraphrase pass
        try:
            for doc in data:
                self.stat_update("documents")
                if not _WORD.search(doc.text):
                    self.stat_update("no_words")
                elif not doc.text.isascii() and sum(c.isascii() for c in doc.text) < len(doc.text) / 2:
                    self.stat_update("mostly_non_ascii")  # non-Latin scripts: matched like any other text, counted
                hit = index.match(doc.text, self.d.min_overlap)
                if hit is None:
                    clean.append(doc)
                    if len(clean) >= self.d.paraphrase.batch:
                        yield from self._semantic(semantic, clean, rank)
                        clean = []
                    continue
                item, overlap = hit
                self._hit(doc, item, overlap, "ngram")
                if self.d.action == "flag":
                    yield doc
                elif self.failures is not None:
                    self.failures.write(doc, rank=rank)
            yield from self._semantic(semantic, clean, rank)
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
        if r.get("contamination_method") == "paraphrase":
            b["paraphrase_hits"] = b.get("paraphrase_hits", 0) + 1
        items.setdefault(r["contamination_benchmark"], set()).add(r["contamination_item"])
        if len(b["examples"]) < cfg.decontaminate.examples:
            b["examples"].append({"document": r["id"], "item": r["contamination_item"], "overlap": r["contamination_overlap"],
                                  "item_text": r["contamination_item_text"][:300]})
    for name, s in items.items():
        per[name]["unique_items"] = len(s)
    return {"documents_hit": len(rows), "ngram": cfg.decontaminate.ngram, "short_ngram": cfg.decontaminate.short_ngram,
            "min_overlap": cfg.decontaminate.min_overlap, "paraphrase": cfg.decontaminate.paraphrase.model_dump(),
            "benchmarks": per}


def build(ctx: StageContext) -> list:
    from pipeline.io.readers import make_reader

    cfg = ctx.cfg
    if not cfg.decontaminate.benchmarks:
        raise UserError("decontaminate needs benchmarks: --benchmarks FILE_OR_DIR (or decontaminate.benchmarks)")
    files = benchmark_files(cfg.decontaminate.benchmarks)
    for f in files:  # a bad or empty file fails here, before the tasks start
        if not load_benchmark(f, cfg.decontaminate.columns, cfg.decontaminate.csv_columns):
            raise UserError(f"benchmark {f}: no items in it; nothing could be checked against it")
    failures = ctx.writer("removed", "failures", REMOVED_FIELDS)
    return [ctx.task_start(), make_reader(ctx.plan, cfg.input), ctx.progress(),
            DecontaminateStep(cfg, failures), ctx.writer("data", "main", DECONT_FIELDS)]


def main(cfg: Config, force: bool = False, progress: bool = True) -> dict:
    from pipeline.io.writer import atomic_write_text
    from pipeline.stages.base import run_stage

    stats = run_stage("decontaminate", cfg, build, force=force, progress=progress)
    out = Path(cfg.run.output)
    if stats.get("complete"):
        atomic_write_text(out / "report.json", json.dumps(report(out, cfg), indent=2))
    return stats


def _summary(cfg: Config, stats: dict) -> list[str]:
    rep = Path(cfg.run.output) / "report.json"
    lines = []
    if stats.get("complete") and rep.exists():
        lines = [f"decontaminate: {name}: {b['hits']} documents hit ({b.get('paraphrase_hits', 0)} as paraphrases), "
                 f"{b['unique_items']} distinct items"
                 for name, b in json.loads(rep.read_text())["benchmarks"].items()]
    return lines + [f"wrote {cfg.run.output}"]


def _plan(run):
    from pipeline.stages.dedup import per_dataset

    if not run.cfg.decontaminate.benchmarks:
        return ("decontaminate.benchmarks is empty; skipped (name benchmark files or hf:NAME:SPLIT to check the "
                "data against them)")

    def src(name):
        d = run.out / "dedup" / name / "data"
        return d if "dedup" in run.stages and d.is_dir() else run.upstream(name)

    return per_dataset(run, "decontaminate", src)


def card_lines(cfg: dict, st: dict, facts: dict) -> list[str]:
    """What the dataset card says of a decontamination run: the documents each benchmark hit."""
    rep = facts.get("report", {})
    if not rep.get("benchmarks"):
        return []
    return ["- decontamination: documents hit per benchmark: "
            + ", ".join(f"{b} {v['hits']}" for b, v in rep["benchmarks"].items())]


STAGE = Stage(
    settings={"decontaminate": DecontaminateConfig},
    refines=True,
    sections=("run", "input", "executor", "writer", "decontaminate", "encoder"),  # encoder: the paraphrase pass
    card=card_lines,
    name="decontaminate", help="documents -> the same without those that contain benchmark items",
    description="Index the benchmark items (--benchmarks: files, folders or hf:NAME[:CONFIG]:SPLIT) by word "
    "n-grams, confirm candidate documents by word alignment, and write OUTPUT/data (clean), "
    "OUTPUT/removed (contaminated, naming the benchmark and item) and OUTPUT/report.json (hits per benchmark).",
    main=main, summary=_summary, input_help="documents to check",
    options=(Option(("--benchmarks",), "benchmark file, folder or hf:NAME:SPLIT (repeatable)",
                    override=lambda v: ["decontaminate.benchmarks=" + json.dumps(v)],
                    kwargs={"action": "append", "metavar": "FILE_OR_DIR"}),),
    plan=_plan, markers=("*/stats.json",),
)
