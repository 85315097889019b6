#!/usr/bin/env python
"""Full-file acceptance check of the official extraction: import TIGER-Lab's published
MMLU-Pro outputs, score them in `official` mode, and compare with their `pred`, rule by rule.

    .venv/bin/python scripts/check_official_outputs.py [--mode official-strip] FILE.zip [FILE.zip ...]

Exit status 1 if qatcmp's letter differs from a non-null `pred` on any question a rule
decided (rule 1 must always agree; rules 2 and 3 where the published run had them), 2 on a
file that is not TIGER-Lab output.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from qatcmp.errors import QatcmpError
from qatcmp.importers import agreement_with_published_pred, import_tiger_lab_mmlu_pro
from qatcmp.scoring import score_run

RULE_NAMES = {"answer_is": "rule 1 (answer is)", "answer_colon": "rule 2 (answer:)",
              "last_letter": "rule 3 (last letter)", "none": "no rule"}


def check(path: Path, mode: str = "official") -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        rd = import_tiger_lab_mmlu_pro(path, model="published", out=Path(tmp) / "run")
        imported = time.monotonic()
        scores = score_run(rd, mode=mode)
        scored = time.monotonic()
        result = agreement_with_published_pred(rd, scores)
    n = result["records"]
    print(f"{path.name}, {mode} mode: {n} questions (import {imported - started:.1f} s, scoring {scored - imported:.1f} s)")
    counts = result["decided_by_rule"]
    for rule in sorted(counts, key=lambda r: list(RULE_NAMES).index(r) if r in RULE_NAMES else 9):
        count = counts[rule]
        line = f"  {RULE_NAMES.get(rule, rule):<22} {count:>6}  ({count / n:.1%})"
        if rule in result["per_rule"]:
            c = result["per_rule"][rule]
            line += f"   pred equal {c['agree']}, different {c['disagree']}, null {c['pred_null']}"
        else:
            line += "   (pred is their random guess or null: not compared)"
        print(line)
    for example in result["disagreements"]:
        print(f"    {example}")
    print(f"  accuracy: qatcmp {mode} {result['qatcmp_correct'] / n:.2%} (no random guess), "
          f"published pred {result['published_correct'] / n:.2%}")
    return result["disagree"] == 0


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    mode = "official"
    if argv[0] == "--mode" and len(argv) > 2:
        mode, argv = argv[1], argv[2:]
    try:
        ok = all([check(Path(arg), mode) for arg in argv])
    except QatcmpError as exc:
        print(f"check_official_outputs: error: {exc}", file=sys.stderr)
        return 2
    print("OK: every letter a rule decided agrees with the published pred" if ok
          else "FAILED: disagreements above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
