"""Publish a run's final shards as a Hugging Face dataset repository.

The layout is the Hub's: ``data/<config>/train-00000-of-000NN.parquet`` per subset and a
``README.md`` dataset card whose YAML front matter declares the configs (so ``load_dataset(repo,
name=config)`` works) and whose body is written from the runs themselves: stage counts and drop
reasons, models and prompt templates, filter thresholds, dedup/decontamination reports, audit
figures and the ablation table. ``--dry-run`` stops after writing the folder; the push goes through
huggingface_hub with the token from the environment or the HF login, never printed or written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import yaml
from pydantic import Field

from pipeline import __version__
from pipeline.config import Strict
from pipeline.errors import UserError
from pipeline.io.writer import atomic_write_text
from pipeline.stages import Option, Stage, find, main_tags


class PublishConfig(Strict):
    """``synthweb publish``: final shards -> a Hugging Face dataset repository (layout + card)."""

    repo_id: str | None = None  # namespace/name
    subsets: dict[str, str] = {}  # config name -> a stage run folder (or its data/ or kept/)
    ablation: str | None = None  # an ablate output folder: its table goes into the card
    private: bool = False
    license: str = "odc-by"
    language: list[str] = ["en"]
    task_categories: list[str] = ["text-generation"]
    pretty_name: str | None = None
    max_rows_per_shard: int = Field(default=100_000, ge=1)
    count_tokens: bool = True  # tokens per config in the card, with tokenize.tokenizer (default: the generator's)
    files_per_commit: int = Field(default=100, ge=1)  # without hf_xet: one commit per this many files (a rerun skips committed ones)


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UserError(f"publish: invalid repo id {repo_id!r}: {str(e).splitlines()[0]}") from None
    if "/" not in repo_id:
        raise UserError(f"publish: repo id {repo_id!r} must be namespace/name (your user or organisation, then the dataset)")


def final_shards(path: str | Path) -> tuple[Path, list[Path]]:
    """(the run folder, its final Parquet shards) for a stage run folder or its data/ or kept/ folder."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"publish: no such folder: {p}")
    if p.is_dir() and list(p.glob("*.parquet")):
        run = p.parent if (p.parent / "stats.json").exists() else p
        return run, sorted(p.glob("*.parquet"))
    for name in main_tags():
        shards = sorted((p / name).glob("*.parquet"))
        if shards:
            return p, shards
    raise UserError(f"publish: {p} holds no final shards (expected data/*.parquet or kept/*.parquet of a finished stage)")


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if n < limit:
            return label
    return "1B<n<10B"


def _write_subset(name: str, shards: list[Path], dest: Path, max_rows: int, tok=None) -> dict:
    """Re-shard into data/<name>/train-i-of-N.parquet (atomic per file); returns what the card says of it:
    rows, tokens (with ``tok``), characters, the models and sampling that wrote the rows, and the stage
    runs (stage, config hash) named in the rows' history."""
    from collections import Counter

    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
    if rows == 0:
        raise UserError(f"publish: subset {name!r}: its shards hold no rows ({shards[0].parent})")
    n = max(1, math.ceil(rows / max_rows))
    folder = dest / "data" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    schema = pq.ParquetFile(shards[0]).schema_arrow
    idx, in_file, writer, tmp = 0, 0, None, None

    def open_next():
        nonlocal writer, tmp, in_file
        tmp = folder / f".train-{idx:05d}-of-{n:05d}.parquet.tmp"
        writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        in_file = 0

    def close():
        writer.close()
        tmp.rename(folder / f"train-{idx:05d}-of-{n:05d}.parquet")

    per_file = math.ceil(rows / n)
    facts = {"rows": rows, "tokens": 0, "chars": 0, "models": Counter(), "sampling": Counter(), "lineage": set()}
    open_next()
    for s in shards:
        for batch in pq.ParquetFile(s).iter_batches(batch_size=1000):
            batch = batch.select(schema.names) if batch.schema.names != schema.names else batch
            _count(batch, facts, tok)
            start = 0
            while start < batch.num_rows:
                take = min(batch.num_rows - start, per_file - in_file)
                writer.write_batch(batch.slice(start, take))
                in_file += take
                start += take
                if in_file == per_file and idx < n - 1:
                    close()
                    idx += 1
                    open_next()
    close()
    return facts


def _count(batch, facts: dict, tok) -> None:
    cols = batch.schema.names
    texts = [t or "" for t in batch.column("text").to_pylist()] if "text" in cols else []
    facts["chars"] += sum(len(t) for t in texts)
    if tok is not None and texts:
        facts["tokens"] += sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    if "model" in cols:
        engines = batch.column("engine").to_pylist() if "engine" in cols else [None] * batch.num_rows
        facts["models"].update(f"{m} ({e})" if e else str(m) for m, e in zip(batch.column("model").to_pylist(), engines) if m)
    if "sampling" in cols:  # per teacher, without the per-request seed
        teachers = batch.column("teacher").to_pylist() if "teacher" in cols else [None] * batch.num_rows
        for t, x in zip(teachers, batch.column("sampling").to_pylist()):
            if x:
                d = {k: v for k, v in json.loads(x).items() if k != "seed"}
                facts["sampling"][(t or "", json.dumps(d, sort_keys=True))] += 1
    if "history" in cols:
        for h in batch.column("history").to_pylist():
            facts["lineage"].update((e["stage"], e["config_hash"]) for e in h or [])


def _lineage_stats(run: Path, lineage: set) -> list[dict]:
    """stats.json of every stage run named in the rows' history: in the subset's run folder, and in the
    `synthweb run` folder around it (where run.json is)."""
    roots = [run] + [a for a in (run.parent, run.parent.parent) if (a / "run.json").exists()]
    found, seen = [], set()
    for root in roots:
        for f in [root / "stats.json", *root.glob("*/stats.json"), *root.glob("*/*/stats.json")]:
            if f in seen or not f.is_file() or "_logs" in f.parts:
                continue
            seen.add(f)
            st = json.loads(f.read_text())
            if isinstance(st, dict) and (st.get("stage"), st.get("config_hash")) in lineage or f == run / "stats.json":
                found.append(st)
    return found


def _compute(stats: list[dict]) -> dict:
    """GPU-hours and cost of the LLM stages among ``stats`` (the engine's busy time x devices)."""
    per = {}
    for st in stats:
        llm = st.get("llm") or {}
        if llm.get("gpu_hours") is not None:
            x = per.setdefault(st["stage"], {"gpu_hours": 0.0, "cost_usd": None, "engine": llm.get("engine")})
            x["gpu_hours"] = round(x["gpu_hours"] + llm["gpu_hours"], 5)
            if llm.get("cost_usd") is not None:
                x["cost_usd"] = round((x["cost_usd"] or 0) + llm["cost_usd"], 4)
    total = round(sum(v["gpu_hours"] for v in per.values()), 5)
    costs = [v["cost_usd"] for v in per.values() if v["cost_usd"] is not None]
    return {"by_stage": per, "gpu_hours": total, "cost_usd": round(sum(costs), 4) if costs else None}


def _run_facts(run: Path) -> dict:
    """What a stage run folder says about itself: its stats and resolved config."""
    facts: dict = {"folder": str(run)}
    if (run / "stats.json").exists():
        facts["stats"] = json.loads((run / "stats.json").read_text())
    if (run / "config.yaml").exists():
        facts["config"] = yaml.safe_load((run / "config.yaml").read_text()) or {}
    if (run / "report.json").exists():
        facts["report"] = json.loads((run / "report.json").read_text())
    return facts


def _subset_section(name: str, rows: int, facts: dict, data: dict, tokenizer: str) -> str:
    st, cfg = facts.get("stats", {}), facts.get("config", {})
    cfg = cfg.get("config", cfg) if isinstance(cfg, dict) else {}
    stage = st.get("stage", "?")
    lines = [f"### `{name}`", "", f"- rows: {rows:,}; made by the `{stage}` stage"]
    if data.get("tokens"):
        lines.append(f"- tokens: {data['tokens']:,} (tokenizer `{tokenizer}`, no special tokens); mean "
                     f"{data['tokens'] / rows:,.0f} tokens ({data['chars'] / rows:,.0f} characters) per document")
    if data.get("models"):
        lines.append("- written by: " + ", ".join(f"`{m}` {c:,} rows" for m, c in data["models"].most_common()))
    for (teacher, sampling), c in data.get("sampling", {}).most_common(4):
        lines.append(f"- sampling{' of teacher `' + teacher + '`' if teacher else ''} ({c:,} rows): `{sampling}`")
    for up in data.get("upstream", []):
        g = up.get("quality_gate")
        if g and g.get("checked"):
            fails = ", ".join(f"{k} {v}" for k, v in g.get("failed_by_check", {}).items())
            lines.append(f"- quality gate ({up['stage']}): {g['passed']:,} of {g['checked']:,} replies passed "
                         f"({g['passed'] / g['checked']:.0%})" + (f"; failures: {fails}" if fails else ""))
    comp = data.get("compute", {})
    for st_name, x in comp.get("by_stage", {}).items():
        cost = f"${x['cost_usd']:,.2f}" if x["cost_usd"] is not None else "not priced (llm.cost_per_gpu_hour is 0)"
        lines.append(f"- compute ({st_name}, {x['engine']}): {x['gpu_hours']:.4f} GPU-hours, cost {cost}")
    if "records_in" in st:
        lines.append(f"- documents in: {st['records_in']:,}, out: {st.get('records_out', 0):,}")
    if st.get("dropped_by_reason"):
        drops = ", ".join(f"{k} {v:,}" for k, v in sorted(st["dropped_by_reason"].items(), key=lambda kv: -kv[1]))
        lines.append(f"- dropped, by reason: {drops}")
    llm = cfg.get("llm") or {}
    declared = find(stage)
    if declared and declared.llm and llm and not data.get("models"):
        lines.append(f"- model: `{llm.get('model')}` ({llm.get('backend')}), sampling {json.dumps(llm.get('sampling', {}))}")
    if declared and declared.card:  # the stage's own lines (its prompts, its rule, its method...)
        lines += declared.card(cfg, st, facts)
    audit = st.get("audit")
    if audit:
        lines.append(f"- audit: {json.dumps({k: audit[k] for k in list(audit)[:6] if not isinstance(audit[k], (dict, list))})}")
    lines.append(f"- provenance: every row carries `history` (stage, run id, config hash); source run `{facts['folder']}`")
    return "\n".join(lines)


def _ablation_section(path: Path) -> str:
    res = json.loads((path / "results.json").read_text()) if (path / "results.json").exists() else None
    if res is None:
        raise UserError(f"publish: {path} has no results.json (an ablate output folder)")
    tasks = list(res["tasks"])
    head = "| dataset | val loss | " + " | ".join(tasks) + " |\n|---|---|" + "---|" * len(tasks)
    rows = []
    for name, d in res["datasets"].items():
        own = d["val_loss"][name]
        rows.append(f"| {name} | {own[0]:.4f} ± {own[1]:.4f} | "
                    + " | ".join(f"{d['tasks'][t][0]:.3f}" for t in tasks) + " |")
    chance = " | ".join(f"{res['tasks'][t]['chance']:.3f}{' (at chance)' if res['tasks'][t]['at_chance'] else ''}" for t in tasks)
    return (f"## Ablation\n\n{res['preset']} model, {res['budget_tokens']:,} tokens per run, seeds {res['seeds']} "
            f"(mean ± std over seeds; accuracy length-normalised):\n\n{head}\n" + "\n".join(rows)
            + f"\n| chance | | {chance} |\n\n{res['verdict'].removeprefix('ablate: ')}\n")


def _tokenizer(cfg):
    from pipeline.llm.tokenizer import load_tokenizer, resolve_tokenizer

    return load_tokenizer(resolve_tokenizer(cfg.tokenize.tokenizer, cfg.llm.model, cfg.llm.model_cache_dir))


def build(cfg, subsets: dict[str, str], dest: str | Path, ablation: str | None = None) -> dict:
    """Write the repository layout and the card into ``dest``; returns the row count per config."""
    p = cfg.publish
    if not subsets:
        raise UserError("publish: no subsets named: --subset NAME=RUN_FOLDER (or publish.subsets in the config)")
    for name in subsets:
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise UserError(f"publish: config name {name!r} must be letters, digits, - or _")
    dest = Path(dest)
    found = {name: final_shards(path) for name, path in subsets.items()}  # every subset checked before writing
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = cfg.tokenize.tokenizer or cfg.llm.model
    tok = _tokenizer(cfg) if p.count_tokens else None
    counts, sections, per = {}, [], {}
    for name, (run, shards) in found.items():
        data = _write_subset(name, shards, dest, p.max_rows_per_shard, tok)
        data["upstream"] = _lineage_stats(run, data["lineage"])
        data["compute"] = _compute(data["upstream"])
        counts[name] = data["rows"]
        per[name] = data
        sections.append(_subset_section(name, counts[name], _run_facts(run), data, tokenizer))
    for stale in (dest / "data").iterdir():
        if stale.is_dir() and stale.name not in counts:
            shutil.rmtree(stale)
    from huggingface_hub import DatasetCard, DatasetCardData

    pretty = p.pretty_name or (p.repo_id or dest.name).split("/")[-1]
    meta = DatasetCardData(
        license=p.license, language=p.language, task_categories=p.task_categories,
        size_categories=[_size_category(sum(counts.values()))], tags=["synthetic", "synthweb"], pretty_name=pretty,
        configs=[{"config_name": n, "data_files": [{"split": "train", "path": f"data/{n}/*.parquet"}],
                  **({"default": True} if i == 0 else {})} for i, n in enumerate(counts)],
    )

    def money(c):
        return f"${c:,.2f}" if c is not None else "-"

    table = "\n".join(f"| `{n}` | {c:,} | {per[n]['tokens']:,} | {per[n]['tokens'] / c:,.0f} | "
                      f"{per[n]['compute']['gpu_hours']:.4f} | {money(per[n]['compute']['cost_usd'])} | `data/{n}/` |"
                      for n, c in counts.items())
    body = [
        f"# {pretty}", "",
        f"Pretraining data for small language models, built with synthweb {__version__} from web pages "
        "(seeds -> generation / rephrasing / quality filtering -> dedup and decontamination).", "",
        "| config | rows | tokens | mean tokens | GPU-hours | cost | files |", "|---|---|---|---|---|---|---|", table, "",
        f"Tokens are counted with the `{tokenizer}` tokenizer. GPU-hours are the LLM stages' engine busy time "
        "times their devices, from each stage's stats.json (on a CPU run: CPU busy hours); cost is GPU-hours x "
        "`llm.cost_per_gpu_hour` when that is set.", "",
        "```python", "from datasets import load_dataset",
        f"ds = load_dataset(\"{p.repo_id or dest}\", \"{next(iter(counts))}\", split=\"train\")", "```", "",
        "## How each subset was made", "", "\n\n".join(sections), "",
    ]
    if ablation:
        body.append(_ablation_section(Path(ablation)))
    card = str(DatasetCard(f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(body)))
    validate_card(card, dest)
    atomic_write_text(dest / "README.md", card)
    summary = {n: {"rows": d["rows"], "tokens": d["tokens"], "tokenizer": tokenizer, "chars": d["chars"],
                   "gpu_hours": d["compute"]["gpu_hours"], "cost_usd": d["compute"]["cost_usd"]} for n, d in per.items()}
    atomic_write_text(dest / "publish.json", json.dumps({"configs": summary, "repo_id": p.repo_id}, indent=2))
    return counts


def hub_token() -> str:
    """The token from HF_TOKEN or the login; a clear message when there is none. Never printed."""
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise UserError("publish: no Hugging Face token. Log in with `hf auth login` (or `huggingface-cli login`), "
                        "or set HF_TOKEN in the environment; use --dry-run to write the layout without pushing")
    return token


def _error_line(e: BaseException) -> str:
    """One line for an upload error: what failed (huggingface_hub wraps an LFS upload's HTTP error in
    "Error while uploading 'path'"), the HTTP status and the server's own message."""
    from huggingface_hub.errors import HfHubHTTPError

    outer = str(e).splitlines()[0] if str(e) else type(e).__name__
    inner = e
    while inner.__cause__ is not None and not isinstance(inner, HfHubHTTPError):
        inner = inner.__cause__
    status = getattr(getattr(inner, "response", None), "status_code", None)
    said = getattr(inner, "server_message", None) or (str(inner).splitlines()[0] if str(inner) else type(inner).__name__)
    said = said.strip().splitlines()[0] if said.strip() else ""
    parts = [outer] if inner is not e else []
    parts.append(f"HTTP {status}: {said}" if status else said)
    return " - ".join(p.rstrip(".") for p in parts if p)


def transfer_mode() -> str:
    """How huggingface_hub sends large files here: "xet" when hf_xet is installed and HF_HUB_DISABLE_XET is
    unset (the client decides; the server's preupload answer only chooses regular vs large-file), else "lfs"."""
    from huggingface_hub.utils._runtime import is_xet_available

    return "xet" if is_xet_available() else "lfs"


def _stale(api, folder: Path, repo_id: str, files: list[Path]) -> list[str]:
    """Files of an earlier publish that this layout no longer has (another shard count, a subset
    dropped): any Parquet file, and anything under a folder this layout writes (``data/``...). Files a
    user added beside them (a LICENSE, a notebook) are left alone."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        existing = {s.rfilename for s in (api.repo_info(repo_id, repo_type="dataset", revision="main").siblings or [])}
    except RepositoryNotFoundError:
        return []
    new = {f.relative_to(folder).as_posix() for f in files}
    ours = {p.split("/", 1)[0] for p in new if "/" in p}
    return sorted(p for p in existing - new if p.endswith(".parquet") or ("/" in p and p.split("/", 1)[0] in ours))


def _upload(api, folder: Path, repo_id: str, files_per_commit: int, log) -> str:
    """Upload in commits of ``files_per_commit`` files, data first and the card last; the card's commit
    also deletes the files of an earlier layout (``_stale``), so that the card's globs never load old
    and new shards together once the push is done. Resumable: the client asks the Hub for the oid of
    each file (preupload) and leaves out those it already has, and the LFS batch endpoint leaves out
    objects already stored, so a rerun sends only what is missing. With Xet, huggingface_hub's
    ``upload_large_folder`` (multi-commit, resumable from its local state) sends the files and one
    last commit deletes the stale ones."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    files = sorted((f for f in folder.rglob("*") if f.is_file() and f.name != "publish.json"
                    and ".cache" not in f.relative_to(folder).parts),
                   key=lambda f: (f.name == "README.md", str(f)))
    stale = _stale(api, folder, repo_id, files)
    if stale:
        log(f"publish: {len(stale)} file(s) of an earlier layout in {repo_id} are deleted in the last commit "
            f"(e.g. {stale[0]})")
    deletes = [CommitOperationDelete(path_in_repo=p) for p in stale]
    if transfer_mode() == "xet":
        api.upload_large_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                                ignore_patterns=["publish.json"], print_report=False)
        if deletes:
            info = api.create_commit(repo_id=repo_id, repo_type="dataset", operations=deletes,
                                     commit_message=f"synthweb {__version__}: publish (remove the earlier layout)")
        else:
            info = api.repo_info(repo_id, repo_type="dataset")
            return f"{api.endpoint}/datasets/{repo_id}/commit/{info.sha}"
        return str(getattr(info, "commit_url", info))
    batches = [files[i : i + files_per_commit] for i in range(0, len(files), files_per_commit)]
    url = ""
    for n, batch in enumerate(batches, 1):
        ops = [CommitOperationAdd(path_in_repo=f.relative_to(folder).as_posix(), path_or_fileobj=str(f)) for f in batch]
        if n == len(batches):
            ops += deletes
        part = f" ({n}/{len(batches)})" if len(batches) > 1 else ""
        info = api.create_commit(repo_id=repo_id, repo_type="dataset", operations=ops,
                                 commit_message=f"synthweb {__version__}: publish{part}")
        url = str(getattr(info, "commit_url", info))
        if len(batches) > 1:
            log(f"publish: commit {n}/{len(batches)} ({len(batch)} files)")
    return url


def validate_card(text: str, folder: Path | None = None) -> None:
    """The card parses as a dataset card and its configs point at files that exist; the Hub's own check
    (its validate-yaml endpoint, as huggingface_hub's ``DatasetCard.validate``) runs before a push."""
    from huggingface_hub import DatasetCard

    card = DatasetCard(text)
    meta = card.data.to_dict()
    if not meta.get("license"):
        raise UserError("publish: the dataset card has no license (publish.license)")
    for c in meta.get("configs") or []:
        for df in c.get("data_files") or []:
            if folder is not None and not list(folder.glob(df["path"])):
                raise UserError(f"publish: card config {c.get('config_name')!r} names {df['path']}, which matches no file")


def push(folder: str | Path, repo_id: str, private: bool, token: str, retries: int = 6, log=print,
         files_per_commit: int = 100) -> str:
    """Create the dataset repo (if needed), have the Hub validate the card, and upload the folder;
    429/5xx and dropped connections are retried with back-off, and a rerun resumes."""
    import sys

    from huggingface_hub import DatasetCard, HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import disable_progress_bars

    if not sys.stderr.isatty():  # batch logs: no per-file progress bars
        disable_progress_bars()
    folder = Path(folder)
    api = HfApi(token=token)
    for attempt in range(retries + 1):
        try:
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            try:
                DatasetCard.load(folder / "README.md", repo_type="dataset").validate(repo_type="dataset")
            except ValueError as e:
                raise UserError(f"publish: the Hub refused the dataset card: {str(e).splitlines()[0]}") from None
            return _upload(api, folder, repo_id, files_per_commit, log)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - HTTP errors, and the client's wrappers around them
            inner = e
            while inner.__cause__ is not None and not isinstance(inner, HfHubHTTPError):
                inner = inner.__cause__
            status = getattr(getattr(inner, "response", None), "status_code", None)
            if status in (401, 403):
                raise UserError(f"publish: the Hub refused the token for {repo_id} (HTTP {status}); "
                                "log in again with `hf auth login` with a write token") from None
            transient = status in (429, 500, 502, 503, 504) or (status is None and _is_network(inner))
            if not transient or attempt == retries:
                raise UserError(f"publish: pushing to {repo_id} failed: {_error_line(e)}; rerun "
                                "the same command: files the Hub already has are not sent again") from None
            wait = min(60, 2 ** attempt)
            log(f"publish: {'HTTP ' + str(status) if status else type(inner).__name__}, retrying in {wait} s "
                f"({attempt + 1}/{retries})")
            time.sleep(wait)
    raise AssertionError("unreachable")


def _is_network(e: BaseException) -> bool:
    """A dropped connection or a timeout (huggingface_hub's HTTP client is httpx, or its fork httpx2)."""
    return isinstance(e, (ConnectionError, TimeoutError)) or any(
        c.__name__ == "TransportError" and c.__module__.split(".")[0] in ("httpx", "httpx2") for c in type(e).__mro__)


def main(cfg, force: bool = False, progress: bool = True, subset: list[str] | None = None, repo_id: str | None = None,
         ablation: str | None = None, dry_run: str | None = None) -> dict:
    p = cfg.publish
    repo_id = repo_id or p.repo_id
    subsets = dict(p.subsets)
    for item in subset or []:
        if "=" not in item:
            raise UserError(f"--subset {item!r}: expected NAME=FOLDER, e.g. textbooks=output/generate/textbooks")
        name, path = item.split("=", 1)
        subsets[name.strip()] = path.strip()
    if repo_id:
        check_repo_id(repo_id)
        p.repo_id = repo_id
    elif not dry_run:
        raise UserError("publish needs --repo-id namespace/name (or publish.repo_id), or --dry-run DIR")
    token = None if dry_run else hub_token()  # before any work: a missing login fails fast
    dest = Path(dry_run) if dry_run else Path(cfg.run.output) / "_publish"
    from pipeline.io.lock import output_lock

    with output_lock(dest, "publish", beside=True):  # two pushes from one folder: the second refuses
        return _publish(cfg, subsets, dest, ablation or p.ablation, repo_id, token, dry_run)


def _publish(cfg, subsets: dict, dest: Path, ablation, repo_id, token, dry_run) -> dict:
    p = cfg.publish
    counts = build(cfg, subsets, dest, ablation)
    print("publish: " + ", ".join(f"{n} {c:,} rows" for n, c in counts.items()) + f"; layout and card in {dest}")
    result = {"rows": counts, "folder": str(dest)}
    if not dry_run:
        result["url"] = str(push(dest, repo_id, p.private, token, files_per_commit=p.files_per_commit))
        result["repo_id"] = repo_id
    return result


STAGE = Stage(
    settings={"publish": PublishConfig},
    name="publish", help="final shards -> a Hugging Face dataset repo (data/<config>/*.parquet + dataset card)",
    description="Re-shard each --subset's final shards into data/<config>/train-NNNNN-of-NNNNN.parquet, write a "
    "dataset card (YAML configs, license, language, size; how each subset was made, from its run folder; the "
    "ablation table), then push with huggingface_hub (token from HF_TOKEN or `hf auth login`). --dry-run DIR "
    "writes the layout there and pushes nothing.",
    main=main, input_help=None, output_help=None, progress=False, force_help=None,
    summary=lambda cfg, r: [f"publish: pushed to https://huggingface.co/datasets/{r['repo_id']} ({r['url']})"] if "url" in r else [],
    options=(Option(("--subset",), "a config of the dataset and the stage run folder holding it (repeatable)",
                    kwargs={"action": "append", "default": [], "metavar": "NAME=FOLDER"}),
             Option(("--repo-id",), "namespace/name on the Hub (sets publish.repo_id)"),
             Option(("--ablation",), "an ablate output folder whose table goes into the card"),
             Option(("--dry-run",), "write the repository layout to DIR; push nothing", kwargs={"metavar": "DIR"})),
)
