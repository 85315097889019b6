"""qatcmp view: open a run's report.html in the default browser."""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser
from pathlib import Path

from qatcmp.errors import DataError

REPORT_HTML = "report.html"  # the name qatcmp.report.write writes (not imported: keeps this light)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help="open a run's report.html in the default browser",
        description="Open RUN/report.html (written by `qatcmp stats RUN`) in the default browser. "
        "Where there is no browser (e.g. no display on Linux, or --print), print its path instead.",
    )
    p.add_argument("run", type=Path, help="the run folder (runs/NAME), or a report.html")
    p.add_argument("--print", dest="print_only", action="store_true", help="only print the path")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    page = report_page(args.run)
    if args.print_only or not has_display() or not _open(page.as_uri()):
        print(page)
        return 0
    print(f"Opened {page} in the browser")
    return 0


def report_page(target: Path) -> Path:
    page = target if target.suffix.lower() == ".html" else target / REPORT_HTML
    if not page.is_file():
        if target.is_file():
            raise DataError(f"{target}: not a run folder or a report.html")
        if target.suffix.lower() != ".html" and not target.is_dir():
            raise DataError(f"{target}: no such run folder")
        raise DataError(f"{page}: no report.html here (write it with: qatcmp stats {target})")
    return page.resolve()


def has_display() -> bool:
    """A graphical session to open a browser in. On Linux and the BSDs that means an X or
    Wayland display; without one, webbrowser would start a text browser in this terminal,
    or nothing — printing the path is more useful."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _open(uri: str) -> bool:
    try:
        return webbrowser.open(uri)
    except webbrowser.Error:
        return False
