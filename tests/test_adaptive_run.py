"""`qatcmp run --until-decided` against a local server whose variants are right or wrong on
each question by a known rule: the clearly different pairs are decided after the first block
and the bad variant is not asked again, the close pair reaches equivalence (or the budget),
a run killed with -9 continues with the same command without asking anything twice, and the
numbers in adaptive.json are recomputed here from the raw transcripts."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from known_answers_server import KnownAnswersServer, bucket
from qatcmp.cli import main
from qatcmp.selection import plan_benchmarks
from test_run_faults import raw_records as raw_lines

ROOT = Path(__file__).resolve().parents[1]
BUDGET, BLOCK, MARGIN, ALPHA, SEED = 300, 25, 0.1, 0.05, 5

# ref and close are each wrong on a different 1/15 of the questions (no true difference);
# bad is wrong on about half of them.
RULES = {
    "ref": lambda item: bucket(item, 15) != 0,
    "close": lambda item: bucket(item, 15) != 1,
    "bad": lambda item: bucket(item, 2) == 0,
}


def config_text(base_url: str, models=("ref", "close", "bad")) -> str:
    lines = [
        "servers:",
        "  - name: local",
        f"    base_url: {base_url}",
        "    max_concurrency: 1",
        "    stream: false",
        "    timeouts: {connect: 2, read: 10, total: 20}",
        "    retries: {max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}",
        "defaults:",
        "  sampling: {temperature: 0.0, max_tokens: 32}",
        "models:",
    ]
    for name in models:
        lines += [f"  - name: {name}", "    server: local", f"    model: {name}"]
    return "\n".join(lines) + "\n"


def command(config: Path, out: Path, *, margin: float = MARGIN, budget: int = BUDGET) -> list[str]:
    return ["run", "--config", str(config), "--out", str(out), "--mmlu-pro", str(budget), "--mmlu-pro-data", "builtin",
            "--seed", str(SEED), "--until-decided", "--block", str(BLOCK), "--margin", str(margin), "--plain"]


def independent_correctness(out: Path) -> dict[tuple[str, str], bool]:
    answers = {}
    for line in (out / "items.jsonl").read_text().splitlines():
        item = json.loads(line)
        answers[item["item_id"]] = item["answer"]
    correct = {}
    for row in raw_lines(out):
        found = re.search(r"answer is \(([A-J])\)", row["content"] or "")
        correct[(row["model"], row["item_id"])] = bool(found) and found.group(1) == answers[row["item_id"]]
    return correct


def exact_max_e(signs: list[int]) -> Fraction:
    """max over time of 2^n · b! c! / (n+1)! along a sequence of discordant signs."""
    best, b, c = Fraction(1), 0, 0
    for sign in signs:
        b, c = b + (sign > 0), c + (sign < 0)
        n = b + c
        best = max(best, Fraction(2**n * math.factorial(b) * math.factorial(c), math.factorial(n + 1)))
    return best


def check_against_transcripts(out: Path, state: dict) -> None:
    """Recompute every pair's counts, difference, e-value and decision point from the raw
    transcripts and the items, without qatcmp's code."""
    order = json.loads((out / "manifest.json").read_text())["spec"]["benchmarks"][0]["item_ids"]
    correct = independent_correctness(out)
    m = len(state["pairs"])
    threshold = Fraction(m) / Fraction(ALPHA).limit_denominator()
    for pair in state["pairs"]:
        n = pair["questions_used"]
        a, b = pair["a"], pair["b"]
        d = [int(correct[(a, q)]) - int(correct[(b, q)]) for q in order[:n]]
        assert pair["a_only"] == d.count(1) and pair["b_only"] == d.count(-1)
        assert pair["diff"] == pytest.approx(sum(d) / n)
        e = exact_max_e([x for x in d if x])
        assert pair["e_value"] == pytest.approx(float(e), rel=1e-9)
        assert pair["p_anytime"] == pytest.approx(min(1.0, m / float(e)), rel=1e-9)
        lo, hi = pair["interval"]
        assert lo <= pair["diff"] <= hi
        # The decision is taken at the first block end where its rule holds, not later.
        ends = list(range(BLOCK, n + 1, BLOCK))
        crossed = [k for k in ends if exact_max_e([x for x in d[:k] if x]) >= threshold]
        if pair["decision"] == "different":
            assert crossed and crossed[0] == n
        else:
            assert not crossed
        if pair["decision"] == "equivalent":
            assert -MARGIN < lo and hi < MARGIN
        history = pair["history"]
        assert [h["questions"] for h in history] == ends
        widths = [h["interval"][1] - h["interval"][0] for h in history]
        assert all(w2 <= w1 + 1e-12 for w1, w2 in zip(widths, widths[1:]))  # running intersection


@pytest.fixture()
def server():
    with KnownAnswersServer(RULES, run_seed=SEED) as srv:
        yield srv


def test_decides_the_clear_pairs_early_and_stops_asking_the_bad_variant(server, tmp_path, capsys):
    config = tmp_path / "servers.yaml"
    config.write_text(config_text(server.base_url))
    out = tmp_path / "run"
    assert main(command(config, out)) == 0
    printed = capsys.readouterr()
    state = json.loads((out / "adaptive.json").read_text())
    pairs = {(p["a"], p["b"]): p for p in state["pairs"]}
    # The clear pairs are decided within two blocks (whether one is enough depends on how
    # the first 25 questions fall; check_against_transcripts below checks the exact block).
    bad_pairs = [pairs[("ref", "bad")], pairs[("close", "bad")]]
    assert all(p["decision"] == "different" and p["questions_used"] <= 2 * BLOCK for p in bad_pairs)
    bad_used = max(p["questions_used"] for p in bad_pairs)
    close = pairs[("ref", "close")]
    assert close["decision"] in ("equivalent", "undecided")
    if close["decision"] == "undecided":
        assert close["questions_used"] == BUDGET
    assert state["finished"]
    # bad answered block 1 only; ref and close the same prefix of the sample.
    asked = Counter(model for model, _ in server.requests)
    assert asked["bad"] == bad_used
    assert asked["ref"] == asked["close"] == close["questions_used"]
    order = json.loads((out / "manifest.json").read_text())["spec"]["benchmarks"][0]["item_ids"]
    asked_ref = [q for mdl, q in server.requests if mdl == "ref"]
    assert sorted(asked_ref) == sorted(order[: close["questions_used"]])
    # Block by block: no question of block k+1 before every question of block k.
    blocks = [order.index(q) // BLOCK for q in asked_ref]
    assert blocks == sorted(blocks)
    assert len(set(server.requests)) == len(server.requests)
    check_against_transcripts(out, state)
    # Progress: one line per block with every pair's state.
    assert f"mmlu_pro block {bad_used // BLOCK} ({bad_used}/{BUDGET} questions): " in printed.err + printed.out
    assert f"ref vs bad different at {pairs[('ref', 'bad')]['questions_used']} " in printed.err + printed.out
    assert f"ref vs bad: different after {pairs[('ref', 'bad')]['questions_used']} questions" in printed.err + printed.out
    # The same command again asks nothing more.
    before = len(server.requests)
    assert main(command(config, out)) == 0
    assert len(server.requests) == before
    # The report leads with the anytime-valid decisions and labels the fixed-sample tests.
    assert main(["stats", str(out)]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.index("## Anytime-valid decisions (adaptive run)") < md.index("## Summary")
    assert "**not valid** for a design that looked at the data" in md
    assert f"— different, decided after {pairs[('ref', 'bad')]['questions_used']} questions" in md
    assert "answers missing" not in md  # an adaptive run leaves questions unasked by design
    assert (out / "adaptive_intervals.png").is_file() and "adaptive_intervals.png" in md
    assert json.loads((out / "report.json").read_text())["adaptive"]["pairs"] == state["pairs"]


def test_variants_alternate_across_blocks(server, tmp_path):
    config = tmp_path / "servers.yaml"
    config.write_text(config_text(server.base_url, models=("ref", "close")))
    out = tmp_path / "run"
    # Margin 0: no equivalence, so ref and close go on to the budget (no true difference).
    assert main(command(config, out, margin=0, budget=100)) == 0
    models = [mdl for mdl, _ in server.requests]
    assert len(models) == 2 * 100
    runs = [models[0]]
    for mdl in models[1:]:
        if mdl != runs[-1]:
            runs.append(mdl)
    # ref close | close ref | ref close ...: one switch per block, not two.
    blocks = -(-len(models) // (2 * BLOCK))
    assert runs[:4] == ["ref", "close", "ref", "close"]
    assert len(runs) == blocks + 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_switches"] == len(runs) - 1


def test_kill_minus_nine_and_the_same_command_continue_without_asking_twice(tmp_path):
    with KnownAnswersServer(RULES, delay=0.01, run_seed=SEED) as server:
        config = tmp_path / "servers.yaml"
        config.write_text(config_text(server.base_url))
        out = tmp_path / "run"
        args = [sys.executable, "-m", "qatcmp", *command(config, out)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(raw_lines(out) if (out / "transcripts").exists() else []) < 120:
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        killed_at = len(raw_lines(out))
        assert 120 <= killed_at < 25 * 3 + 2 * BUDGET
        done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        rows = raw_lines(out)
        keys = [(r["model"], r["item_id"], r["sample"]) for r in rows]
        assert len(keys) == len(set(keys))  # one record per question and variant
        # At most the one request in flight at the kill was sent twice.
        repeats = sum(n - 1 for n in Counter(server.requests).values())
        assert repeats <= 1
        state = json.loads((out / "adaptive.json").read_text())
        bad_used = max(p["questions_used"] for p in state["pairs"] if p["b"] == "bad")
        assert Counter(model for model, _ in server.requests)["bad"] <= bad_used + 1
        check_against_transcripts(out, state)

    # The same decisions as a run that was never interrupted.
    with KnownAnswersServer(RULES, run_seed=SEED) as fresh:
        config2 = tmp_path / "servers2.yaml"
        config2.write_text(config_text(fresh.base_url))
        assert main(command(config2, tmp_path / "again")) == 0
    again = json.loads((tmp_path / "again" / "adaptive.json").read_text())
    strip = lambda s: [{k: v for k, v in p.items()} for p in s["pairs"]]  # noqa: E731
    assert strip(again) == strip(state)


def test_a_finished_fixed_run_can_be_extended_and_changed_rules_are_refused(server, tmp_path, capsys):
    config = tmp_path / "servers.yaml"
    config.write_text(config_text(server.base_url, models=("ref", "close")))
    out = tmp_path / "run"
    fixed = ["run", "--config", str(config), "--out", str(out), "--mmlu-pro-data", "builtin", "--seed", str(SEED), "--plain"]
    assert main([*fixed, "--mmlu-pro", "40"]) == 0
    assert main([*fixed, "--mmlu-pro", "60"]) == 0  # the nested sample grows: allowed
    asked = Counter(server.requests)
    assert max(asked.values()) == 1 and len(asked) == 2 * 60
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["spec"]["benchmarks"][0]["item_ids"]) == 60
    assert manifest["extensions"][0]["questions_before"] == {"mmlu_pro": 40}
    # The report of the extended fixed run says its fixed-sample p-values are not valid.
    assert main(["stats", str(out)]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "it was extended: MMLU-Pro 40 → 60" in md and "**not valid**" in md
    # Fewer questions is still another experiment.
    assert main([*fixed, "--mmlu-pro", "30"]) == 2
    # Adaptive on top of it, then a change of rule is refused.
    assert main([*fixed, "--mmlu-pro", "100", "--until-decided", "--block", "20"]) == 0
    assert main([*fixed, "--mmlu-pro", "100", "--until-decided", "--block", "10"]) == 2
    assert "same settings" in capsys.readouterr().err
    assert main([*fixed, "--mmlu-pro", "100", "--block", "10"]) == 2  # --block without --until-decided
    # Resuming an adaptive run as a fixed one would ask the whole budget: refused.
    before = len(server.requests)
    assert main([*fixed, "--mmlu-pro", "100"]) == 2
    assert "is an adaptive run: continue it with --until-decided" in capsys.readouterr().err
    # A tampered adaptive.json: the rule is unknown, so it is refused rather than guessed.
    (out / "adaptive.json").write_bytes(b"\x00garbage")
    assert main([*fixed, "--mmlu-pro", "100", "--until-decided", "--block", "20"]) == 2
    assert "unreadable" in capsys.readouterr().err
    assert len(server.requests) == before


@pytest.mark.parametrize("extra,message", [
    (["--block", "0"], "--block must be at least 1"),
    (["--alpha", "1.5"], "--alpha must be between 0 and 1"),
    (["--margin", "-0.1"], "--margin must be at least 0"),
    (["--reference", "nobody"], "--reference 'nobody' is not one of the run's variants"),
])
def test_bad_adaptive_options_are_one_line_errors(server, tmp_path, capsys, extra, message):
    config = tmp_path / "servers.yaml"
    config.write_text(config_text(server.base_url))
    assert main([*command(config, tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert server.requests == []  # refused before anything was asked


def test_a_failed_request_leaves_its_block_open_until_the_same_command_retries_it(server, tmp_path, capsys):
    config = tmp_path / "servers.yaml"
    config.write_text(config_text(server.base_url, models=("ref", "close")))
    out = tmp_path / "run"
    first = command(config, out, margin=0, budget=100)
    # The same seeded sample, to know which question of block 2 to refuse.
    (plan,) = plan_benchmarks({"mmlu_pro": 100}, {"mmlu_pro": "builtin"}, SEED)
    victim = plan.selection.item_ids[BLOCK + 3]  # in block 2
    server.fail.add(("close", victim))
    capsys.readouterr()
    assert main(first) == 1  # stopped: the failed answer keeps block 2 open
    state = json.loads((out / "adaptive.json").read_text())
    assert state["benchmarks"]["mmlu_pro"]["blocks_done"] == 1 and not state["finished"]
    asked = Counter(server.requests)
    assert asked[("close", victim)] == 1  # not hammered: asked once in this invocation
    assert max(h["questions"] for p in state["pairs"] for h in p["history"]) == BLOCK
    # Nothing from block 3 was asked while block 2 was open.
    later = set(plan.selection.item_ids[2 * BLOCK:])
    assert not any(q in later for _, q in server.requests)
    assert "not finished: run the same command again" in capsys.readouterr().out
    server.fail.clear()
    assert main(first) == 0
    state = json.loads((out / "adaptive.json").read_text())
    assert state["finished"] and state["pairs"][0]["questions_used"] == 100
    assert Counter(server.requests)[("close", victim)] == 2
    assert max(Counter(server.requests).values()) == 2  # only the failed one was asked twice
    check_against_transcripts(out, state)
