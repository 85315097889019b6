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


def write_report(report: Report, folder: Path) -> None:
    """Write the plots, report.json and report.md into folder. The plot names are recorded
    in the report first, so report.json and report.md list the files next to them."""
    folder.mkdir(parents=True, exist_ok=True)
    report.plots = write_plots(report, folder)
    write_text_atomic(folder / "report.json", render_json(report))
    write_text_atomic(folder / "report.md", render_markdown(report))
