"""qatcmp plan: sample sizes and detectable differences, from given numbers or a pilot run."""

from __future__ import annotations

import json

import pytest

from qatcmp.cli import main
from qatcmp.commands.plan import plan_row
from qatcmp.stats import independent_sample_size, paired_mde, paired_sample_size
from test_report_build import make_run, scores_from_wrong


def plan_json(capsys, *argv):
    code = main(["plan", *argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_reference_sizes_from_the_statistics_notes(capsys):
    plan = plan_json(capsys, "--delta", "0.08", "--discordance", "0.10", "--p", "0.9", "--n", "100")
    row = plan["rows"][0]
    assert row["paired_n"] == 121
    assert row["independent_n_per_model"] == 290
    assert row["paired_mde"] == pytest.approx(0.09, abs=0.005)
    assert plan_json(capsys, "--delta", "0.04", "--discordance", "0.20")["rows"][0]["paired_n"] == 979


def test_humaneval_limit_and_what_samples_would_buy(capsys):
    row = plan_json(capsys, "--delta", "0.04", "--discordance", "0.10")["rows"][0]
    assert row["paired_n"] == 489
    humaneval = [n for n in row["notes"] if n.startswith("HumanEval has only 164")]
    assert humaneval and "K >= 3" in humaneval[0] and "buy nothing" in humaneval[0]
    small = plan_json(capsys, "--delta", "0.08", "--discordance", "0.10")["rows"][0]
    assert not any("HumanEval" in n for n in small["notes"])


def test_text_output_names_both_designs(capsys):
    assert main(["plan", "--delta", "0.04", "--discordance", "0.1", "--p", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "489 questions (paired" in out
    assert "or adaptively: qatcmp run --until-decided --plan-gap 0.04 --futility 0.15 with a budget of 978 questions" in out
    assert f"{independent_sample_size(0.9, 0.04)} questions per model" in out


def test_impossible_discordance_is_explained_not_crashed():
    row = plan_row(source="given", discordance=0.02, p=0.5, delta=0.04, alpha=0.05, power=0.8, n=None)
    assert row.paired_n is None
    assert "at least 4% of questions" in row.notes[0]


def test_plan_from_a_pilot_uses_its_discordance(tmp_path, capsys):
    # Pilot: 50 questions; a and b disagree on 10 (4 vs 6).
    shared = set(range(20, 30))
    scores = scores_from_wrong({"a": set(range(0, 6)) | shared, "b": set(range(6, 10)) | shared}, 50, "mmlu_pro")
    run = make_run(tmp_path / "pilot", scores, ["a", "b"])
    plan = plan_json(capsys, "--from", str(run), "--delta", "0.04", "--n", "50")
    row = plan["rows"][0]
    assert (row["a"], row["b"], row["pilot_n"], row["benchmark"]) == ("a", "b", 50, "mmlu_pro")
    assert row["discordance"] == pytest.approx(0.20)
    assert row["paired_n"] == paired_sample_size(0.04, 0.20)
    assert row["paired_mde"] == pytest.approx(paired_mde(50, 0.20))
    # The pilot's mean accuracy for the independent design: (34/50 + 36/50) / 2.
    assert row["p"] == pytest.approx(0.70)
    assert not any("HumanEval" in n for n in row["notes"])


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--discordance", "0.1"], "give --delta"),
        (["--delta", "0.04"], "give --discordance"),
        (["--delta", "4", "--discordance", "0.1"], "--delta must be"),
        (["--delta", "0.04", "--discordance", "0"], "--discordance must be"),
        (["--delta", "0.04", "--discordance", "0.1", "--from", "x"], "not both"),
        (["--delta", "0.04", "--from", "/nonexistent/run"], "not a qatcmp run folder"),
    ],
)
def test_plan_user_errors(capsys, argv, fragment):
    code = main(["plan", *argv])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and "Traceback" not in err


def test_plan_from_a_pilot_with_samples_tells_what_more_samples_buy(tmp_path, capsys):
    from test_report_build import score

    # 40 questions x 4 samples; b is always right; a's answers vary within each question
    # (pass rate 0.5 or 0.75, which samples rotating): mostly noise, so more samples help.
    scores = [
        score("a", q, (q + s) % 4 < (2 if q % 2 else 3), sample=s) for q in range(40) for s in range(4)
    ] + [score("b", q, True, sample=s) for q in range(40) for s in range(4)]
    run = make_run(tmp_path / "pilot", scores, ["a", "b"], samples=4)
    row = plan_json(capsys, "--from", str(run), "--delta", "0.05")["rows"][0]
    assert row["pilot_samples"] == 4
    assert 0 <= row["fixed_share"] < 0.5
    by_samples = row["questions_by_samples"]
    assert list(by_samples) == ["1", "2", "4", "8", "16"]
    assert by_samples["1"] > by_samples["2"] > by_samples["4"] > by_samples["16"]
    assert any("samples per question" in n for n in row["notes"])
    assert not any("tells which" in n for n in row["notes"])  # measured, not guessed
    assert row["p"] == pytest.approx((100 / 160 + 1) / 2)  # all samples, not just the first
