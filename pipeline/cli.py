"""``synthweb <stage> --config FILE [--set key=value ...]``: a thin CLI over the library.

Every command but ``run`` is a stage from the registry (``pipeline.stages.REGISTRY``): its options,
help and the library call it makes are declared in the stage's own module. User mistakes (bad config,
missing input, a bad record) print one line and exit 2; a failed task prints one line naming its log
and exits 1; completed work is kept and a rerun resumes.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipeline import __version__
from pipeline.errors import StageFailed, UserError


def _stage_command(stage):
    def command(args: argparse.Namespace) -> int:
        from pipeline.stages import configure

        values = {o.dest: getattr(args, o.dest) for o in stage.options}
        inp = getattr(args, "input", None) or getattr(args, "path", None)
        cfg, kw = configure(stage, getattr(args, "config", None), getattr(args, "overrides", []), inp,
                            getattr(args, "output", None), values)
        stats = stage.main(cfg, force=getattr(args, "force", False), progress=not getattr(args, "no_progress", False), **kw)
        for line in stage.summary(cfg, stats):
            print(line)
        return 0

    return command


def _add_stage(sub, stage) -> None:
    p = sub.add_parser(stage.name, help=stage.help, description=stage.description)
    if stage.positional_input:
        p.add_argument("path", nargs="?", metavar="PATH", help=stage.input_help)
    if stage.input_help:
        p.add_argument("--input", "-i", help=stage.input_help)
    if stage.output_help:
        p.add_argument("--output", "-o", help=stage.output_help)
    for o in stage.options:
        p.add_argument(*o.flags, help=o.help, dest=o.dest, **{k: v for k, v in o.kwargs.items() if k != "dest"})
    if stage.config:
        _config_options(p)
    if stage.force_help:
        p.add_argument("--force", action="store_true", help=stage.force_help)
    if stage.progress:
        p.add_argument("--no-progress", action="store_true", help="no progress bar (batch logs)")
    p.set_defaults(func=_stage_command(stage))


def _config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None, help="YAML config (default: configs/default.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set executor.tasks=8 (repeatable)")


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.run import Runner

    runner = Runner(args.config, args.overrides, args.output, force=args.force, until=args.until,
                    progress=not args.no_progress)
    m = runner.run()
    if runner.driver:
        return 0
    print("\nrun: " + ", ".join(f"{s} {m['stages'][s]['status']}" for s in m["stages_planned"]
                                if s in m["stages"] and (not runner.only or s == runner.only)))
    print(f"wrote {runner.out}" + (f" (report: {runner.out / 'report.html'})" if "report" in m["stages_planned"] else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pipeline.stages import all_stages, run_stages

    parser = argparse.ArgumentParser(prog="synthweb", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"synthweb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    for stage in all_stages():
        _add_stage(sub, stage)
    p = sub.add_parser(
        "run", help="every stage, raw web pages -> ablation verdict + report.html, skipping completed stages",
        description=f"Run {', '.join(run_stages())} one after another under run.output (--output), each reading "
        "what the one before it wrote. A stage already complete under the same config is reused, so a rerun "
        "resumes; run.json records the command of every stage, to run one alone. run.stages (or --until) runs fewer.",
    )
    p.add_argument("--output", "-o", help="the run folder (sets run.output)")
    p.add_argument("--until", help="stop after this stage")
    _config_options(p)
    p.add_argument("--force", action="store_true", help="discard what is in --output and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (batch logs)")
    p.set_defaults(func=_cmd_run)
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
