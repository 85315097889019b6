"""qatcmp import: published model outputs -> a qatcmp run folder, or one more model in one."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from qatcmp.importers import ImportResult, import_outputs, questions_text

FORMATS = ("mmlu-pro-official",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="turn published outputs (TIGER-Lab MMLU-Pro) into a run folder, or add them to one",
        description="mmlu-pro-official: TIGER-Lab's published MMLU-Pro outputs (the .zip as "
        "published, or the .json inside) become a model of a run folder that `qatcmp score` and "
        "`qatcmp stats` treat like any other. Their `pred` is kept on each transcript record. "
        "If --out already holds a run (another import, or `qatcmp run`), the model is added to it: "
        "questions are matched by content, and questions whose text, options or answer differ "
        "between the sources are left out of every comparison.",
    )
    p.add_argument("format", choices=FORMATS)
    p.add_argument("file", type=Path)
    p.add_argument("--model", required=True, help="the name the model gets in the run")
    p.add_argument("--out", required=True, type=Path, help="the run folder to write or add to (runs/NAME)")
    p.add_argument("--force", action="store_true", help="replace this model's answers if the run already has them")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    result = import_outputs(args.file, model=args.model, out=args.out, force=args.force)
    for line in summary_lines(result):
        print(line)
    return 0


def summary_lines(result: ImportResult) -> list[str]:
    run = shlex.quote(str(result.run_dir.path))
    verb = "replaced" if result.replaced else "imported"
    lines = [f"{verb} {result.imported} MMLU-Pro answers of {result.model} into {result.run_dir.path}"
             + (f" (models: {', '.join(result.models)})" if result.merged else "")]
    if result.excluded:
        ids = ", ".join(e.item_id for e in result.excluded[:8]) + (" …" if len(result.excluded) > 8 else "")
        lines.append(f"warning: {questions_text(len(result.excluded))} differ in text, options or answer from the run's "
                     f"copy (another dataset revision): left out of every comparison ({ids}; "
                     "listed in manifest.json, excluded_items)")
    if result.skipped:
        lines.append(f"note: {result.skipped} questions of the file are not in this run's question set: not imported")
    if result.merged and (result.only_in_file - result.skipped or result.only_in_run):
        lines.append(f"note: {result.only_in_file - result.skipped} questions new to the run, "
                     f"{result.only_in_run} of the run's questions not in the file: "
                     "a pair compares only the questions both models answered")
    lines.append(f"next: qatcmp stats {run}   (or first: qatcmp score {run} --extract official)")
    return lines
