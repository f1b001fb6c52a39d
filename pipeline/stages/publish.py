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

from pipeline import __version__
from pipeline.errors import UserError
from pipeline.io.writer import atomic_write_text
from pipeline.stages import Option, Stage

MAIN_FOLDERS = ("data", "kept")  # a stage's final shards; filter writes kept/


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
    for name in MAIN_FOLDERS:
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


def _write_subset(name: str, shards: list[Path], dest: Path, max_rows: int) -> int:
    """Re-shard into data/<name>/train-i-of-N.parquet (atomic per file); returns the row count."""
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
    open_next()
    for s in shards:
        for batch in pq.ParquetFile(s).iter_batches(batch_size=1000):
            batch = batch.select(schema.names) if batch.schema.names != schema.names else batch
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
    return rows


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


def _subset_section(name: str, rows: int, facts: dict) -> str:
    st, cfg = facts.get("stats", {}), facts.get("config", {})
    cfg = cfg.get("config", cfg) if isinstance(cfg, dict) else {}
    stage = st.get("stage", "?")
    lines = [f"### `{name}`", "", f"- rows: {rows:,}; made by the `{stage}` stage"]
    if "records_in" in st:
        lines.append(f"- documents in: {st['records_in']:,}, out: {st.get('records_out', 0):,}")
    if st.get("dropped_by_reason"):
        drops = ", ".join(f"{k} {v:,}" for k, v in sorted(st["dropped_by_reason"].items(), key=lambda kv: -kv[1]))
        lines.append(f"- dropped, by reason: {drops}")
    llm = cfg.get("llm") or {}
    if stage in ("generate", "rephrase", "annotate", "infer") and llm:
        lines.append(f"- model: `{llm.get('model')}` ({llm.get('backend')}), sampling {json.dumps(llm.get('sampling', {}))}")
    if stage == "generate":
        g = cfg.get("generate", {})
        lines.append(f"- prompts: `prompts/generate/` templates; audiences {sorted(g.get('audiences', {}))}; "
                     f"formats {sorted(g.get('formats', {}))}")
        t = st.get("teachers")
        if t:
            wins = ", ".join(f"`{n}` {v['win_rate']:.0%}" for n, v in t["by_teacher"].items() if v.get("win_rate") is not None)
            names = ", ".join("`" + str(x.get("name")) + "`" for x in g.get("teachers", []))
            lines.append(f"- multi-teacher: each prompt went to {len(t['by_teacher'])} teachers "
                         f"({names}), the judge `{t['judge']}` kept "
                         f"the best; win rates over the {t.get('judged', t['prompts']):,} prompts with two or more usable answers: {wins}; each row names its `teacher`")
    if stage == "rephrase":
        lines.append(f"- styles (`prompts/rephrase/`): mix {json.dumps(cfg.get('rephrase', {}).get('mix', {}))}")
    if stage == "filter":
        f = cfg.get("filter", {})
        rule = f"bucket >= {f['bucket']}" if f.get("bucket") else f"{f.get('column', 'int_score')} >= {f.get('threshold')}"
        lines.append(f"- filter: kept documents with {rule}")
    if stage == "dedup":
        d = cfg.get("dedup", {})
        lines.append(f"- dedup: {d.get('method')} ({st.get('removed', 0):,} near-duplicates removed)")
    rep = facts.get("report", {})
    if stage == "decontaminate" and rep.get("benchmarks"):
        hits = ", ".join(f"{b} {v['hits']}" for b, v in rep["benchmarks"].items())
        lines.append(f"- decontamination: documents hit per benchmark: {hits}")
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
    counts, sections = {}, []
    for name, (run, shards) in found.items():
        counts[name] = _write_subset(name, shards, dest, p.max_rows_per_shard)
        sections.append(_subset_section(name, counts[name], _run_facts(run)))
    for stale in (dest / "data").iterdir():
        if stale.is_dir() and stale.name not in counts:
            shutil.rmtree(stale)
    meta = {
        "license": p.license, "language": p.language, "task_categories": p.task_categories,
        "size_categories": [_size_category(sum(counts.values()))], "tags": ["synthetic", "synthweb"],
        "pretty_name": p.pretty_name or (p.repo_id or dest.name).split("/")[-1],
        "configs": [{"config_name": n, "data_files": [{"split": "train", "path": f"data/{n}/*.parquet"}],
                     **({"default": True} if i == 0 else {})} for i, n in enumerate(counts)],
    }
    table = "\n".join(f"| `{n}` | {c:,} | `data/{n}/` |" for n, c in counts.items())
    body = [
        f"# {meta['pretty_name']}", "",
        f"Pretraining data for small language models, built with synthweb {__version__} from web pages "
        "(seeds -> generation / rephrasing / quality filtering -> dedup and decontamination).", "",
        "| config | rows | files |", "|---|---|---|", table, "",
        "```python", "from datasets import load_dataset",
        f"ds = load_dataset(\"{p.repo_id or dest}\", \"{next(iter(counts))}\", split=\"train\")", "```", "",
        "## How each subset was made", "", "\n\n".join(sections), "",
    ]
    if ablation:
        body.append(_ablation_section(Path(ablation)))
    card = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body)
    atomic_write_text(dest / "README.md", card)
    atomic_write_text(dest / "publish.json", json.dumps({"configs": counts, "repo_id": p.repo_id}, indent=2))
    return counts


def hub_token() -> str:
    """The token from HF_TOKEN or the login; a clear message when there is none. Never printed."""
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise UserError("publish: no Hugging Face token. Log in with `hf auth login` (or `huggingface-cli login`), "
                        "or set HF_TOKEN in the environment; use --dry-run to write the layout without pushing")
    return token


def push(folder: str | Path, repo_id: str, private: bool, token: str, retries: int = 6, log=print) -> str:
    """Create the dataset repo (if needed) and upload the folder, retrying on 429 and 5xx with back-off."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    for attempt in range(retries + 1):
        try:
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                                     commit_message=f"synthweb {__version__}: publish", ignore_patterns=["publish.json"])
            return str(getattr(info, "commit_url", info))
        except HfHubHTTPError as e:
            status = getattr(e.response, "status_code", None)
            if status == 401 or status == 403:
                raise UserError(f"publish: the Hub refused the token for {repo_id} (HTTP {status}); "
                                "log in again with `hf auth login` with a write token") from None
            if status not in (429, 500, 502, 503, 504) or attempt == retries:
                raise UserError(f"publish: pushing to {repo_id} failed: HTTP {status}: {str(e).splitlines()[0]}") from None
            wait = min(60, 2 ** attempt)
            log(f"publish: HTTP {status}, retrying in {wait} s ({attempt + 1}/{retries})")
            time.sleep(wait)
    raise AssertionError("unreachable")


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
    counts = build(cfg, subsets, dest, ablation or p.ablation)
    print("publish: " + ", ".join(f"{n} {c:,} rows" for n, c in counts.items()) + f"; layout and card in {dest}")
    result = {"rows": counts, "folder": str(dest)}
    if not dry_run:
        result["url"] = str(push(dest, repo_id, p.private, token))
        result["repo_id"] = repo_id
    return result


STAGE = Stage(
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
