"""``synthweb <stage> --config FILE [--set key=value ...]``: a thin CLI over the library.

User mistakes (bad config, missing input, a bad record) print one line and exit 2; a failed task
prints one line naming its log and exits 1; completed work is kept and a rerun resumes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline import __version__
from pipeline.errors import StageFailed, UserError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None, help="YAML config (default: configs/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set executor.tasks=8 (repeatable)")
    p.add_argument("--force", action="store_true", help="discard what is in --output and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (batch logs)")


def _config(args: argparse.Namespace):
    """The config file with --set overrides, --input and --output applied, validated."""
    from pipeline.config import load_config

    overrides = list(args.overrides)
    if args.input:
        overrides.append(f"input.source={args.input}")
    if args.output:
        overrides.append(f"run.output={args.output}")
    return load_config(args.config, overrides)


def _cmd_seeds(args: argparse.Namespace) -> int:
    from pipeline.stages import seeds
    from pipeline.stages.base import run_stage

    cfg = _config(args)
    stats = run_stage("seeds", cfg, seeds.build, force=args.force, progress=not args.no_progress)
    print(f"wrote {cfg.run.output}")
    return 0 if stats else 1


def _cmd_infer(args: argparse.Namespace) -> int:
    from pipeline.stages import infer
    from pipeline.stages.base import run_stage

    cfg = _config(args)
    stats = run_stage("infer", cfg, infer.build, force=args.force, progress=not args.no_progress)
    if stats.get("complete") and stats.get("records_in", 0) == 0:
        raise UserError(f"{cfg.input.source} holds no requests (0 records read); nothing was generated")
    print(f"wrote {cfg.run.output}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pipeline.stages import generate
    from pipeline.stages.base import run_stage

    cfg = _config(args)
    generate.check_seeds(cfg)
    generate.check_judge(cfg)
    stats = run_stage("generate", cfg, generate.build, force=args.force, progress=not args.no_progress)
    if stats.get("complete") and "diversity" not in stats:
        from pipeline.embed import Encoder
        from pipeline.io.writer import atomic_write_text
        from pipeline.stages.diversity import report

        out = Path(cfg.run.output)
        e = cfg.encoder
        stats["diversity"] = report(out / "data", Encoder(e.model, e.device, e.batch_size, e.max_chars), seed=cfg.run.seed)
        prep = out / "_logs" / "prepare.json"
        if prep.exists():
            stats["prepare"] = json.loads(prep.read_text())
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    if stats.get("complete") and cfg.generate.teachers and "teachers" not in stats:
        stats["teachers"] = generate.win_rates(Path(cfg.run.output) / "data")
        from pipeline.io.writer import atomic_write_text

        atomic_write_text(Path(cfg.run.output) / "stats.json", json.dumps(stats, indent=2))
    if stats.get("teachers"):
        t = stats["teachers"]
        print(f"teachers ({t['judge']}): judged {t['judged']} of {t['prompts']} prompts (the rest had one usable answer); "
              + ", ".join(f"{n} won {v['won_judged']} ({v['win_rate']:.0%})" if v["win_rate"] is not None else f"{n} won 0 judged"
                          for n, v in t["by_teacher"].items()))
    _gate_line(stats)
    _audit_line(stats, cfg)
    d = stats.get("diversity", {})
    if d.get("generations"):
        print(f"diversity: {d['generations']} generations; audiences {d['by_audience']}; formats {d['by_format']}; "
              + (f"top-20 openings share {d['top20_openings_share']:.0%}; " if d.get("top20_openings_share") is not None
                 else "openings not rated (< 300 texts); ") + f"near-duplicate rate {d['near_duplicate_rate']:.1%}"
              + (f"; mean pairwise similarity {d['mean_pairwise_similarity']:.3f}" if "mean_pairwise_similarity" in d else ""))
    if stats.get("complete") and stats.get("records_out", 0) == 0:
        raise UserError(f"generation produced no texts (see {cfg.run.output}/removed and stats.json for the reasons)")
    print(f"wrote {cfg.run.output}")
    return 0


def _cmd_annotate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pipeline.io.writer import atomic_write_text
    from pipeline.stages import annotate
    from pipeline.stages.base import run_stage

    cfg = _config(args)
    stats = run_stage("annotate", cfg, annotate.build, force=args.force, progress=not args.no_progress)
    out = Path(cfg.run.output)
    if stats.get("complete") and "annotation" not in stats:
        stats["annotation"] = annotate.annotation_report(out / "data")
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    a = stats.get("annotation", {})
    if a.get("annotated"):
        print(f"annotation: {a['annotated']} scored; int_score histogram {a['int_score_histogram']}")
        for pair, m in a.get("jury_agreement", {}).items():
            print(f"  annotators {pair}: exact {m['exact']:.0%}, within 1 {m['within_1']:.0%}, spearman {m['spearman']}")
    if stats.get("complete") and stats.get("records_out", 0) == 0:
        raise UserError(f"no document got a score (see {out}/removed for the replies and the reasons)")
    print(f"wrote {cfg.run.output}")
    return 0


def _gate_line(stats: dict) -> None:
    if stats.get("quality_gate"):
        from pipeline.stages.base import gate_line

        print(gate_line(stats["quality_gate"]))


def _audit_line(stats: dict, cfg) -> None:
    """The synthetic-text audit of a finished LLM stage, kept in its stats.json and printed."""
    import json
    from pathlib import Path

    from pipeline.io.writer import atomic_write_text
    from pipeline.stages import audit

    out = Path(cfg.run.output)
    if stats.get("complete") and stats.get("records_out") and "audit" not in stats:
        r = audit.audit(out / "data", cfg.audit, gate_cfg=cfg.quality_gate)
        stats["audit"] = {**r["overall"], "by_shard": r["by_shard"]}
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    if stats.get("audit", {}).get("documents"):
        print(audit.summary_line(stats["audit"]))


def _cmd_rephrase(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pipeline.io.writer import atomic_write_text
    from pipeline.stages import rephrase
    from pipeline.stages.base import run_stage

    if args.styles:
        names = [s.strip() for s in args.styles.split(",") if s.strip()]
        args.overrides += ["rephrase.route_by=mix", "rephrase.mix={" + ", ".join(f"{n}: 1" for n in names) + "}",
                           f"rephrase.styles_per_chunk={len(names)}"]
    cfg = _config(args)
    rephrase.load_styles(cfg)  # an unknown style fails before the input is read or a model loads
    stats = run_stage("rephrase", cfg, rephrase.build, force=args.force, progress=not args.no_progress)
    out = Path(cfg.run.output)
    if stats.get("complete") and "rephrase" not in stats:
        stats["rephrase"] = rephrase.report(out / "data")
        atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    _gate_line(stats)
    _audit_line(stats, cfg)
    for style, m in stats.get("rephrase", {}).get("by_style", {}).items():
        print(f"rephrase: {style}: {m['rows']} rows, {m['mean_text_tokens']:.0f} tokens on average"
              + (f", similarity to the source {m['mean_similarity']:.2f}" if m.get("mean_similarity") is not None else ""))
    if stats.get("complete") and stats.get("records_out", 0) == 0:
        raise UserError(f"rephrase produced nothing (see {out}/removed and stats.json for the reasons)")
    print(f"wrote {cfg.run.output}")
    return 0


def _cmd_dedup(args: argparse.Namespace) -> int:
    from pipeline.stages import dedup
    from pipeline.stages.base import run_stage

    if args.method:
        args.overrides.append(f"dedup.method={args.method}")
    cfg = _config(args)
    stats = run_stage("dedup", cfg, dedup.build, force=args.force, progress=not args.no_progress)
    if stats.get("complete"):
        print(f"dedup: kept {stats.get('records_out', 0)} of {stats.get('records_in', 0)} documents; "
              f"near-duplicates in {cfg.run.output}/removed (with minhash_cluster_id and duplicate_of)")
    print(f"wrote {cfg.run.output}")
    return 0


def _cmd_decontaminate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pipeline.io.writer import atomic_write_text
    from pipeline.stages import decontaminate
    from pipeline.stages.base import run_stage

    if args.benchmarks:
        args.overrides.append("decontaminate.benchmarks=" + json.dumps(args.benchmarks))
    cfg = _config(args)
    stats = run_stage("decontaminate", cfg, decontaminate.build, force=args.force, progress=not args.no_progress)
    out = Path(cfg.run.output)
    if stats.get("complete"):
        rep = decontaminate.report(out, cfg)
        atomic_write_text(out / "report.json", json.dumps(rep, indent=2))
        for name, b in rep["benchmarks"].items():
            print(f"decontaminate: {name}: {b['hits']} documents hit, {b['unique_items']} distinct items")
    print(f"wrote {cfg.run.output}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.config import load_config
    from pipeline.stages import audit

    if not args.input:
        raise UserError("audit needs --input: a run folder or a folder of Parquet shards")
    cfg = load_config(args.config, args.overrides)
    r = audit.audit(args.input, cfg.audit, args.text_column, cfg.quality_gate)
    out = Path(args.output) if args.output else Path(args.input) / "audit.json"
    audit.write(r, out)
    print(audit.summary_line(r))
    for stage, s in r["by_stage"].items():
        print(f"  {stage}: " + audit.summary_line(s).removeprefix("audit: "))
    print(f"wrote {out}")
    return 0


def _cmd_train_classifier(args: argparse.Namespace) -> int:
    from classifiers.train import train_classifier

    overrides = list(args.overrides)
    if args.label_column:
        overrides.append(f"classifier.label_column={args.label_column}")
    if args.text_column:
        overrides.append(f"classifier.text_column={args.text_column}")
    from pipeline.config import load_config

    cfg = load_config(args.config, overrides)
    if not args.input or not args.output:
        raise UserError("train-classifier needs --input (labelled Parquet/JSONL) and --output (the classifier folder)")
    m = train_classifier(cfg.classifier, args.input, args.output, force=args.force)
    print(f"{m['evaluated_on']} split ({m['n_evaluated']:,} texts): binary F1@{m['threshold']:g} {m['binary_f1']:.3f} "
          f"(precision {m['precision']:.3f}, recall {m['recall']:.3f}), macro-F1 {m['macro_f1']:.3f}, "
          f"accuracy {m['accuracy']:.3f}; uncalibrated binary F1 {m['uncalibrated']['binary_f1']:.3f}")
    print(f"per-class F1 {m['per_class_f1']}")
    print(f"wrote {args.output} (config.json, model weights, metrics.json, confusion_matrix.png, README.md)")
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    from pipeline.stages import classify
    from pipeline.stages.base import run_stage

    if args.classifier:
        args.overrides.append("classify.classifiers=[" + ",".join(f'"{c}"' for c in args.classifier) + "]")
    cfg = _config(args)
    run_stage("classify", cfg, classify.build_classify, force=args.force, progress=not args.no_progress,
              extra_hash=classify.fingerprints(cfg))
    print(f"wrote {cfg.run.output}")
    return 0


def _cmd_filter(args: argparse.Namespace) -> int:
    from pipeline.stages import classify
    from pipeline.stages.base import run_stage

    if args.threshold is not None:
        args.overrides += [f"filter.threshold={args.threshold}", "filter.bucket=null"]
    if args.bucket:
        args.overrides.append(f"filter.bucket={args.bucket}")
    cfg = _config(args)
    stats = run_stage("filter", cfg, classify.build_filter, force=args.force, progress=not args.no_progress)
    print(f"kept {stats.get('records_out', 0):,} of {stats.get('records_in', 0):,} documents; "
          f"wrote {cfg.run.output}/kept and {cfg.run.output}/removed")
    return 0


def _train_config(args: argparse.Namespace):
    """The config with --set overrides; --input replaces train.datasets with that one dataset."""
    import json

    from pipeline.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "input", None):
        entry = {"path": args.input}
        if getattr(args, "text_column", None):
            entry["text_column"] = args.text_column
        overrides.append("train.datasets=" + json.dumps([entry]))
    return load_config(args.config, overrides)


def _cmd_tokenize(args: argparse.Namespace) -> int:
    from pipeline.config import TrainDataset
    from pipeline.train.tokenize import tokenize

    if not args.input or not args.output:
        raise UserError("tokenize needs --input (Parquet/JSONL shards) and --output (the token folder)")
    from pipeline.config import load_config

    cfg = load_config(args.config, args.overrides)
    m = tokenize(cfg, TrainDataset(path=args.input, text_column=args.text_column, where=args.where), args.output,
                 force=args.force)
    print(f"tokenize: {m['documents']['train']:,} documents, {m['tokens']['train']:,} tokens for training, "
          f"{m['tokens']['val']:,} held out ({m['dtype']}, EOS {m['eos_token']!r}); wrote {args.output}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pipeline.train.loop import Trainer

    if not args.output:
        raise UserError("train needs --output (the run folder: checkpoints, metrics.jsonl, eval.json, model/)")
    cfg = _train_config(args)
    r = Trainer(cfg, args.output, force=args.force).run()
    if not r.get("complete") or int(os.environ.get("RANK", "0")) != 0:
        return 0
    val = f"{r['val_loss']:.4f}" if r.get("val_loss") is not None else "n/a (no held-out tokens)"
    print(f"train: {r['tokens']:,} tokens, validation loss {val}")
    for name, t in r["tasks"].items():
        flag = "  (at chance)" if t["at_chance"] else ""
        print(f"  {name:<16} {t['metric']} {t['acc_norm']:.3f}  chance {t['chance']:.3f}  n={t['n']}{flag}")
    print(f"wrote {args.output}/metrics.jsonl, {args.output}/eval.json, {args.output}/model")
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.train.ablate import ablate

    if not args.output:
        raise UserError("ablate needs --output (the folder for runs, results.json and report.html)")
    cfg = load_config(args.config, args.overrides)
    res = ablate(cfg, args.output, force=args.force)
    print(res["verdict"])
    print(f"wrote {args.output}/results.json and {args.output}/report.html")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.stages import publish

    cfg = load_config(args.config, args.overrides)
    p = cfg.publish
    repo_id = args.repo_id or p.repo_id
    subsets = dict(p.subsets)
    for item in args.subset:
        if "=" not in item:
            raise UserError(f"--subset {item!r}: expected NAME=FOLDER, e.g. textbooks=output/generate/textbooks")
        name, path = item.split("=", 1)
        subsets[name.strip()] = path.strip()
    if repo_id:
        publish.check_repo_id(repo_id)
        p.repo_id = repo_id
    elif not args.dry_run:
        raise UserError("publish needs --repo-id namespace/name (or publish.repo_id), or --dry-run DIR")
    token = None if args.dry_run else publish.hub_token()  # before any work: a missing login fails fast
    dest = Path(args.dry_run) if args.dry_run else Path(cfg.run.output) / "_publish"
    counts = publish.build(cfg, subsets, dest, args.ablation or p.ablation)
    print("publish: " + ", ".join(f"{n} {c:,} rows" for n, c in counts.items()) + f"; layout and card in {dest}")
    if args.dry_run:
        return 0
    url = publish.push(dest, repo_id, p.private, token)
    print(f"publish: pushed to https://huggingface.co/datasets/{repo_id} ({url})")
    return 0


def call_stage(argv: list[str]) -> int:
    """One stage command, parsed and run in this process (``synthweb run`` chains them)."""
    parsed = build_parser().parse_args(argv)
    return parsed.func(parsed)


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.run import Runner

    runner = Runner(args.config, args.overrides, args.output, force=args.force, until=args.until,
                    progress=not args.no_progress, call_stage=call_stage)
    m = runner.run()
    print("\nrun: " + ", ".join(f"{s} {m['stages'][s]['status']}" for s in m["stages_planned"]))
    print(f"wrote {runner.out}" + (f" (report: {runner.out / 'report.html'})" if "report" in m["stages_planned"] else ""))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report import write_report

    if not args.input:
        raise UserError("report needs --input: a synthweb run folder (synthweb run's run.output)")
    path = write_report(Path(args.input), Path(args.output) if args.output else None)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthweb", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"synthweb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    p = sub.add_parser(
        "seeds", help="web pages -> cleaned, filtered seed shards",
        description="Read web pages (Hub dataset, Parquet, JSONL[.gz/.zst], WARC, HTML folder), extract main text, "
        "normalise, identify the language, apply Gopher/C4/FineWeb heuristic filters and write Parquet shards "
        "to OUTPUT/data plus the dropped pages with reasons to OUTPUT/removed and OUTPUT/stats.json.",
    )
    p.add_argument("--input", "-i", help="a path (file or folder) or a Hub dataset name (sets input.source)")
    p.add_argument("--output", "-o", help="output folder (sets run.output)")
    _common(p)
    p.set_defaults(func=_cmd_seeds)

    p = sub.add_parser(
        "infer", help="a file of prompts -> LLM answers (any backend), with request-level resume",
        description="Run every record of --input (JSONL/Parquet: the user message in input.text_key, optional "
        "'system' and 'messages' fields) through the engine in the llm section (transformers, openai or vllm) "
        "and write the answers with token counts to OUTPUT/data, failures with reasons to OUTPUT/removed, and "
        "engine metrics to OUTPUT/stats.json. Answers are cached per request: a rerun after a crash sends only "
        "what had not completed.",
    )
    p.add_argument("--input", "-i", help="prompts file or folder (sets input.source)")
    p.add_argument("--output", "-o", help="output folder (sets run.output)")
    _common(p)
    p.set_defaults(func=_cmd_infer)

    p = sub.add_parser(
        "generate", help="seeds -> topics + personas -> prompt matrix -> LLM -> synthetic textbooks",
        description="Cluster a sample of the seeds (--input: seeds shards, e.g. the data/ folder of a seeds run, or "
        "any readable input) into LLM-named topics, build a persona pool, then for each seed render a prompt from "
        "the audience x format matrix (prompts/generate/) and generate through the engine in the llm section. "
        "Writes OUTPUT/data (text with full provenance), OUTPUT/removed (with reasons), OUTPUT/topics, "
        "OUTPUT/personas and OUTPUT/stats.json with the diversity report.",
    )
    p.add_argument("--input", "-i", help="seed documents (sets input.source)")
    p.add_argument("--output", "-o", help="output folder (sets run.output)")
    _common(p)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser(
        "rephrase", help="web pages -> LLM rephrasings in WRAP and Nemotron-CC styles, routed by quality",
        description="Cut every document of --input into chunks within each style's input budget (generator tokens), "
        "route it to styles by its quality_bucket or int_score (rephrase.routing; a fixed rephrase.mix without "
        "scores), rewrite each chunk with the style's prompt (prompts/rephrase/), clean the replies and drop those "
        "far from their source (rephrase.min_similarity). Writes OUTPUT/data (synthetic rows and, with "
        "rephrase.keep_actual, the source pages as kind=actual), OUTPUT/removed (with reasons) and stats.json.",
    )
    p.add_argument("--input", "-i", help="documents (a file or folder, e.g. a seeds or classify run's data/)")
    p.add_argument("--output", "-o", help="output folder (sets run.output)")
    p.add_argument("--styles", help="comma-separated styles applied to every chunk, ignoring quality "
                   "(e.g. wrap_medium,diverse_qa)")
    _common(p)
    p.set_defaults(func=_cmd_rephrase)

    p = sub.add_parser(
        "dedup", help="documents -> the same without near-duplicates (datatrove MinHash), removed ones with their cluster",
        description="MinHash near-duplicate removal through datatrove's four stages (signatures, bands, clusters, "
        "filter), resumable. Writes OUTPUT/data (one document per cluster) and OUTPUT/removed (minhash_cluster_id, "
        "minhash_cluster_size, duplicate_of = the kept document's id).",
    )
    p.add_argument("--input", "-i", help="documents to deduplicate")
    p.add_argument("--output", "-o", help="output folder (sets run.output)")
    p.add_argument("--method", choices=("minhash", "exact", "semantic"), help="near-duplicates (minhash, the default), exact copies or paraphrases (sets dedup.method)")
    _common(p)
    p.set_defaults(func=_cmd_dedup)

    p = sub.add_parser(
        "decontaminate", help="documents -> the same without those that contain benchmark items",
        description="Index the benchmark items (--benchmarks: files, folders or hf:NAME[:CONFIG]:SPLIT) by word "
        "n-grams, confirm candidate documents by sequence similarity, and write OUTPUT/data (clean), "
        "OUTPUT/removed (contaminated, naming the benchmark and item) and OUTPUT/report.json (hits per benchmark).",
    )
    p.add_argument("--input", "-i", help="documents to check")
    p.add_argument("--output", "-o", help="output folder (sets run.output)")
    p.add_argument("--benchmarks", action="append", metavar="FILE_OR_DIR", help="benchmark file, folder or hf:NAME:SPLIT (repeatable)")
    _common(p)
    p.set_defaults(func=_cmd_decontaminate)

    p = sub.add_parser(
        "audit", help="shards -> signs of synthetic text per shard and per stage (proxy phrases, refusals, openings)",
        description="Read every Parquet shard under --input and report, overall, per stage (the last entry of each "
        "row's history) and per shard: mean length, the share of documents with LLM proxy phrases (audit.phrases) "
        "and their rate per 1,000 words, the refusal rate, and the share of the most common openings. Writes "
        "audit.json (in --input, or --output) and prints a summary.",
    )
    p.add_argument("--input", "-i", help="a run folder or a folder of Parquet shards")
    p.add_argument("--output", "-o", help="where to write the JSON (default INPUT/audit.json)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--config", "-c", default=None, help="YAML config (default: configs/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser(
        "annotate", help="documents -> 0-5 scores from the LLM with the rubric in prompts/annotate/ (justification kept)",
        description="Score every document of --input with the additive 0-5 rubric of prompts/annotate/<annotate.template>.j2 "
        "through the engine in the llm section (and the annotate.jury, if any). Writes OUTPUT/data (score, int_score, "
        "justification, annotator scores, provenance), OUTPUT/removed (replies without a usable score, with the raw "
        "text) and OUTPUT/stats.json (score histogram, jury agreement).",
    )
    p.add_argument("--input", "-i", help="documents (a file or folder, e.g. a seeds run's data/)")
    p.add_argument("--output", "-o", help="output folder (sets run.output)")
    _common(p)
    p.set_defaults(func=_cmd_annotate)

    p = sub.add_parser(
        "train-classifier", help="labelled texts -> BERT-style filter classifier (safetensors + card + metrics)",
        description="Deduplicate the labelled texts, split them stratified into train/validation/test, train an "
        "encoder classifier (classifier.mode frozen or finetune; or classifier.kind fasttext), choose the decision "
        "cut on validation data and report binary P/R/F1 at classifier.threshold, per-class F1, macro-F1 and the "
        "confusion matrix on the test split. Writes OUTPUT/config.json, model.safetensors, metrics.json, "
        "confusion_matrix.png and README.md (the model card).",
    )
    p.add_argument("--input", "-i", help="labelled Parquet/JSONL file or folder (e.g. an annotate run's data/)")
    p.add_argument("--output", "-o", help="the classifier folder to write")
    p.add_argument("--label-column", help="label column (sets classifier.label_column; default score)")
    p.add_argument("--text-column", help="text column (sets classifier.text_column; default text)")
    _common(p)
    p.set_defaults(func=_cmd_train_classifier)

    p = sub.add_parser(
        "classify", help="shards -> the same shards with score/int_score (and ensemble bins) from classifiers",
        description="Score every document of --input with each --classifier: score and int_score from the first, "
        "every classifier's score in classifier_scores; with several classifiers, token-weighted percentile bins "
        "per classifier and the ensemble bin (max) and bucket (Nemotron-CC). Writes OUTPUT/data and stats.json.",
    )
    p.add_argument("--input", "-i", help="documents to score")
    p.add_argument("--output", "-o", help="output folder (sets run.output)")
    p.add_argument("--classifier", action="append", metavar="DIR", help="a classifier folder (repeatable)")
    _common(p)
    p.set_defaults(func=_cmd_classify)

    p = sub.add_parser(
        "filter", help="classified shards -> kept/ and removed/ (with reasons) by threshold or bucket",
        description="Keep documents whose int_score (filter.column) is at or above --threshold, or whose quality bucket "
        "is --bucket or higher, in OUTPUT/kept; every other document goes to OUTPUT/removed with its reason.",
    )
    p.add_argument("--input", "-i", help="classified documents (a classify run's data/)")
    p.add_argument("--output", "-o", help="output folder (sets run.output)")
    p.add_argument("--threshold", type=float, help="keep int_score (filter.column) >= this (sets filter.threshold)")
    p.add_argument("--bucket", help="keep this quality bucket and the ones above it (sets filter.bucket)")
    _common(p)
    p.set_defaults(func=_cmd_filter)

    p = sub.add_parser(
        "tokenize", help="Parquet/JSONL shards -> packed token shards (uint16/uint32 + document index)",
        description="Tokenize --input with tokenize.tokenizer (default: the generator's, SmolLM2), append an EOS to "
        "every document, hold out tokenize.validation_fraction of the documents by a hash of their id, and write "
        "datatrove token files to OUTPUT/train and OUTPUT/val with OUTPUT/tokens.json.",
    )
    p.add_argument("--input", "-i", help="Parquet/JSONL file or folder")
    p.add_argument("--output", "-o", help="the token folder")
    p.add_argument("--text-column", help="the text column (default tokenize.text_column)")
    p.add_argument("--where", help='keep rows matching "column OP value", e.g. "score >= 3"')
    p.add_argument("--config", "-c", default=None, help="YAML config (default: configs/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--force", action="store_true", help="tokenize again into --output")
    p.set_defaults(func=_cmd_tokenize)

    p = sub.add_parser(
        "train", help="train a small llama-style model on token shards; checkpoints, metrics.jsonl, eval.json",
        description="Train the train.preset model on train.datasets (or --input) for train.tokens tokens, evaluate "
        "validation loss and zero-shot cloze accuracy on eval.tasks, and write OUTPUT/checkpoints, "
        "OUTPUT/metrics.jsonl, OUTPUT/tensorboard, OUTPUT/eval.json and OUTPUT/model. A rerun resumes from the "
        "newest checkpoint. Several GPUs: torchrun --nproc-per-node N -m pipeline.cli train ...",
    )
    p.add_argument("--input", "-i", help="one dataset (shards or a tokenized folder) instead of train.datasets")
    p.add_argument("--output", "-o", help="the run folder")
    p.add_argument("--text-column", help="the text column of --input")
    p.add_argument("--config", "-c", default=None, help="YAML config (default: configs/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.tokens=2000000 (repeatable)")
    p.add_argument("--force", action="store_true", help="discard the run in --output and train from scratch")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "ablate", help="one model per dataset and seed, same budget -> results.json + report.html",
        description="For every dataset in ablate.datasets and every seed in ablate.seeds, train the train section's "
        "model on that dataset alone with the same token budget, evaluate it along the way, and write "
        "OUTPUT/results.json, OUTPUT/report.html and PNG curves. Runs already complete are reused.",
    )
    p.add_argument("--output", "-o", help="the ablation folder")
    p.add_argument("--config", "-c", default=None, help="YAML config, e.g. configs/ablation.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--force", action="store_true", help="train every run again")
    p.set_defaults(func=_cmd_ablate)

    p = sub.add_parser(
        "publish", help="final shards -> a Hugging Face dataset repo (data/<config>/*.parquet + dataset card)",
        description="Re-shard each --subset's final shards into data/<config>/train-NNNNN-of-NNNNN.parquet, write a "
        "dataset card (YAML configs, license, language, size; how each subset was made, from its run folder; the "
        "ablation table), then push with huggingface_hub (token from HF_TOKEN or `hf auth login`). --dry-run DIR "
        "writes the layout there and pushes nothing.",
    )
    p.add_argument("--subset", action="append", default=[], metavar="NAME=FOLDER",
                   help="a config of the dataset and the stage run folder holding it (repeatable)")
    p.add_argument("--repo-id", help="namespace/name on the Hub (sets publish.repo_id)")
    p.add_argument("--ablation", help="an ablate output folder whose table goes into the card")
    p.add_argument("--dry-run", metavar="DIR", help="write the repository layout to DIR; push nothing")
    p.add_argument("--config", "-c", default=None, help="YAML config (default: configs/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_publish)

    p = sub.add_parser(
        "run", help="every stage, raw web pages -> ablation verdict + report.html, skipping completed stages",
        description="Run seeds, annotate, train-classifier, classify, filter, generate, rephrase, dedup, decontaminate, "
        "tokenize, ablate and report one after another under run.output (--output), each reading what the one "
        "before it wrote. A stage already complete under the same config is reused, so a rerun resumes; run.json "
        "records the command of every stage, to run one alone. run.stages (or --until) runs fewer.",
    )
    p.add_argument("--output", "-o", help="the run folder (sets run.output)")
    p.add_argument("--until", help="stop after this stage")
    _common(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "report", help="a run folder -> report.html (funnel, scores, distributions, dedup, contamination, costs, curves)",
        description="Read every stage folder of a synthweb run (stats.json, shards, classifier metrics, ablation results) "
        "and write one self-contained HTML page with the plots inlined as PNGs.",
    )
    p.add_argument("--input", "-i", help="the run folder")
    p.add_argument("--output", "-o", help="the HTML file (default INPUT/report.html)")
    p.set_defaults(func=_cmd_report)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's kill, `kill PID`): stopped like Ctrl-C, workers and helpers included."""


def _on_sigterm(main_pid: int):
    import signal

    def handler(signum, frame):
        if os.getpid() != main_pid:  # a forked worker: die as the default would (its parent cleans up)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    return handler


def main(argv: list[str] | None = None) -> int:
    import signal

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm(os.getpid()))
    try:
        return args.func(args)
    except UserError as e:
        print(f"synthweb: error: {e}", file=sys.stderr)
        return 2
    except StageFailed as e:
        print(f"synthweb: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"synthweb: {what}; completed tasks are kept, rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
