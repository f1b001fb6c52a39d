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


def _cmd_seeds(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.stages import seeds
    from pipeline.stages.base import run_stage

    overrides = list(args.overrides)
    if args.input:
        overrides.append(f"input.source={args.input}")
    if args.output:
        overrides.append(f"run.output={args.output}")
    cfg = load_config(args.config, overrides)
    stats = run_stage("seeds", cfg, seeds.build, force=args.force, progress=not args.no_progress)
    print(f"wrote {cfg.run.output}")
    return 0 if stats else 1


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
