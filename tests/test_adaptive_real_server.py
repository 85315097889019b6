"""`qatcmp run --until-decided` end to end against a real mlx_lm.server holding the three tiny
demo variants, on MMLU-Pro and HumanEval (scored in the sandbox while the run goes): blocks in
the run's nested sample, alternating variant order, and adaptive.json's numbers recomputed
from `qatcmp score`'s independent scoring of the same transcripts."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import defaultdict
from fractions import Fraction

import pytest

from test_run_real_server import config_for

pytestmark = pytest.mark.server

BLOCK, MMLU, HUMANEVAL = 4, 12, 4


def max_mixture(signs: list[int]) -> Fraction:
    best, b, c = Fraction(1), 0, 0
    for sign in signs:
        b, c = b + (sign > 0), c + (sign < 0)
        best = max(best, Fraction(2 ** (b + c) * math.factorial(b) * math.factorial(c), math.factorial(b + c + 1)))
    return best


def test_adaptive_run_on_the_real_server(mlx_servers, tmp_path):
    server = mlx_servers.multi
    config = tmp_path / "servers.yaml"
    config.write_text(config_for([("mlx", server.base_url, server.model_ids)], max_tokens=64, concurrency=2))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "qatcmp", "run", "--config", str(config), "--out", str(out),
           "--mmlu-pro", str(MMLU), "--humaneval", str(HUMANEVAL), "--mmlu-pro-data", "builtin",
           "--humaneval-data", "builtin", "--until-decided", "--block", str(BLOCK), "--margin", "0.3", "--plain"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Adaptive decisions" in result.stdout
    assert "mmlu_pro block 1 (4/12 questions)" in result.stdout + result.stderr
    state = json.loads((out / "adaptive.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    models = list(manifest["spec"]["models"])
    assert len(state["pairs"]) == 2 * 3  # all pairs, on both benchmarks

    scored = subprocess.run([sys.executable, "-m", "qatcmp", "score", str(out)], capture_output=True, text=True, timeout=600)
    assert scored.returncode == 0, scored.stderr
    correct = {}
    for line in (out / "scores.jsonl").read_text().splitlines():
        row = json.loads(line)
        correct[(row["model"], row["benchmark"], row["item_id"])] = row["correct"]
    order = {b["name"]: b["item_ids"] for b in manifest["spec"]["benchmarks"]}
    m = 3
    for pair in state["pairs"]:
        n, bench = pair["questions_used"], pair["benchmark"]
        assert n % BLOCK == 0 or n == len(order[bench])
        d = [int(correct[(pair["a"], bench, q)]) - int(correct[(pair["b"], bench, q)]) for q in order[bench][:n]]
        assert (pair["a_only"], pair["b_only"]) == (d.count(1), d.count(-1))
        assert pair["e_value"] == pytest.approx(float(max_mixture([x for x in d if x])), rel=1e-9)
        assert pair["p_anytime"] == pytest.approx(min(1.0, m / pair["e_value"]), rel=1e-9)
        if pair["decision"] == "equivalent":
            assert -0.3 < pair["interval"][0] and pair["interval"][1] < 0.3
    # Only a prefix of the nested sample was asked, block by block, in alternating order.
    rows = []
    for path in (out / "transcripts").glob("*.jsonl"):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    asked = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["started_at"]):
        asked[(row["model"], row["benchmark"])].append(row["item_id"])
    for (model, bench), ids in asked.items():
        assert sorted(ids) == sorted(order[bench][: len(ids)])
    first_block = [r["model"] for r in sorted(rows, key=lambda r: r["started_at"]) if r["benchmark"] == "mmlu_pro"]
    assert first_block[0] == models[0]
    assert manifest["model_switches"] >= 1
