"""The Set-up section of report.md and the header lines: how the numbers were made."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from qatcmp.report.model import Report, Setup, VariantSetup
from qatcmp.report.wording import margin_text


def _row(cells: Iterable[object]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _cell(value: object) -> str:
    """Text from the run folder in a table cell: no line breaks, no column separators."""
    text = "—" if value is None or value == "" else str(value)
    return text.replace("\r", " ").replace("\n", " ").replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    return [_row(header), _row("---" for _ in header), *(_row(r) for r in rows)]


def _sampling(variant: VariantSetup) -> str:
    return ", ".join(f"{k} {v}" for k, v in variant.sampling.items()) or "—"


def _thinking(variant: VariantSetup) -> str:
    return "—" if variant.thinking is None else ("on" if variant.thinking else "off")


def header_lines(report: Report, *, markdown: bool = True) -> list[str]:
    """What a reader must know before the first number: the extraction mode, which models
    and pairs, questions left out."""
    lines = []
    if report.extraction_mode:
        source = report.setup.extraction_mode_source if report.setup else None
        mode = f"**{report.extraction_mode}**" if markdown else report.extraction_mode
        lines.append(f"MMLU-Pro extraction mode: {mode}" + (f" — {source}" if source else "") + ".")
    if report.run_models:
        lines.append(
            f"Models compared: {', '.join(report.models)} (chosen with --models, of "
            f"{', '.join(report.run_models)} in the run); Holm adjusts over their pairs only."
        )
    if report.excluded_items:
        lines.append(
            f"{len(report.excluded_items)} questions are left out of every pair: their text, "
            "options or answer differ between the merged sources."
        )
    return lines


def setup_section(report: Report) -> list[str]:
    setup = report.setup
    if setup is None:
        return []
    out = ["## Set-up", ""]
    out += _table(
        ["model", "server", "server version", "model id", "thinking", "max_tokens", "sampling"],
        [
            [v.model, v.server_url or v.server or (f"imported: {v.imported_from}" if v.imported_from else None),
             v.server_version, v.model_id, _thinking(v), v.max_tokens, _sampling(v)]
            for v in _variants(report, setup)
        ],
    )
    out += [""]
    out += [f"- {d.label}: {d.questions} questions of {d.total_available or '?'}; {d.description}" for d in setup.datasets]
    facts = [
        f"seed {setup.seed}" if setup.seed is not None else None,
        f"{setup.samples} answer{'s' if setup.samples != 1 else ''} per question",
        f"run made by qatcmp {setup.run_qatcmp_version}" if setup.run_qatcmp_version else None,
        f"source: {setup.run_source}" if setup.run_source != "run" else None,
    ]
    out += ["- " + "; ".join(f for f in facts if f)]
    if setup.extraction_mode:
        out += [f"- MMLU-Pro extraction mode: {setup.extraction_mode}, {setup.extraction_mode_source}"]
    if setup.sandbox is not None:
        box = setup.sandbox
        isolation = box.isolation or "not recorded"
        protections = ", ".join(box.protections) if box.protections else "none recorded"
        out += [f"- HumanEval sandbox: isolation {isolation}; protections: {protections}"
                + ("; **scored without isolation (--unsafe-no-isolation)**" if box.unsafe_no_isolation else "")]
    out += [
        f"- alpha {report.alpha}; equivalence margin {margin_text(report.margin)} "
        f"({'qatcmp default; --margin sets another' if report.margin_source == 'default' else 'given with --margin'}); "
        f"sample sizes for a difference of {100 * (report.delta or report.margin):g} points "
        f"({'the margin; --delta sets another' if report.delta_source == 'margin' else 'given with --delta'})"
    ]
    if setup.command:
        command = " ".join(setup.command).replace("`", "'").replace("\n", " ")
        out += [f"- command: `{command}`"]
    out += [f"- run warning: {w}" for w in setup.manifest_warnings]
    return out + [""]


def _variants(report: Report, setup: Setup) -> list[VariantSetup]:
    chosen = set(report.models)
    return [v for v in setup.variants if v.model in chosen]
