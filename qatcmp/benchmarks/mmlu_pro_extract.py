"""MMLU-Pro answer extraction: which letter an answer gives, in each extraction mode.

Modes:

- ``official``: TIGER-Lab's cascade as in the scripts that produced their published outputs -
  rule 1 ``answer is \\(?([A-J])\\)?`` (first match), rule 2 ``.*[aA]nswer:\\s*([A-J])``, rule 3
  the last standalone capital A-J (``\\b[A-J]\\b(?!.*\\b[A-J]\\b)``, DOTALL). Nothing removed from
  the text first, and no random guess when nothing matches (counted wrong, rule ``none``).
- ``official-strip``: the same after removing ``**``, as only TIGER-Lab's newest script does
  (it changes the rule on 142 and the letter on 14 of Qwen1.5-7B-Chat's published answers).
- ``default``: the letter a human reader would take as the answer (see `extract_default`).

Only the final answer is given to these functions, never the reasoning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LETTERS = "ABCDEFGHIJ"
EXTRACT_MODES = ("default", "official", "official-strip")
# The two modes every report is scored in; `official-strip` is there for comparisons with
# harnesses that follow TIGER-Lab's newest script.
MAIN_MODES = ("default", "official")


@dataclass(frozen=True)
class Extraction:
    letter: str | None
    rule: str  # which rule matched, "none" if nothing did
    detail: str = ""


# --------------------------------------------------------------------------- official

_OFFICIAL_ANSWER_IS = re.compile(r"answer is \(?([A-J])\)?")
_OFFICIAL_ANSWER_COLON_PUBLISHED = re.compile(r".*[aA]nswer:\s*([A-J])")
# Rule 2 as published backtracks over every start position: quadratic on long lines (a
# repeating answer of 20,000 characters takes minutes). Its result is the first line holding
# an "answer: X" and, on it, the last one (the greedy `.*` stops at a newline; `\s*` may
# cross one). The lookahead finds every occurrence, overlapping ones too.
_ANSWER_COLON_ANYWHERE = re.compile(r"(?=[aA]nswer:\s*([A-J]))")
# Rule 3 as published is `\b[A-J]\b(?!.*\b[A-J]\b)` with DOTALL: the leftmost standalone
# letter with none after it, i.e. the last one (each is one character, so the matches of
# `\b[A-J]\b` cannot overlap). Taking the last match gives the same letter in linear time.
_OFFICIAL_LAST_LETTER_PUBLISHED = re.compile(r"\b[A-J]\b(?!.*\b[A-J]\b)", re.DOTALL)
_STANDALONE_LETTER = re.compile(r"\b[A-J]\b")


def extract_official(text: str, *, strip_bold: bool = False) -> Extraction:
    """TIGER-Lab's cascade exactly, in linear time: rule 1 first match, then rule 2, then the
    last standalone capital A-J. No random guess when nothing matches."""
    if strip_bold:
        text = text.replace("**", "")
    match = _OFFICIAL_ANSWER_IS.search(text)
    if match:
        return Extraction(match.group(1), "answer_is")
    letter = _official_answer_colon(text)
    if letter:
        return Extraction(letter, "answer_colon")
    last = None
    for last in _STANDALONE_LETTER.finditer(text):
        pass
    if last:
        return Extraction(last.group(0), "last_letter")
    return Extraction(None, "none", "no letter found")


def _official_answer_colon(text: str) -> str | None:
    first = _ANSWER_COLON_ANYWHERE.search(text)
    if first is None:
        return None
    line_end = text.find("\n", first.start())
    if line_end < 0:
        line_end = len(text)
    letter = first.group(1)
    # No endpos at the line's end: `\s*` may go on past it.
    for match in _ANSWER_COLON_ANYWHERE.finditer(text, first.start() + 1):
        if match.start() >= line_end:
            break
        letter = match.group(1)
    return letter


def extract_official_published(text: str, *, strip_bold: bool = False) -> Extraction:
    """The cascade with the published regular expressions verbatim (slow on long answers):
    the reference the fast version is tested against."""
    if strip_bold:
        text = text.replace("**", "")
    for rule, pattern in (("answer_is", _OFFICIAL_ANSWER_IS), ("answer_colon", _OFFICIAL_ANSWER_COLON_PUBLISHED)):
        match = pattern.search(text)
        if match:
            return Extraction(match.group(1), rule)
    match = _OFFICIAL_LAST_LETTER_PUBLISHED.search(text)
    if match:
        return Extraction(match.group(0), "last_letter")
    return Extraction(None, "none", "no letter found")


# --------------------------------------------------------------------------- default

# A letter counts only when it stands alone: "(C)", "C", "C.", "C:" - never the first letter
# of a word ("Actually", "Both"). A bare "A"/"I" followed by a lowercase word is the article
# or the pronoun ("the answer is I think...").
_LETTER = (
    r"(?!(?:A|I)\s+(?!is\b|was\b|because\b|since\b|as\b|and\b|seems\b|appears\b)[a-z])"
    r"\(?\[?([A-J])\]?\)?(?![A-Za-z0-9])"
)
_PAREN_LETTER = r"\(([A-J])\)(?![A-Za-z0-9])"
_OPTION_WORD = r"(?:option\s+|choice\s+|answer\s+)?"
# Within one line: "J is\n(H) means" is not a statement that the answer is (H).
_IS = r"\b(?:is|are|would\s+be|should\s+be|must\s+be)[ \t]*:?[ \t]*"

# Answer statements: the model says which letter is its answer.
_STATEMENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("boxed", re.compile(r"\\boxed\{\s*(?:\\text(?:bf)?\{)?\s*\(?([A-J])\)?\s*\}")),
    (
        "answer_is",
        re.compile(
            r"answer\s+(?:is|would\s+be|should\s+be|must\s+be)\s*"
            r"(?:therefore\s+|thus\s+|clearly\s+|likely\s+|probably\s+|definitely\s+)?"
            r":?\s*(?:option\s+|choice\s+)?"
            + _LETTER,
            re.IGNORECASE,
        ),
    ),
    (
        "answer_colon",
        re.compile(r"\banswer\s*(?:\(?[A-J]-[A-J]\)?)?\s*[:：]\s*(?:option\s+|choice\s+)?" + _LETTER, re.IGNORECASE),
    ),
    (
        "option_is",
        re.compile(r"\b(?:correct|right|best)\s+(?:option|choice)\s+is\s*:?\s*" + _LETTER, re.IGNORECASE),
    ),
    (
        "option_is_correct",
        re.compile(
            r"\b(?:option|choice)\s+\(?([A-J])\)?\s+(?:is|would\s+be)\s+(?:the\s+)?(?:correct|right|best)",
            re.IGNORECASE,
        ),
    ),
)
# Conclusions: phrasings chat models use instead of an answer statement (found in TIGER-Lab's
# published outputs, e.g. 341 "The closest option is (F)" among Qwen1.5-7B-Chat's answers
# with no answer statement). They are read only when there is no answer statement at all,
# so they never override one; the general forms need the letter in parentheses.
_CONCLUSIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        # "The closest option is (A)", "the nearest match is B", "closest to option (G)"
        "closest_option",
        re.compile(
            r"\b(?:closest|nearest)\b(?:\s+(?:option|choice|answer|match)\b[^.\n]{0,40}?" + _IS + _OPTION_WORD
            + _LETTER + r"|[^.\n]{0,40}?" + _IS + _OPTION_WORD + _PAREN_LETTER
            + r"|\s+to\s+(?:option\s+|choice\s+)?" + _PAREN_LETTER + r"|\s+to\s+(?:option|choice)\s+" + _LETTER + ")",
            re.IGNORECASE,
        ),
    ),
    (
        # "This corresponds to option (C)", "which matches option E", "which is option (B)"
        "corresponds_to_option",
        re.compile(
            r"\b(?:corresponds?\s+to|corresponding\s+to|matches|match\s+with|which\s+is|this\s+is|that\s+is)\s+"
            r"(?:(?:option|choice)\s+" + _LETTER + "|" + _PAREN_LETTER + ")",
            re.IGNORECASE,
        ),
    ),
    (
        # "the correct statement is (B)", "the most likely diagnosis is (B)", "The answer that
        # best fits this description is (B)", "The only option that satisfies this is (C)"
        "conclusion_is",
        re.compile(
            r"\b(?:correct|right|true|best|most\s+[a-z]+|strongest|only\s+(?:option|choice|answer))\b"
            r"[^.\n()]{0,60}?" + _IS + r"(?:option\s+|choice\s+)?" + _PAREN_LETTER,
            re.IGNORECASE,
        ),
    ),
    (
        # "Therefore, (G) is the correct answer", "(C) is the best option"
        "letter_is_correct",
        re.compile(
            _PAREN_LETTER + r"\s+(?:is|would\s+be)\s+the\s+(?:correct|right|best|most\s+appropriate)\s+"
            r"(?:answer|option|choice|response)\b",
            re.IGNORECASE,
        ),
    ),
)
# Each pattern needs one of these words: texts without them are not scanned for it.
_KEYWORDS = {
    "boxed": ("\\boxed",),
    "answer_is": ("answer",),
    "answer_colon": ("answer",),
    "option_is": ("option", "choice"),
    "option_is_correct": ("option", "choice"),
    "closest_option": ("closest", "nearest"),
    "corresponds_to_option": ("correspond", "match", " is"),
    "conclusion_is": (" is", " are", " be"),
    "letter_is_correct": (") is", ") would"),
}
# A last line that is only a letter: "(C)", "**C**", "C." - not "C. 42 m/s", which is as
# likely the end of a list of options copied out as an answer.
_FINAL_LINE_LETTER = re.compile(r"^\s*(?:[-*>#]+\s*)?\(?([A-J])\)?[.:]?\s*$")
_NEW_QUESTION = re.compile(r"\n\s*Question:")

Candidate = tuple[int, str, str]  # (position, letter, rule)


def extract_default(text: str, n_options: int = 10) -> Extraction:
    """The letter a human reader would take as the answer: the last explicit answer statement
    ("The answer is (X)", "Answer: X", a boxed letter); without one, the last conclusion
    ("The closest option is (X)", "corresponds to option (X)", "the correct statement is
    (X)") or a last line that is just a letter. Letters beyond the question's options are
    not answers."""
    valid = LETTERS[:n_options]
    text = _plain(text)
    lowered = text.lower()
    candidates = _before_a_new_question(text, _find(text, lowered, _STATEMENTS))
    if not candidates:
        candidates = _before_a_new_question(text, _find(text, lowered, _CONCLUSIONS))
        letter = _final_line_letter(text)
        if letter:
            candidates.append((len(text), letter, "final_line_letter"))
    if not candidates:
        return Extraction(None, "none", "no answer statement found")
    in_range = [c for c in candidates if c[1] in valid]
    if not in_range:
        letters = ", ".join(sorted({c[1] for c in candidates}))
        return Extraction(None, "none", f"letter {letters} beyond the {n_options} options")
    _, letter, rule = max(in_range, key=lambda c: c[0])
    return Extraction(letter, rule)


def _find(text: str, lowered: str, patterns: tuple[tuple[str, re.Pattern[str]], ...]) -> list[Candidate]:
    found: list[Candidate] = []
    for rule, pattern in patterns:
        if any(word in lowered for word in _KEYWORDS[rule]):  # a scan of the text costs
            found.extend((m.start(), next(g for g in m.groups() if g), rule) for m in pattern.finditer(text))
    return found


def _before_a_new_question(text: str, candidates: list[Candidate]) -> list[Candidate]:
    """A model that goes on to write a "Question:" of its own after answering (base models
    copying the few-shot format do) has finished its answer there: statements after it
    answer the invented question."""
    for match in _NEW_QUESTION.finditer(text):
        before = [c for c in candidates if c[0] < match.start()]
        if before:
            return before
    return candidates


def _plain(text: str) -> str:
    """Markdown and LaTeX dressing removed: **(C)**, __C__, $\\textbf{C}$, `C`."""
    text = text.replace("**", "").replace("__", "").replace("`", "")
    text = re.sub(r"\\text(?:bf|rm)?\{([^{}]*)\}", r"\1", text)
    return text.replace("$", "")


def _final_line_letter(text: str) -> str | None:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    match = _FINAL_LINE_LETTER.match(lines[-1])
    return match.group(1) if match else None


def extract(text: str, *, mode: str, n_options: int = 10) -> Extraction:
    if mode == "official":
        return extract_official(text)
    if mode == "official-strip":
        return extract_official(text, strip_bold=True)
    if mode == "default":
        return extract_default(text, n_options)
    raise ValueError(f"unknown extraction mode {mode!r} (use one of {', '.join(EXTRACT_MODES)})")
