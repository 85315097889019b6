"""Writing report.html: the only part of the HTML renderer that touches the file system."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qatcmp.htmlview.questions import build_question_rows
from qatcmp.htmlview.render import render_html
from qatcmp.rundir import write_text_atomic

if TYPE_CHECKING:
    from qatcmp.report import Report

REPORT_HTML = "report.html"


def write_html_report(report: Report, folder: Path, *, run_dir: Path | None = None) -> Path:
    """Render report.html into `folder` (atomically) from the report, the plots written next
    to it, and — for a run — the run folder's questions and answers (`run_dir`, by default
    `folder`)."""
    folder = Path(folder)
    source = Path(run_dir or folder)
    # A folder of scores without its questions (items.jsonl) has no question table to show.
    has_questions = report.kind == "run" and (source / "items.jsonl").is_file()
    questions = build_question_rows(source) if has_questions else None
    plots = {}
    for name in report.plots:
        path = folder / name
        if Path(name).name == name and path.is_file():  # a plain file name next to the report
            plots[name] = path.read_bytes()
    target = folder / REPORT_HTML
    write_text_atomic(target, render_html(report, questions, plots))
    return target
