"""Exports for cross-checking qatcmp's scores with other harnesses.

HumanEval samples as `{"task_id", "completion"}` JSONL: what openai's
`evaluate_functional_correctness` and evalplus read. The completion is the code qatcmp
extracted from the answer, as a continuation of the prompt (a full redefinition of the
function is a valid continuation: the prompt's stub, a docstring, is a body on its own).
Answers without code get an empty completion, so every problem is attempted and fails, as
in qatcmp's own scoring.
"""

from __future__ import annotations

import json
from pathlib import Path

from qatcmp.benchmarks import humaneval
from qatcmp.errors import DataError
from qatcmp.records import HumanEvalItem
from qatcmp.rundir import RunDir, write_text_atomic


def humaneval_samples(rd: RunDir, model: str) -> tuple[list[dict[str, str]], list[HumanEvalItem]]:
    """The samples of one model (in items.jsonl order) and the problems they answer."""
    items = {i.item_id: i for i in rd.read_items() if isinstance(i, HumanEvalItem)}
    records = [t for t in rd.read_transcripts() if t.model == model and t.benchmark == "humaneval"]
    if not records:
        models = sorted({t.model for t in rd.read_transcripts() if t.benchmark == "humaneval"})
        raise DataError(
            f"no HumanEval transcripts of model {model!r} in {rd.path}"
            + (f" (models: {', '.join(models)})" if models else "")
        )
    order = {item_id: n for n, item_id in enumerate(items)}
    records.sort(key=lambda t: (order.get(t.item_id, len(order)), t.sample))
    samples = []
    for record in records:
        item = items.get(record.item_id)
        if item is None:
            raise DataError(f"transcript answers HumanEval item {record.item_id}, which is not in items.jsonl")
        found = humaneval.extract_code(record.content or "", item) if record.ok else None
        completion = found.completion if found and found.completion is not None else ""
        samples.append({"task_id": item.item_id, "completion": completion})
    answered = {s["task_id"] for s in samples}
    return samples, [item for item in items.values() if item.item_id in answered]


def write_humaneval_samples(rd: RunDir, model: str, out: Path, problems_out: Path | None) -> tuple[int, int]:
    samples, problems = humaneval_samples(rd, model)
    write_text_atomic(out, "".join(json.dumps(s) + "\n" for s in samples))
    if problems_out is not None:
        rows = [
            {"task_id": p.item_id, "prompt": p.prompt, "canonical_solution": p.canonical_solution or "",
             "test": p.test, "entry_point": p.entry_point}
            for p in problems
        ]
        write_text_atomic(problems_out, "".join(json.dumps(r) + "\n" for r in rows))
    return len(samples), len(problems)
