"""`qatcmp run --until-decided --plan-gap G` against the local server with known per-question
correctness: the plan is recorded and named in the stopping rule, every pair's e-value and
decision point are recomputed here from the raw transcripts with exact rationals (the planned
bet written out independently), and a resume with another plan is refused."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest

from known_answers_server import KnownAnswersServer
from qatcmp.cli import main
from test_adaptive_run import ALPHA, BLOCK, RULES, SEED, config_text, independent_correctness

PLAN = Fraction(1, 10)


def planned_max_e(d: list[int], gap: Fraction) -> list[Fraction]:
    """Running maximum after each question of 1/4 · 2^n b! c!/(n+1)! + 3/4 · (W+ + W-)/2, the bet
    on question i being min(G · (i + 1) / (discordant before i + 1), 9/10)."""
    out, best, up, down, b, c = [], Fraction(1), Fraction(1), Fraction(1), 0, 0
    for i, x in enumerate(d, start=1):
        bet = min(gap * (i + 1) / (b + c + 1), Fraction(9, 10))
        up, down = up * (1 + bet * x), down * (1 - bet * x)
        b, c = b + (x > 0), c + (x < 0)
        mix = Fraction(2 ** (b + c) * math.factorial(b) * math.factorial(c), math.factorial(b + c + 1))
        best = max(best, mix / 4 + 3 * (up + down) / 8)
        out.append(best)
    return out


@pytest.fixture()
def server():
    with KnownAnswersServer(RULES, run_seed=SEED) as srv:
        yield srv


def test_plan_gap_run_is_recomputed_from_the_transcripts(server, tmp_path, capsys):
    config = tmp_path / "servers.yaml"
    config.write_text(config_text(server.base_url))
    out = tmp_path / "run"
    cmd = ["run", "--config", str(config), "--out", str(out), "--mmlu-pro", "200", "--mmlu-pro-data", "builtin",
           "--seed", str(SEED), "--until-decided", "--block", str(BLOCK), "--margin", "0", "--plain",
           "--plan-gap", str(float(PLAN))]
    assert main(cmd) == 0
    state = json.loads((out / "adaptive.json").read_text())
    assert state["settings"]["plan_gap"] == pytest.approx(0.1)
    assert "gap of 10 points (--plan-gap)" in state["stopping_rule"]
    order = json.loads((out / "manifest.json").read_text())["spec"]["benchmarks"][0]["item_ids"]
    correct = independent_correctness(out)
    m = len(state["pairs"])
    threshold = Fraction(m) / Fraction(ALPHA).limit_denominator()
    decided = 0
    for pair in state["pairs"]:
        n = pair["questions_used"]
        d = [int(correct[(pair["a"], q)]) - int(correct[(pair["b"], q)]) for q in order[:n]]
        path = planned_max_e(d, PLAN)
        assert pair["e_value"] == pytest.approx(float(path[-1]), rel=1e-9)
        assert pair["p_anytime"] == pytest.approx(min(1.0, m / float(path[-1])), rel=1e-9)
        crossed = [k for k in range(BLOCK, n + 1, BLOCK) if path[k - 1] >= threshold]
        if pair["decision"] == "different":
            decided += 1
            assert crossed and crossed[0] == n
        else:
            assert not crossed and pair["decision"] == "undecided"
    assert decided == 2  # ref vs bad and close vs bad; ref vs close are equally good
    # Another plan on resume would choose the rule after seeing the data: refused.
    capsys.readouterr()
    assert main([*cmd[:-1], "0.05"]) == 2
    err = capsys.readouterr().err
    assert "--plan-gap 0.1" in err and "same settings" in err
