"""The progress of an adaptive run: the live (rich) display carries every pair's state under
its bars, and plain output (a file, a pipe) one line per block with every pair's state; both
checked against adaptive.json, from a real run against the known-answers server."""

from __future__ import annotations

import io
import json
import re

import numpy as np
from rich.console import Console

from qatcmp.adaptive import AdaptiveSettings, build_state, walk_benchmark
from qatcmp.cli import main
from qatcmp.progress import RunProgress, pairs_table
from test_adaptive_run import command, config_text
from test_adaptive_run import server  # noqa: F401  (the known-answers server fixture)

HOSTILE = "[/bold][red]x"  # rich markup in a variant's name: shown as text, never parsed


def state_after(answered: int, budget: int = 200, block: int = 20):
    """Three variants (one far worse), the first `answered` questions answered by all."""
    rng = np.random.default_rng(4)
    ids = [f"q{i}" for i in range(budget)]
    truth = {"ok": rng.random(budget) < 0.9, HOSTILE: None, "poor": rng.random(budget) < 0.4}
    truth[HOSTILE] = truth["ok"] ^ (rng.random(budget) < 0.03)
    correct = {(m, "mmlu_pro", q, 0): bool(truth[m][i]) for m in truth for i, q in enumerate(ids[:answered])}
    settings = AdaptiveSettings(block=block, margin=0.1)
    walk = walk_benchmark("mmlu_pro", ids, correct, models=list(truth), samples=1, settings=settings)
    return build_state([walk], settings=settings, models=list(truth), samples=1)


def rendered(renderable, width: int = 250) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def row_text(pair) -> list[str]:
    lo, hi = pair.interval
    return [f"{pair.a} vs {pair.b}", pair.decision, str(pair.questions_used), f"{100 * pair.diff:+.1f}",
            f"[{100 * lo:+.1f}, {100 * hi:+.1f}]", f"{pair.e_value:.3g}", f"{pair.p_anytime:.3g}"]


def test_the_pairs_table_shows_every_pairs_state():
    state = state_after(60)
    assert {p.decision for p in state.pairs} == {"different", "undecided"}
    text = rendered(pairs_table(state))
    lines = text.splitlines()
    for pair in state.pairs:
        line = next(line for line in lines if f"{pair.a} vs {pair.b}" in line)
        cells = [c.strip() for c in line.split("│") if c.strip()]
        assert cells[1:8] == row_text(pair), line
        if pair.decision == "undecided":
            assert cells[-1] == (f"~{pair.more_questions}" if pair.more_questions else "?")
    assert "all pairs, α 0.05, margin ±10 points, blocks of 20" in text
    assert f"still asking ok, {HOSTILE}" in text  # poor is decided: no longer asked


def test_the_live_display_draws_the_table_under_the_bars(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the console of a StringIO is 80 wide otherwise
    state = state_after(60)
    stream = io.StringIO()
    with RunProgress(live=True, stream=stream) as progress:
        for model in state.models:
            progress.add(model, "mmlu_pro", 200, 60)
        progress.show_pairs(state)
    # Not a terminal: rich prints the display once, as it is when it stops.
    text = stream.getvalue()
    assert text.index("poor · mmlu_pro (decided: not asked further)") < text.index("Anytime-valid decisions")
    assert f"{HOSTILE} · mmlu_pro " in text and "ok · mmlu_pro " in text and "(finished)" not in text
    for pair in state.pairs:
        assert all(cell in text for cell in row_text(pair))
    done = RunProgress(live=True, stream=io.StringIO())
    with done:
        done.add("poor", "mmlu_pro", 200, 200)
        done.show_pairs(state_after(200))
    assert "poor · mmlu_pro (finished)" in done.stream.getvalue()


def test_no_pair_yet_is_one_line_and_plain_mode_draws_nothing():
    stream = io.StringIO()
    with RunProgress(live=True, stream=stream) as progress:
        progress.show_pairs(state_after(0))
    assert "Anytime-valid decisions: none yet (the first look is after 20 questions)" in stream.getvalue()
    plain = RunProgress(live=False, stream=io.StringIO())
    plain.show_pairs(state_after(60))  # plain output has the run's per-block lines instead
    assert plain.stream.getvalue() == "" and plain.pairs is not None


def run_adaptive(server, folder):
    """The adaptive run of test_adaptive_run (its command has --plain), in `folder`/run."""
    config = folder / "servers.yaml"
    config.write_text(config_text(server.base_url))
    out = folder / "run"
    assert main(command(config, out)) == 0
    return out


def test_a_plain_run_prints_every_pairs_state_after_every_block(server, tmp_path, capsys):
    out = run_adaptive(server, tmp_path)
    err = capsys.readouterr().err
    state = json.loads((out / "adaptive.json").read_text())
    lines = {int(m.group(1)): m.group(0) for m in re.finditer(r"^mmlu_pro block (\d+) \(.*$", err, re.M)}
    blocks = max(h["block"] for p in state["pairs"] for h in p["history"])
    assert sorted(lines) == list(range(1, blocks + 1))
    for pair in state["pairs"]:
        for look in pair["history"]:
            lo, hi = look["interval"]
            expected = (f"{pair['a']} vs {pair['b']} {look['decision']} at {look['questions']} "
                        f"({100 * look['diff']:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}], "
                        f"e-value {look['e_value']:.3g}, anytime p {look['p_anytime']:.3g})")
            assert expected in lines[look["block"]], (expected, lines[look["block"]])


def test_a_live_run_ends_with_the_decisions_of_adaptive_json(server, tmp_path, monkeypatch):
    import qatcmp.commands.run as run_command

    monkeypatch.setenv("COLUMNS", "200")
    stream = io.StringIO()
    monkeypatch.setattr(run_command, "RunProgress", lambda live=None: RunProgress(live=True, stream=stream))
    out = run_adaptive(server, tmp_path)
    text = stream.getvalue()
    state = json.loads((out / "adaptive.json").read_text())
    table = text[text.index("Anytime-valid decisions: all pairs"):]
    for pair in state["pairs"]:
        lo, hi = pair["interval"]
        line = next(line for line in table.splitlines() if f"{pair['a']} vs {pair['b']}" in line)
        cells = [c.strip() for c in line.split("│") if c.strip()]
        assert cells[1:8] == [f"{pair['a']} vs {pair['b']}", pair["decision"], str(pair["questions_used"]),
                              f"{100 * pair['diff']:+.1f}", f"[{100 * lo:+.1f}, {100 * hi:+.1f}]",
                              f"{pair['e_value']:.3g}", f"{pair['p_anytime']:.3g}"]
    assert "bad · mmlu_pro (finished)" in text
