"""The only part of the report that writes files: each renderer's output, atomically (a
temporary file renamed over the target), so a reader or a crash never sees half a file."""

from __future__ import annotations

import os
from pathlib import Path

from qatcmp.report.model import Report
from qatcmp.report.render.json import render_json
from qatcmp.report.render.markdown import render_markdown


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file next to the target and rename it over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write leaves no half file behind


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_plots(report: Report, folder: Path) -> list[str]:
    """Write the plots that have something to show; return their file names."""
    from qatcmp.report.render.png import render_png  # matplotlib: load only when writing

    rendered = render_png(report)
    for name, data in rendered.items():
        write_bytes_atomic(folder / name, data)
    return list(rendered)


REPORT_HTML = "report.html"


def write_report(report: Report, folder: Path, *, run_dir: Path | None = None) -> None:
    """Write the plots, report.json, report.md and report.html into folder. The plot names are
    recorded in the report first, so report.json and report.md list the files next to them.
    ``run_dir``: the run whose questions and answers report.html shows (default: folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    report.plots = write_plots(report, folder)
    write_text_atomic(folder / "report.json", render_json(report))
    write_text_atomic(folder / "report.md", render_markdown(report))
    write_html_report(report, folder, run_dir=run_dir)


def write_html_report(report: Report, folder: Path, *, run_dir: Path | None = None) -> Path:
    """report.html from the report, the plots written next to it and - for a run - the run
    folder's questions and answers (``run_dir``, by default ``folder``)."""
    from qatcmp.report.questions import build_question_rows
    from qatcmp.report.render.html import render_html  # jinja2: load only when writing

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
