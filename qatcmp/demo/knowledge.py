"""What the tiny demo models "know": fixed, nested subsets of the shipped MMLU-Pro questions.

The knowledge is designed, not learned, and has nothing to do with quantization: it exists so
that `qatcmp demo` has a real difference to find. For each of the 700 builtin questions we pick
a *memory string*: a run of whole words from its text that occurs in exactly one of the 700
prompts as qatcmp sends them (and nowhere in the instruction template, the categories, the
worked-example texts or the HumanEval prompts). Every memory string becomes one added token of
the demo tokenizer, so a prompt holds a memory token if and only if it is that question's.

A variant knows a question when a hash of the question id falls below its knowledge fraction;
the fractions are nested (4bit ⊂ 6bit ⊂ 8bit), so "8bit" and "6bit" are close and "4bit" is far
from both. A known question's memory token carries the direction of its correct letter (see
`qatcmp.demo.weights`); for an unknown question, or any question not in the builtin sample, the
model draws its letter from the variant's LETTER_PROBS as before.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import re
from dataclasses import dataclass

# Fraction of the builtin questions each variant knows. A guess is right ~10% of the time, so
# the expected accuracies are about 4bit 19%, 6bit 73%, 8bit 76%: 4bit is ~55 points from both
# (about 14 one-sided disagreements in a block of 25, where 10 decide a pair of three at
# alpha 0.05: both its pairs decided after the first block in ~90% of seeds and by the second
# in all, simulated over 200 seeds), and 6bit/8bit are 3 points apart, which the demo's
# 75-question budget cannot resolve either way.
KNOWN_FRACTION: dict[str, float] = {"4bit": 0.10, "6bit": 0.70, "8bit": 0.73}

_WORD = re.compile(r"\S+")
MIN_WORDS, MAX_WORDS = 5, 8  # a phrase of the question; longer runs of a duplicate are no use
_SALT = "qatcmp-demo-knowledge:"


@dataclass(frozen=True)
class Memory:
    item_id: str
    text: str  # the memory string: one added token of the demo tokenizer
    answer: str  # the correct letter


def knowledge_hash(item_id: str) -> float:
    """A uniform number in [0, 1) per question id, the same on every machine."""
    digest = hashlib.sha256((_SALT + item_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def knows(variant: str, item_id: str) -> bool:
    """Whether the variant answers this builtin question from knowledge (it needs a memory)."""
    return knowledge_hash(item_id) < KNOWN_FRACTION[variant] and item_id in _memory_ids()


@functools.cache
def _memory_ids() -> frozenset[str]:
    return frozenset(m.item_id for m in memories())


@functools.cache
def memories() -> tuple[Memory, ...]:
    """One memory per builtin question that has a memory string (a question whose text is
    another's too, word for word, has none)."""
    from qatcmp.benchmarks import humaneval, mmlu_pro
    from qatcmp.records import MmluProItem

    # The shipped files, read directly (`datasets` would take longer to import than this
    # whole search takes); the prompts are rendered by the benchmark's own code.
    rows = _builtin_rows(mmlu_pro.BUILTIN_FILE)
    items = [MmluProItem(item_id=str(r["question_id"]), category=r["category"], question=r["question"],
                         options=[str(o) for o in r["options"]], answer=r["answer"]) for r in rows]
    prompts = [mmlu_pro.build_messages(item)[0]["content"] for item in items]
    shared = [mmlu_pro.PROMPT_TEMPLATE, humaneval.PROMPT_TEMPLATE]
    shared += [r.get("cot_content") or "" for r in rows]
    shared += [humaneval.PROMPT_TEMPLATE.format(prompt=r["prompt"]) for r in _builtin_rows(humaneval.BUILTIN_FILE)]
    # A NUL never occurs in the texts, so no match spans two of them.
    corpus = "\x00".join(prompts + shared)
    found = []
    for item in items:
        text = _memory_string(item.question + "\n" + "\n".join(item.options), corpus)
        if text is not None:
            found.append(Memory(item.item_id, text, item.answer))
    return tuple(found)


def _builtin_rows(filename: str) -> list[dict]:
    from qatcmp.benchmarks.datasource import builtin_path

    with gzip.open(builtin_path(filename), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _memory_string(text: str, corpus: str) -> str | None:
    """The first shortest run of whole words of ``text`` that occurs once in ``corpus``."""
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    for length in range(MIN_WORDS, MAX_WORDS + 1):
        for first in range(len(spans) - length + 1):
            candidate = text[spans[first][0]:spans[first + length - 1][1]]
            if "\n" in candidate or "<" in candidate:
                continue
            if _occurs_once(candidate, corpus):
                return candidate
    return None


def _occurs_once(text: str, corpus: str) -> bool:
    # Two finds, not a count: a common phrase is rejected at its second occurrence.
    first = corpus.find(text)
    return first >= 0 and corpus.find(text, first + 1) < 0


def known_items(variant: str) -> dict[str, str]:
    """{item_id: correct letter} of the builtin questions a variant answers from knowledge."""
    return {m.item_id: m.answer for m in memories() if knowledge_hash(m.item_id) < KNOWN_FRACTION[variant]}
