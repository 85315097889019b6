"""`qatcmp demo` end to end (real mlx_lm.server, the hand-built tiny models): an adaptive run in
which 4bit, who knows far fewer of the builtin questions, is decided "different" from both
others within two blocks and stops being asked, while 6bit/8bit (3 points apart by design)
end undecided at the budget. The decided pairs' numbers are recomputed from the transcripts
with a plain reading of the answers, and the designed knowledge is checked answer by answer."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qatcmp.benchmarks import mmlu_pro
from qatcmp.demo import knowledge

pytestmark = pytest.mark.server

BLOCK, BUDGET = 25, 50
ANSWER = re.compile(r"The answer is \(([A-J])\)\.")
ALPHA, PAIRS = 0.05, 3


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    pytest.importorskip("mlx_lm")
    base = tmp_path_factory.mktemp("demo-adaptive")
    out = base / "run"
    result = subprocess.run(
        [sys.executable, "-m", "qatcmp", "demo", "--out", str(out), "--models-dir", str(base / "models"),
         "--mmlu-pro", str(BUDGET), "--block", str(BLOCK), "--humaneval", "0", "--plain"],
        capture_output=True, text=True, timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out, result.stdout


def plain_correctness(out: Path) -> dict[tuple[str, str], bool]:
    """(model, item id) -> right, read from the transcripts with one regular expression."""
    answers = {item.item_id: item.answer for item in mmlu_pro.load("builtin")[0]}
    correct = {}
    for path in (out / "transcripts").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["benchmark"] != "mmlu_pro":
                continue
            assert row["error"] is None, row["error"]
            found = ANSWER.findall(row["content"] or "")
            assert len(found) == 1, row["content"]
            correct[(row["model"], row["item_id"])] = found[0] == answers[row["item_id"]]
    return correct


def test_the_demo_decides_the_clear_pairs_early_and_leaves_the_close_one_open(demo):
    out, stdout = demo
    report = json.loads((out / "report.json").read_text())
    pairs = {(p["a"], p["b"]): p for p in report["adaptive"]["pairs"] if p["benchmark"] == "mmlu_pro"}
    order = next(b["item_ids"] for b in json.loads((out / "manifest.json").read_text())["spec"]["benchmarks"]
                 if b["name"] == "mmlu_pro")
    correct = plain_correctness(out)

    for pair in (("4bit", "6bit"), ("4bit", "8bit")):
        decided = pairs[pair]
        assert decided["decision"] == "different", decided
        n = decided["questions_used"]
        assert n in (BLOCK, 2 * BLOCK)  # after the first block or the second
        d = [correct[(pair[0], q)] - correct[(pair[1], q)] for q in order[:n]]
        assert (decided["a_only"], decided["b_only"]) == (d.count(1), d.count(-1))
        assert decided["diff"] == pytest.approx(sum(d) / n)
        assert decided["diff"] < -0.3  # 4bit is the worse one, by a lot
        assert decided["e_value"] >= PAIRS / ALPHA and decided["p_anytime"] <= ALPHA
        assert [look["decision"] for look in decided["history"]][:-1] == ["undecided"] * (len(decided["history"]) - 1)

    close = pairs[("6bit", "8bit")]
    assert close["decision"] in ("undecided", "equivalent"), close
    assert close["questions_used"] == BUDGET
    lo, hi = close["interval"]
    assert lo < close["diff"] < hi and lo < 0 < hi
    d = [correct[("6bit", q)] - correct[("8bit", q)] for q in order[:BUDGET]]
    assert close["diff"] == pytest.approx(sum(d) / BUDGET)

    # 4bit stopped being asked once both its pairs were decided; the others went on.
    asked = {model: sum(1 for (m, _) in correct if m == model) for model in ("4bit", "6bit", "8bit")}
    assert asked["4bit"] == max(pairs[("4bit", "6bit")]["questions_used"], pairs[("4bit", "8bit")]["questions_used"])
    assert asked["6bit"] == asked["8bit"] == BUDGET

    # Both kinds of verdict, on screen and in report.md.
    assert re.search(r"mmlu_pro +4bit vs 8bit: different after \d+ questions", stdout)
    assert re.search(r"mmlu_pro +6bit vs 8bit: (undecided|equivalent) after 50 questions, .* anytime interval \[", stdout)
    markdown = (out / "report.md").read_text()
    assert "| 4bit vs 8bit | different |" in markdown and "| 6bit vs 8bit | undecided |" in markdown


def test_every_known_question_was_answered_right(demo):
    """The designed knowledge, answer by answer: a variant is right on every question it knows,
    and guesses the others (right about one time in ten)."""
    out, _ = demo
    correct = plain_correctness(out)
    guesses = []
    for (model, item_id), right in correct.items():
        if knowledge.knows(model, item_id):
            assert right, (model, item_id)
        else:
            guesses.append(right)
    assert guesses and sum(guesses) / len(guesses) < 0.35
