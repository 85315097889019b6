"""`qatcmp run --until-decided --plan-gap G --futility β` against the local server with known
per-question correctness: the pair with no true difference stops "below-plan" and its two
variants are asked no further, every pair's decision point and futility capital are recomputed
here from the raw transcripts with exact rationals, the report says what the stop means, and
bad or changed futility settings are one-line errors."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from known_answers_server import KnownAnswersServer
from qatcmp.cli import main
from test_adaptive_plan_gap import planned_max_e
from test_adaptive_run import ALPHA, BLOCK, RULES, SEED, config_text, independent_correctness
from test_futility_stats import exact_capitals

PLAN, BETA, BUDGET = Fraction(1, 5), Fraction(1, 5), 200


@pytest.fixture()
def server():
    with KnownAnswersServer(RULES, run_seed=SEED) as srv:
        yield srv


def command(config, out, futility=BETA):
    return ["run", "--config", str(config), "--out", str(out), "--mmlu-pro", str(BUDGET), "--mmlu-pro-data", "builtin",
            "--seed", str(SEED), "--until-decided", "--block", str(BLOCK), "--margin", "0", "--plain",
            "--plan-gap", str(float(PLAN)), "--futility", str(float(futility))]


def futility_level(d: list[int]) -> list[Fraction]:
    ups, downs = exact_capitals([Fraction(x) for x in d], PLAN)
    out, best_up, best_down = [], Fraction(0), Fraction(0)
    for u, w in zip(ups, downs):
        best_up, best_down = max(best_up, u), max(best_down, w)
        out.append(min(best_up, best_down))
    return out


def test_the_pair_without_a_difference_stops_below_plan(server, tmp_path, capsys):
    config = tmp_path / "servers.yaml"
    config.write_text(config_text(server.base_url))
    out = tmp_path / "run"
    assert main(command(config, out)) == 0
    state = json.loads((out / "adaptive.json").read_text())
    assert state["settings"]["futility"] == pytest.approx(0.2) and state["finished"]
    assert "'below-plan' once gaps of ±20 points or more are rejected at level 0.2" in state["stopping_rule"]
    order = json.loads((out / "manifest.json").read_text())["spec"]["benchmarks"][0]["item_ids"]
    correct = independent_correctness(out)
    m = len(state["pairs"])
    threshold = Fraction(m) / Fraction(ALPHA).limit_denominator()
    decisions = {}
    for pair in state["pairs"]:
        n = pair["questions_used"]
        d = [int(correct[(pair["a"], q)]) - int(correct[(pair["b"], q)]) for q in order[:n]]
        e_path, level = planned_max_e(d, PLAN), futility_level(d)
        # The first block end where either rule fires decides, "different" taking precedence.
        expected = "undecided"
        for k in range(BLOCK, len(d) + 1, BLOCK):
            if e_path[k - 1] >= threshold:
                expected = "different"
            elif level[k - 1] >= 1 / BETA:
                expected = "below-plan"
            if expected != "undecided":
                assert k == n, f"{pair['a']} vs {pair['b']} decided at {n}, the rules say {k}"
                break
        assert pair["decision"] == expected
        assert pair["futility_capital"] == pytest.approx(float(level[-1]), rel=1e-9)
        decisions[(pair["a"], pair["b"])] = (expected, n)
    assert decisions[("ref", "close")][0] == "below-plan"
    assert decisions[("ref", "bad")][0] == decisions[("close", "bad")][0] == "different"
    # Once its pairs are decided a variant is not asked again: each variant answered exactly up
    # to its last pair's decision.
    asked = {name: sum(1 for model, _ in server.requests if model == name) for name in RULES}
    for name in RULES:
        assert asked[name] == max(n for pair, (_, n) in decisions.items() if name in pair), name
    assert max(asked.values()) < BUDGET
    # The report says what the stop means, and what it does not.
    assert main(["stats", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "ref vs close, MMLU-Pro" in report and "below the plan: gaps of ±20 points or more are rejected at level 0.2" in report
    assert "not evidence of equivalence" in report
    assert "a far looser level than the interval's α/m" in report  # why the interval still reaches past it
    data = json.loads((out / "report.json").read_text())
    assert {p["decision"] for p in data["adaptive"]["pairs"]} == {"different", "below-plan"}
    assert data["adaptive"]["pairs"] == state["pairs"]  # recomputed from the transcripts: the same
    assert not any("disagrees" in w for w in data["warnings"])
    assert "decision-below-plan" in (out / "report.html").read_text()
    # Resuming under another futility level would choose the rule after seeing the data.
    capsys.readouterr()
    assert main(command(config, out, futility=Fraction(1, 10))) == 2
    err = capsys.readouterr().err
    assert "--futility 0.2" in err and "same settings" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (["--until-decided", "--plan-gap", "0"], "--plan-gap must be above 0"),
    (["--until-decided", "--plan-gap", "nan"], "--plan-gap must be above 0"),
    (["--plan-gap", "0.04"], "--plan-gap is an option of adaptive runs"),
    (["--until-decided", "--futility", "0.2"], "--futility needs --plan-gap"),
    (["--until-decided", "--plan-gap", "0.05", "--futility", "0.7"], "--futility must be above 0"),
    (["--until-decided", "--plan-gap", "0.05", "--futility", "nan"], "--futility must be above 0"),
    (["--futility", "0.2"], "--futility is an option of adaptive runs"),
])
def test_bad_plan_and_futility_settings_are_one_line_errors(server, tmp_path, capsys, extra, message):
    config = tmp_path / "servers.yaml"
    config.write_text(config_text(server.base_url))
    base = ["run", "--config", str(config), "--out", str(tmp_path / "run"), "--mmlu-pro", "50",
            "--mmlu-pro-data", "builtin", "--plain"]
    assert main([*base, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert server.requests == []


def test_two_answers_per_question_go_through_the_same_rules(server, tmp_path):
    # --samples 2: the pairs work on per-question mean differences; every question of a
    # variant is asked twice, and the report's recomputation agrees with adaptive.json.
    config = tmp_path / "servers.yaml"
    config.write_text(config_text(server.base_url))
    out = tmp_path / "run"
    assert main([*command(config, out), "--samples", "2"]) == 0
    state = json.loads((out / "adaptive.json").read_text())
    assert state["samples"] == 2 and state["finished"]
    decisions = {(p["a"], p["b"]): p for p in state["pairs"]}
    assert decisions[("ref", "close")]["decision"] == "below-plan"
    asked = {name: sum(1 for model, _ in server.requests if model == name) for name in RULES}
    for name in RULES:
        assert asked[name] == 2 * max(p["questions_used"] for k, p in decisions.items() if name in k)
    assert main(["stats", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["adaptive"]["pairs"] == state["pairs"]
    assert not any("disagrees" in w for w in report["warnings"])
