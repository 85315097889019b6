"""report.html: one more renderer of the report model — pure, `(Report, QuestionRows) -> str`.

It never touches the file system (the plots come in as bytes) and computes no statistic: the
numbers on top are the Report's, the question table is data the browser filters and counts.

Safety. Every string from a model or a dataset is untrusted. The page's markup is a Jinja2
template with autoescape on (set explicitly, not by file extension) and StrictUndefined (a
misspelled field fails the render instead of printing nothing); the question data goes into a
`<script type="application/json">` block through `script_json`, which escapes `<`, `>`, `&`,
quotes and U+2028/2029, so no text can close the block; the script builds the DOM with
`textContent` only. A Content-Security-Policy allows exactly the inlined script and style (by
their SHA-256), images only as data: URIs, and nothing else — no request, no inline handler.
A template rather than string building: the page has a few dozen interpolations of report
text, and autoescape makes the one forgotten `html.escape` impossible.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from qatcmp.report.questions import QuestionRows
from qatcmp.report.render.adaptive import (
    ADAPTIVE_PNG,
    LOOK_HEADER,
    PAIR_HEADER,
    procedure_notes,
    as_is,
    benchmark_status_lines,
    design_note,
    family_line,
    look_cells,
    pair_cells,
    pair_sentence,
)

if TYPE_CHECKING:
    from qatcmp.report import Report

_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "'": "\\u0027",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_JSON_UNSAFE = re.compile("[<>&'\u2028\u2029]")
# Lone surrogates (a server can send "\ud800" in JSON) cannot be written as UTF-8: keep them
# as JSON escapes, which JSON.parse reads back as they were.
_SURROGATE = re.compile("[\ud800-\udfff]")


def script_json(obj: Any) -> Markup:
    """JSON that is inert inside a <script> element: nothing in it can end the element, open
    a comment, or break a JavaScript string."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = _JSON_UNSAFE.sub(lambda m: _JSON_ESCAPES[m.group()], text)
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return Markup(text)


def csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def content_security_policy(script: str, style: str) -> str:
    return (
        "default-src 'none'; "
        f"script-src {csp_hash(script)}; "
        f"style-src {csp_hash(style)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )


# --------------------------------------------------------------------------- formatting


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def points(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f}"


def interval(value: Any, signed: bool = False) -> str:
    if not value:
        return "—"
    low, high = value
    if signed:
        return f"[{low * 100:+.1f}, {high * 100:+.1f}]"
    return f"[{low * 100:.1f}, {high * 100:.1f}]"


def pvalue(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def number(value: float | int | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def setup_rows(report: Report) -> list[tuple[str, str]]:
    """The Set-up facts, from whatever the report has: the basic fields always, and a
    `setup` part (a newer Report) flattened to label/value pairs, whatever its shape."""
    rows = [
        ("run", report.source),
        ("models", ", ".join(report.models)),
        ("comparisons", f"each variant against {report.reference}" if report.reference else "every pair"),
        ("alpha", f"{report.alpha:g}"),
        ("equivalence margin", f"±{report.margin * 100:g} points"),
    ]
    setup = getattr(report, "setup", None)
    if setup is not None:
        data = setup.model_dump(mode="json") if hasattr(setup, "model_dump") else setup
        rows += list(_flatten(data, ""))
    return rows


def _flatten(value: Any, label: str):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(inner, f"{label} · {key}" if label else str(key))
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for index, inner in enumerate(value, start=1):
            yield from _flatten(inner, f"{label} {index}")
    elif value is not None and value != [] and value != "":
        text = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        yield (label.replace("_", " "), text)


# --------------------------------------------------------------------------- the page


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("qatcmp.report.render.html", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(pct=pct, points=points, interval=interval, pvalue=pvalue, number=number)
    return env


@lru_cache(maxsize=2)
def _asset(name: str) -> str:
    text = resources.files("qatcmp.report.render.html").joinpath("static", name).read_text(encoding="utf-8")
    if re.search(r"</(script|style)", text, re.IGNORECASE):  # it would end its element early
        raise AssertionError(f"{name} must not contain a closing script or style tag")
    return text


def page_data(report: Report, questions: QuestionRows | None) -> dict[str, Any]:
    """What the script needs: the question rows, and each pair's discordant counts from the
    report (shown next to the counts of the filtered rows, which must agree)."""
    if questions is None:
        return {"models": report.models, "benchmarks": []}
    by_name = {b.benchmark: b for b in report.benchmarks}
    benchmarks = []
    for bench in questions.benchmarks:
        reported = by_name.get(bench.benchmark)
        entry = bench.model_dump(mode="json", exclude_none=True)  # absent = none: smaller
        entry["label"] = reported.label if reported else bench.benchmark
        entry["pairs"] = [
            {"a": p.a, "b": p.b, "n": p.n, "a_only": p.a_only, "b_only": p.b_only}
            for p in (reported.pairs if reported else [])
        ]
        benchmarks.append(entry)
    return {"models": questions.models, "benchmarks": benchmarks}


def adaptive_view(report: Report) -> dict[str, Any] | None:
    """An adaptive run's decisions as the page shows them: the same cells and sentences as
    report.md (shared helpers), unescaped here because the template escapes every one."""
    state = report.adaptive
    if state is None:
        return None
    pairs = [
        {
            "decision": pair,
            "cells": pair_cells(pair, as_is),
            "sentence": pair_sentence(pair, state.settings.margin, as_is, plan_gap=state.settings.plan_gap,
                                      futility=state.settings.futility),
            "looks": [look_cells(look) for look in pair.history],
        }
        for pair in state.pairs
    ]
    return {
        "rule": state.stopping_rule,
        "family": family_line(state, as_is),
        "header": PAIR_HEADER,
        "look_header": LOOK_HEADER,
        "pairs": pairs,
        "status": benchmark_status_lines(state, as_is),
        "procedures": procedure_notes(state),
    }


def render_html(
    report: Report,
    questions: QuestionRows | None = None,
    plots: Mapping[str, bytes] | None = None,
) -> str:
    """The whole page as one string: markup, inlined style and script, data, plots."""
    script, style = _asset("app.js"), _asset("style.css")
    images = {
        name: "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        for name, data in (plots or {}).items()
        if data.startswith(b"\x89PNG\r\n\x1a\n")
    }
    adaptive = adaptive_view(report)
    # The interval plot belongs to the adaptive section; the other plots to "Plots".
    adaptive_image = images.pop(ADAPTIVE_PNG, None) if adaptive else None
    title = "qatcmp report" + (f": {Path(report.source).name}" if report.kind == "run" else " (totals only)")
    return _environment().get_template("report.html.j2").render(
        title=title,
        report=report,
        setup=setup_rows(report),
        images=list(images.items()),
        adaptive=adaptive,
        adaptive_image=adaptive_image,
        design_note=design_note(report, markdown=False),
        has_questions=questions is not None and any(b.questions for b in questions.benchmarks),
        data=script_json(page_data(report, questions)),
        csp=content_security_policy(script, style),
        script=Markup(script),
        style=Markup(style),
    )
