"""HumanEval (OpenAI): 164 Python functions to complete, checked by unit tests.

Load, sample, prompt (a chat request for the complete function in a code block).
"""

from __future__ import annotations

from typing import Any

from qatcmp.benchmarks.datasource import HubDataset, LoadedRows, load_rows
from qatcmp.benchmarks.sampling import seeded_order
from qatcmp.errors import DataError
from qatcmp.records import HumanEvalItem

NAME = "humaneval"
HUB = HubDataset(
    id="openai/openai_humaneval",
    revision="7dce6050a7d6d172f3cc5c32aa97f52fa1a2e544",
    split="test",
    option="--humaneval-data",
)
BUILTIN_FILE = "HumanEval.jsonl.gz"

PROMPT_TEMPLATE = (
    "Complete the following Python function. Reply with the complete function, signature and "
    "any imports or helper functions it needs included, in a single ```python code block.\n\n"
    "```python\n{prompt}```"
)


def load(source: str | None) -> tuple[list[HumanEvalItem], LoadedRows]:
    loaded = load_rows(source, HUB, BUILTIN_FILE)
    items = [_item_from_row(row, number) for number, row in enumerate(loaded.rows, start=1)]
    if not items:
        raise DataError(f"{HUB.option}: the dataset has no problems")
    return items, loaded


def _item_from_row(row: dict[str, Any], number: int) -> HumanEvalItem:
    try:
        return HumanEvalItem(
            item_id=str(row["task_id"]),
            prompt=str(row["prompt"]),
            test=str(row["test"]),
            entry_point=str(row["entry_point"]),
            canonical_solution=row.get("canonical_solution"),
        )
    except KeyError as exc:
        raise DataError(
            f"{HUB.option}: row {number} is not a HumanEval problem (missing {exc})"
        ) from None


def _task_number(item: HumanEvalItem) -> str:
    tail = item.item_id.rsplit("/", 1)[-1]
    return tail.zfill(6) if tail.isdigit() else item.item_id


def sample(items: list[HumanEvalItem], n: int, seed: int) -> list[HumanEvalItem]:
    return seeded_order(items, seed, key=_task_number)[:n]


def build_messages(item: HumanEvalItem) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPT_TEMPLATE.format(prompt=item.prompt)}]
