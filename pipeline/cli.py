"""``synthweb <stage> --config FILE [--set key=value ...]``: a thin CLI over the library.

User mistakes (bad config, missing input, a bad record) print one line and exit 2; a failed task
prints one line naming its log and exits 1; completed work is kept and a rerun resumes.
"""

from __future__ import annotations

import argparse
import os
import sys

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
    stats = run_stage("generate", cfg, generate.build, force=args.force, progress=not args.no_progress)
    if stats.get("complete") and "diversity" not in stats:
        from pipeline.embed import Encoder
        from pipeline.io.writer import _atomic_write_text
        from pipeline.stages.diversity import report

        out = Path(cfg.run.output)
        e = cfg.encoder
        stats["diversity"] = report(out / "data", Encoder(e.model, e.device, e.batch_size, e.max_chars), seed=cfg.run.seed)
        prep = out / "_logs" / "prepare.json"
        if prep.exists():
            stats["prepare"] = json.loads(prep.read_text())
        _atomic_write_text(out / "stats.json", json.dumps(stats, indent=2))
    d = stats.get("diversity", {})
    if d.get("generations"):
        print(f"diversity: {d['generations']} generations; audiences {d['by_audience']}; formats {d['by_format']}; "
              f"top-20 openings share {d['top20_openings_share']:.0%}; near-duplicate rate {d['near_duplicate_rate']:.1%}"
              + (f"; mean pairwise similarity {d['mean_pairwise_similarity']:.3f}" if "mean_pairwise_similarity" in d else ""))
    if stats.get("complete") and stats.get("records_out", 0) == 0:
        raise UserError(f"generation produced no texts (see {cfg.run.output}/removed and stats.json for the reasons)")
    print(f"wrote {cfg.run.output}")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"synthweb: error: {e}", file=sys.stderr)
        return 2
    except StageFailed as e:
        print(f"synthweb: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("synthweb: interrupted; completed tasks are kept, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
