"""qatcmp import: published model outputs -> a qatcmp run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from qatcmp.importers import import_tiger_lab_mmlu_pro

FORMATS = ("mmlu-pro-official",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="turn published outputs (TIGER-Lab MMLU-Pro) into a run folder",
        description="mmlu-pro-official: TIGER-Lab's published MMLU-Pro outputs (the .zip as "
        "published, or the .json inside) become a run folder that `qatcmp score` and "
        "`qatcmp stats` treat like any other. Their `pred` is kept on each transcript record.",
    )
    p.add_argument("format", choices=FORMATS)
    p.add_argument("file", type=Path)
    p.add_argument("--model", required=True, help="the name the model gets in the run")
    p.add_argument("--out", required=True, type=Path, help="the run folder to write (runs/NAME)")
    p.add_argument("--force", action="store_true", help="replace a run already in --out")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    rd = import_tiger_lab_mmlu_pro(args.file, model=args.model, out=args.out, force=args.force)
    items = rd.read_manifest().spec.benchmarks[0].item_ids
    print(f"imported {len(items)} MMLU-Pro answers of {args.model} into {rd.path}")
    print(f"next: qatcmp score {rd.path} --extract official")
    return 0
