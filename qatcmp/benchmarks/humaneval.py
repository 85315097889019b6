"""HumanEval (OpenAI): 164 Python functions to complete, checked by unit tests.

Load, sample, prompt (a chat request for the complete function in a code block).
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from typing import Any

from qatcmp.benchmarks.datasource import HubDataset, LoadedRows, load_rows
from qatcmp.benchmarks.sampling import seeded_order
from qatcmp.errors import DataError
from qatcmp.records import HumanEvalItem, ScoreRecord, TranscriptRecord
from qatcmp.sandbox import Job, Outcome, Sandbox

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


# --------------------------------------------------------------------------- scoring
#
# Code comes from the final answer (`content`) only, never from the reasoning: code the model
# drafted while thinking is not what it answered.



# An opening fence line: ``` or ~~~ (3 or more), an optional language tag, anything after it.
_FENCE_OPEN = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)")
# Answers longer than this are not searched for code (a real answer is a few KB; this bounds
# the work an answer can cause before the sandbox, which runs only what is extracted).
MAX_ANSWER_CHARS = 1 << 20
# How many shorter prefixes an unfenced answer is parsed as before giving up.
_MAX_PARSE_TRIES = 16
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
# Top-level statements kept from an answer: definitions. Example calls, prints, asserts and
# `if __name__ == "__main__":` demos are left out - they are not the solution.
_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class CodeExtraction:
    completion: str | None  # what follows the prompt (openai/human-eval's "completion")
    rule: str  # fenced_function, fenced_body, bare_function, bare_body, none
    detail: str = ""


def extract_code(content: str, item: HumanEvalItem) -> CodeExtraction:
    """The answer's solution as a completion of the prompt: either whole definitions (the
    prompt's stub is then redefined) or the body of the entry point, indented. Linear in the
    answer's length: every line is looked at a bounded number of times."""
    if len(content) > MAX_ANSWER_CHARS:
        return CodeExtraction(None, "none", f"the answer is longer than {MAX_ANSWER_CHARS:,} characters: not searched for code")
    blocks = [body for tag, body in _fenced_blocks(content) if tag in _PYTHON_TAGS]
    if blocks:
        definitions = _definitions_from_blocks(blocks, item.entry_point)
        if definitions is not None:
            return CodeExtraction(definitions, "fenced_function")
        body = _as_body(blocks[-1])
        if body is not None:
            return CodeExtraction(body, "fenced_body")
        return CodeExtraction(None, "none", "no runnable Python in the code blocks")
    definitions = _definitions_from_blocks([_from_first_def(content, item.entry_point)], item.entry_point)
    if definitions is not None:
        return CodeExtraction(definitions, "bare_function")
    body = _as_body(content) if _looks_like_code(content) else None
    if body is not None:
        return CodeExtraction(body, "bare_body")
    return CodeExtraction(None, "none", "no code block and no Python function in the answer")


def program_for(item: HumanEvalItem, completion: str) -> str:
    """The code that runs: the prompt (its imports and helpers included) then the completion.
    A redefined function simply replaces the prompt's stub, which is valid on its own (a
    docstring is a body)."""
    return item.prompt + completion if item.prompt.endswith("\n") else item.prompt + "\n" + completion


def _fenced_blocks(content: str) -> list[tuple[str, str]]:
    """(tag, code) of every fenced block, in one pass over the lines. A block ends at a line
    holding only the same fence, or at the end of the answer (cut off by the token budget)."""
    lines = content.split("\n")
    blocks = []
    i = 0
    while i < len(lines) - 1:  # an opening fence needs a line after it
        opening = _FENCE_OPEN.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, tag = opening.group(1), opening.group(2).lower()
        end = i + 1
        while end < len(lines) and lines[end].strip(" \t") != fence:
            end += 1
        if end < len(lines):
            body = "".join(line + "\n" for line in lines[i + 1 : end])
        else:
            body = "\n".join(lines[i + 1 :])
        # A block inside a list item is indented as a whole: dedent it.
        blocks.append((tag, textwrap.dedent(body) if body.lstrip("\n")[:1] in (" ", "\t") else body))
        i = end + 1
    return blocks


def _definitions_from_blocks(blocks: list[str], entry_point: str) -> str | None:
    """The definitions of every block that parses, in order (a later definition wins, as
    when an answer shows a draft and then a fix), if one of them defines the entry point."""
    kept: list[str] = []
    defines_entry = False
    for block in blocks:
        if not block.strip():
            continue  # nothing to parse (and an answer of many empty blocks stays cheap)
        tree = _parse(block)
        if tree is None:
            continue
        lines = block.splitlines()
        for node in tree.body:
            if not _is_definition(node, entry_point):
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
                defines_entry = True
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            kept.append("\n".join(lines[start - 1 : node.end_lineno]))
    if not defines_entry:
        return None
    return "\n\n".join(kept) + "\n"


def _is_definition(node: ast.stmt, entry_point: str) -> bool:
    if isinstance(node, _DEFINITIONS):
        return True
    # Module-level constants a solution may use (PRIMES = {...}), but not a call of the
    # solution itself (result = f(...)).
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        return not any(isinstance(n, ast.Name) and n.id == entry_point for n in ast.walk(node))
    return False


def _from_first_def(content: str, entry_point: str) -> str:
    """Unfenced answers: from the first top-level `import`/`def`/`class` line on, the longest
    prefix that parses (prose after the code is dropped)."""
    lines = content.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if re.match(r"(def \w+\s*\(|class \w+|import \w|from \S+ import |@\w)", line)),
        None,
    )
    if start is None or not re.search(rf"^def {re.escape(entry_point)}\s*\(", content, re.MULTILINE):
        return ""
    # Parse, and on a syntax error retry with the lines before it: prose after the code
    # fails at its first line, so one or two parses find the code (trying every prefix,
    # longest first, was quadratic: 15 s for a 457 KB answer).
    end = len(lines)
    for _ in range(_MAX_PARSE_TRIES):
        chunk = "\n".join(lines[start:end])
        try:
            ast.parse(chunk)
            return chunk
        except SyntaxError as exc:
            bad_line = start + (exc.lineno or 1) - 1  # index of the offending line
            end = min(bad_line, end - 1)
        except ValueError:  # a NUL byte
            return ""
        if end <= start:
            return ""
    return ""


def _as_body(code: str) -> str | None:
    """Code that is the function's body: indented under the prompt's signature if needed."""
    code = code.strip("\n")
    if not code.strip():
        return None
    lines = code.splitlines()
    first = next(line for line in lines if line.strip())
    if not first[0].isspace():
        lines = ["    " + line if line.strip() else line for line in lines]
    body = "\n".join(lines) + "\n"
    wrapped = "def _probe():\n" + body
    return body if _parse(wrapped) is not None else None


def _looks_like_code(content: str) -> bool:
    return bool(re.search(r"^\s*(return\b|for .+:|if .+:|while .+:)", content, re.MULTILINE))


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):
        return None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021) from n samples with c correct: 1 - C(n-c,k)/C(n,k),
    as a product so large n does not overflow."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and k >= 1 (got n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass_at_k: k={k} is more than the n={n} samples")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def score_many(
    pairs: list[tuple[TranscriptRecord, HumanEvalItem]], *, sandbox: Sandbox, workers: int | None = None
) -> list[ScoreRecord]:
    """Score transcript records; the code of all of them runs in parallel in the sandbox."""
    results: list[ScoreRecord | None] = []
    to_run: list[tuple[int, Job, CodeExtraction]] = []
    for record, item in pairs:
        early, found = _score_without_running(record, item)
        if early is None and found.completion is not None:
            to_run.append((len(results), Job(program_for(item, found.completion), item.test, item.entry_point, item.prompt), found))
        results.append(early)
    outcomes = sandbox.run_many([job for _, job, _ in to_run], workers=workers)
    for (index, job, found), outcome in zip(to_run, outcomes):
        record, item = pairs[index]
        results[index] = _score_from_outcome(record, item, found, job, outcome)
    return [r for r in results if r is not None]


def score(record: TranscriptRecord, item: HumanEvalItem, *, mode: str = "default", sandbox: Sandbox | None = None) -> ScoreRecord:
    """One record (the same call as mmlu_pro.score; `mode` is about MMLU-Pro letters and
    changes nothing here). To score many, use score_many: it runs them in parallel."""
    return score_many([(record, item)], sandbox=sandbox or Sandbox(), workers=1)[0]


def _score_without_running(record: TranscriptRecord, item: HumanEvalItem) -> tuple[ScoreRecord | None, CodeExtraction]:
    none = CodeExtraction(None, "none")
    base = _score_base(record)
    if not record.ok:
        detail = f"no answer from the server: {record.error_kind or record.error}"
        return ScoreRecord(**base, correct=False, status="server_error", detail=detail), none
    content = record.content or ""
    if not content.strip():
        if record.truncated:
            return ScoreRecord(**base, correct=False, status="truncated",
                               detail="hit the token budget before giving an answer"), none
        return ScoreRecord(**base, correct=False, status="no_code", detail="empty answer"), none
    found = extract_code(content, item)
    if found.completion is None:
        status = "truncated" if record.truncated else "no_code"
        detail = found.detail + ("; hit the token budget" if record.truncated else "")
        return ScoreRecord(**base, correct=False, status=status, detail=detail), found
    return None, found


def _score_from_outcome(
    record: TranscriptRecord, item: HumanEvalItem, found: CodeExtraction, job: Job, outcome: Outcome
) -> ScoreRecord:
    return ScoreRecord(
        **_score_base(record),
        correct=outcome.status == "passed",
        status=outcome.status,  # type: ignore[arg-type]
        extracted=job.program,
        extraction_rule=found.rule,
        detail=outcome.detail,
        run_s=outcome.duration_s,
    )


def _score_base(record: TranscriptRecord) -> dict[str, Any]:
    return ScoreRecord.fields_from(record)
