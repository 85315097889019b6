#!/usr/bin/env python
"""How a change to the `default` extraction changes its letters on real answers.

    .venv/bin/python scripts/compare_extraction.py [--baseline REF] [--samples N] FILE.zip ...

FILE: TIGER-Lab's published MMLU-Pro outputs (the .zip or the .json inside). The baseline is
`extract_default` as it was at git revision REF (default d2a2e66, before issue 9), read with
`git show`; the current one is this worktree's. Every answer whose letter changes is
counted by kind (newly found, lost, different letter) and by the rule that now decides it, and
N of each kind are printed with the sentence that decided, so each change can be judged.
A second table compares the current `default` with `official`.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

from qatcmp.benchmarks.mmlu_pro_extract import extract_default, extract_official
from qatcmp.importers import read_tiger_lab_outputs

ROOT = Path(__file__).resolve().parent.parent


def baseline_default(ref: str):
    """`extract_default` of an earlier revision, loaded from its source."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:qatcmp/benchmarks/mmlu_pro.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(f"baseline_mmlu_pro_{ref}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{ref}:mmlu_pro.py", "exec"), module.__dict__)  # our own code, from git
    return module.extract_default


def context(text: str, letter: str | None) -> str:
    """The end of the answer around its last mention of the letter, on one line."""
    text = text.split("\nQuestion:")[0]
    spot = len(text)
    if letter:
        found = list(re.finditer(rf"\b{letter}\b", text))
        spot = found[-1].end() if found else spot
    return text[max(0, spot - 110): spot + 30].replace("\n", " / ")


def compare(path: Path, old, samples: int, rng: random.Random) -> None:
    rows = read_tiger_lab_outputs(path)
    kinds: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    versus_official: Counter[str] = Counter()
    for row in rows:
        text, n = row.get("generated_text") or "", len(row.get("options") or []) or 10
        before, now = old(text, n), extract_default(text, n)
        official = extract_official(text)
        versus_official["same letter" if now.letter == official.letter else
                        f"default {'none' if now.letter is None else 'letter'}, official "
                        f"{'none' if official.letter is None else 'other letter'}"] += 1
        if before.letter == now.letter:
            continue
        kind = ("found" if before.letter is None else "lost" if now.letter is None else "changed")
        kind = f"{kind} by {now.rule if now.letter else before.rule}"
        kinds[kind] += 1
        right = "right" if now.letter == row.get("answer") else "wrong"
        examples.setdefault(kind, []).append(
            f"    {row['question_id']}: {before.letter} -> {now.letter} ({right}; answer {row.get('answer')}) "
            f"…{context(text, now.letter or before.letter)}"
        )
    print(f"{path.name}: {len(rows)} answers, {sum(kinds.values())} letters changed against the baseline")
    for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<40} {count:>5}")
        for line in rng.sample(examples[kind], min(samples, len(examples[kind]))):
            print(line)
    print("  current default vs official:")
    for kind, count in sorted(versus_official.items(), key=lambda kv: -kv[1]):
        print(f"    {kind:<40} {count:>5}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--baseline", default="d2a2e66", help="git revision of the baseline extract_default")
    parser.add_argument("--samples", type=int, default=5, help="examples printed per kind of change")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    old = baseline_default(args.baseline)
    rng = random.Random(args.seed)
    for path in args.files:
        compare(path, old, args.samples, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
