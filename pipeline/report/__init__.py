"""The run report: ``write_report(run_folder)`` -> one self-contained report.html (see page.py)."""

from pipeline.report.page import Report, write_report

__all__ = ["Report", "write_report"]
