"""The run report: ``write_report(run_folder)`` -> one self-contained report.html (see page.py)."""

from pipeline.report.page import Report, write_report
from pipeline.stages import Stage

__all__ = ["Report", "write_report"]


def main(cfg, force: bool = False, progress: bool = True, input: str | None = None, output: str | None = None) -> dict:
    from pathlib import Path

    from pipeline.errors import UserError

    if not input:
        raise UserError("report needs --input: a synthweb run folder (synthweb run's run.output)")
    return {"report": str(write_report(Path(input), Path(output) if output else None))}


def _plan(run) -> list:
    from pipeline.stages import Call

    return [Call(run.out, run.out / "report.html")]


STAGE = Stage(
    name="report", help="a run folder -> report.html (funnel, scores, distributions, dedup, contamination, costs, curves)",
    description="Read every stage folder of a synthweb run (stats.json, shards, classifier metrics, ablation results) "
    "and write one self-contained HTML page with the plots inlined as PNGs.",
    main=main, summary=lambda cfg, r: [f"wrote {r['report']}"], io_in_config=False, progress=False, force_help=None,
    config=False, input_help="the run folder", output_help="the HTML file (default INPUT/report.html)",
    plan=_plan, folder=".", markers=(),
)
