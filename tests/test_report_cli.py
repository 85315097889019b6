"""qatcmp stats from the command line: a run folder, totals only, and one-line errors."""

from __future__ import annotations

import json

import pytest

from qatcmp.cli import main
from test_report_build import MOTIVATING_WRONG, make_run, scores_from_wrong

MOTIVATING_COUNTS = "humaneval:6bit=98/100,qat8=90/100,4bit=90/100;mmlu_pro:4bit=28/50,6bit=29/50,qat8=26/50"


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_on_a_run_writes_the_report_and_prints_the_sentences(tmp_path, capsys):
    run = make_run(tmp_path / "run", scores_from_wrong(MOTIVATING_WRONG, 100), ["6bit", "qat8", "4bit"])
    code, out, _ = run_cli(capsys, "stats", str(run), "--reference", "qat8", "--margin", "0.03")
    assert code == 0
    assert "6bit vs qat8, HumanEval: +8.0 points" in out
    assert "4bit vs qat8, HumanEval: +0.0 points" in out
    assert "Wrote report.md, report.json, accuracy.png, differences.png" in out
    data = json.loads((run / "report.json").read_text())
    assert data["reference"] == "qat8" and data["margin"] == 0.03
    assert [(p["a"], p["b"]) for p in data["benchmarks"][0]["pairs"]] == [("6bit", "qat8"), ("4bit", "qat8")]


def test_stats_json_output_is_the_report(tmp_path, capsys):
    run = make_run(tmp_path / "run", scores_from_wrong({"a": {1}, "b": {2, 3}}, 20), ["a", "b"])
    code, out, _ = run_cli(capsys, "stats", str(run), "--json")
    assert code == 0
    assert json.loads(out) == json.loads((run / "report.json").read_text()) | {"created_at": json.loads(out)["created_at"]}


def test_counts_reproduce_the_reference_numbers(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "stats", "--counts", MOTIVATING_COUNTS, "--out", str(tmp_path / "c"))
    assert code == 0
    data = json.loads((tmp_path / "c" / "report.json").read_text())
    assert data["kind"] == "counts"
    humaneval = data["benchmarks"][0]
    six = humaneval["models"][0]
    assert (six["model"], six["correct"], six["n"]) == ("6bit", 98, 100)
    assert six["ci95"] == pytest.approx([0.930, 0.994], abs=5e-4)
    assert six["truncated"] is None
    pair = humaneval["pairs"][0]
    assert (pair["a"], pair["b"]) == ("6bit", "qat8")
    assert pair["z_test_p"] == pytest.approx(0.0172, abs=5e-5)
    assert pair["chi2_yates_p"] == pytest.approx(0.0371, abs=5e-5)
    assert pair["fisher_p"] == pytest.approx(0.0330, abs=5e-5)
    for key in ("n", "a_only", "b_only", "diff_ci95", "mcnemar_exact_p", "mcnemar_midp_p", "p_holm", "flips", "equivalent"):
        assert pair[key] is None, key
    mmlu = data["benchmarks"][1]
    assert mmlu["models"][1]["ci95"] == pytest.approx([0.442, 0.706], abs=5e-4)
    assert "per-question" in " ".join(data["notes"])
    # The sentence gives what pairing could show: mid-p 0.004 (8 disagreements, all one way)
    # to 0.022 (9 vs 1 would be 0.012; 10 vs 2 is the most disagreement possible).
    assert "between 0.004 and 0.022" in pair["sentence"]
    assert "(8 to 12)" in pair["sentence"]
    assert "| 6bit | 98.0% (98/100) | [93.0, 99.4] | — | 58.0% (29/50) | [44.2, 70.6] | — |" in (tmp_path / "c" / "report.md").read_text()


def test_counts_without_out_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "stats", "--counts", "humaneval:a=98/100,b=90/100")
    assert code == 0 and "z-test p = 0.017" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["stats"], "give a run folder"),
        (["stats", "--counts", "humaneval:a=101/100"], "correct must be between"),
        (["stats", "--counts", "humaneval:a=9/10,a=8/10"], "given twice"),
        (["stats", "--counts", "humaneval a=9/10"], "should look like"),
        (["stats", "--counts", "humaneval:a=9/10", "--alpha", "2"], "--alpha"),
        (["stats", "--counts", "humaneval:a=9/10,b=8/10", "--reference", "c"], "--reference c"),
    ],
)
def test_user_errors_are_one_line(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("qatcmp: error: ") and fragment in err and err.count("\n") == 1
    assert "Traceback" not in out + err


def test_unknown_reference_and_missing_run(tmp_path, capsys):
    run = make_run(tmp_path / "run", scores_from_wrong({"a": {1}, "b": {2}}, 10), ["a", "b"])
    code, _, err = run_cli(capsys, "stats", str(run), "--reference", "zz")
    assert code == 2 and "--reference zz" in err
    code, _, err = run_cli(capsys, "stats", str(tmp_path / "nope"))
    assert code == 2 and "not a qatcmp run folder" in err
