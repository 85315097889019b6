"""End to end: the demo backend (real mlx-lm server, tiny models) → run → score → stats, and
the report's numbers recomputed from the transcripts and scores on disk."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from qatcmp.rundir import RunDir

pytestmark = pytest.mark.server
ANSWER = re.compile(r"answer is \(?([A-J])\)?")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    pytest.importorskip("mlx_lm")
    out = tmp_path_factory.mktemp("e2e") / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "qatcmp", "demo", "--out", str(out), "--mmlu-pro", "8", "--humaneval", "2", "--plain"],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    assert "4bit vs 6bit, MMLU-Pro:" in result.stdout
    return out


def test_report_numbers_match_the_transcripts(demo_run):
    run = RunDir(demo_run)
    transcripts = run.read_transcripts()
    scores = {s.key: s for s in run.read_scores()}
    report = json.loads((demo_run / "report.json").read_text())
    assert report["models"] == ["4bit", "6bit", "8bit"]
    assert [b["benchmark"] for b in report["benchmarks"]] == ["mmlu_pro", "humaneval"]
    for bench in report["benchmarks"]:
        outcome: dict[str, dict[str, bool]] = defaultdict(dict)
        for row in bench["models"]:
            mine = [t for t in transcripts if t.model == row["model"] and t.benchmark == bench["benchmark"]]
            answered = [t for t in mine if t.ok]
            assert row["n"] == len(answered)
            assert row["errors"] == len(mine) - len(answered)
            assert row["truncated"] == sum(t.finish_reason == "length" for t in answered)
            assert row["correct"] == sum(scores[t.key].correct for t in answered)
            tokens = [t.usage.completion_tokens for t in answered if t.usage and t.usage.completion_tokens is not None]
            if tokens:
                assert row["mean_completion_tokens"] == pytest.approx(sum(tokens) / len(tokens))
            for t in answered:
                outcome[row["model"]][t.item_id] = scores[t.key].correct
        for pair in bench["pairs"]:
            shared = set(outcome[pair["a"]]) & set(outcome[pair["b"]])
            a_only = sum(outcome[pair["a"]][q] and not outcome[pair["b"]][q] for q in shared)
            b_only = sum(outcome[pair["b"]][q] and not outcome[pair["a"]][q] for q in shared)
            assert (pair["n"], pair["a_only"], pair["b_only"]) == (len(shared), a_only, b_only)
            assert pair["diff"] == pytest.approx((a_only - b_only) / len(shared))


def test_mmlu_scores_agree_with_a_plain_reading_of_the_answers(demo_run):
    run = RunDir(demo_run)
    answers = {item.item_id: item.answer for item in run.read_items() if item.benchmark == "mmlu_pro"}
    scores = {s.key: s for s in run.read_scores()}
    checked = 0
    for t in run.read_transcripts():
        if t.benchmark != "mmlu_pro" or not t.ok or not t.content:
            continue
        letters = ANSWER.findall(t.content.replace("**", ""))
        if len(letters) == 1:  # one unambiguous "The answer is (X)"
            assert scores[t.key].correct == (letters[0] == answers[t.item_id]), t.content
            checked += 1
    assert checked > 0


def test_stats_command_scores_first_and_takes_a_reference(demo_run):
    before = json.loads((demo_run / "report.json").read_text())
    (demo_run / "scores.jsonl").unlink()  # "scores first if needed"
    result = subprocess.run(
        [sys.executable, "-m", "qatcmp", "stats", str(demo_run), "--reference", "8bit"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (demo_run / "scores.jsonl").is_file()
    report = json.loads((demo_run / "report.json").read_text())
    assert report["reference"] == "8bit"
    for old, new in zip(before["benchmarks"], report["benchmarks"]):
        assert [(m["model"], m["correct"], m["n"]) for m in old["models"]] == [
            (m["model"], m["correct"], m["n"]) for m in new["models"]
        ]
    assert {(p["a"], p["b"]) for b in report["benchmarks"] for p in b["pairs"]} == {("4bit", "8bit"), ("6bit", "8bit")}
    markdown = (demo_run / "report.md").read_text()
    assert "| 4bit |" in markdown and "differences.png" in markdown


def test_the_demo_without_a_sandbox_compares_mmlu_pro_only_and_says_why(tmp_path):
    """Model code never runs unsandboxed, the demo's own included: with no bubblewrap the demo
    leaves HumanEval out with one line on how to get it, and still writes the whole report."""
    pytest.importorskip("mlx_lm")
    import os

    out = tmp_path / "demo"
    env = {**os.environ, "QATCMP_BWRAP": str(tmp_path / "no-bwrap")}
    result = subprocess.run(
        [sys.executable, "-m", "qatcmp", "demo", "--out", str(out), "--mmlu-pro", "4", "--humaneval", "2", "--plain"],
        capture_output=True, text=True, timeout=1500, env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HumanEval left out: no sandbox for model code here (bubblewrap is not installed" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert [b["benchmark"] for b in report["benchmarks"]] == ["mmlu_pro"]
    assert not list((out / "transcripts").glob("*.humaneval.jsonl"))
    assert (out / "report.html").is_file() and "report.html" in result.stdout
