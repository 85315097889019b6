#!/usr/bin/env python
"""Full-file acceptance check of the official extraction: import TIGER-Lab's published
MMLU-Pro outputs, score them in `official` mode, and compare with their `pred`.

    .venv/bin/python scripts/check_official_outputs.py FILE.zip [FILE.zip ...]

Exit status 1 if qatcmp's letter differs from `pred` on any question decided by rule 1.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from qatcmp.importers import agreement_with_published_pred, import_tiger_lab_mmlu_pro
from qatcmp.scoring import score_run


def check(path: Path) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        rd = import_tiger_lab_mmlu_pro(path, model="published", out=Path(tmp) / "run")
        imported = time.monotonic()
        scores = score_run(rd, mode="official")
        scored = time.monotonic()
        result = agreement_with_published_pred(rd, scores)
    n = result["records"]
    print(f"{path.name}: {n} questions (import {imported - started:.1f} s, scoring {scored - imported:.1f} s)")
    for rule, count in result["decided_by_rule"].items():
        print(f"  decided by {rule:<13} {count:>6}  ({count / n:.1%})")
    print(f"  rule 1 letters equal to the published pred: {result['rule1_agree']}, different: {result['rule1_disagree']}")
    for example in result["disagreements"]:
        print(f"    {example}")
    print(f"  accuracy: qatcmp official {result['qatcmp_correct'] / n:.2%} (no random guess), "
          f"published pred {result['published_correct'] / n:.2%}")
    return result["rule1_disagree"] == 0


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    ok = all([check(Path(arg)) for arg in argv])
    print("OK: every rule-1 answer agrees with the published pred" if ok else "FAILED: disagreements above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
