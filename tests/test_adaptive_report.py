"""The adaptive report part: markdown lines and the interval plot from a state built by the
real replay (walk_benchmark) on known per-question correctness; numbers checked against
the state and recomputed from the counts; a hostile adaptive.json is one clear error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qatcmp.adaptive import ADAPTIVE_FILE, AdaptiveSettings, build_state, walk_benchmark
from qatcmp.adaptive_state import read_adaptive
from qatcmp.report.render.adaptive import ADAPTIVE_PNG, adaptive_markdown, extension_markdown, pair_sentence
from qatcmp.report.render.png import render_adaptive_png
from qatcmp.errors import DataError
from qatcmp.stats.sequential import mixture_evalue

BLOCK, BUDGET = 20, 200


def _state(margin=0.1, given_up=frozenset()):
    rng = np.random.default_rng(4)
    ids = [f"q{i}" for i in range(BUDGET)]
    truth = {"ok|x": rng.random(BUDGET) < 0.9, "near": None, "poor": rng.random(BUDGET) < 0.4}
    truth["near"] = truth["ok|x"] ^ (rng.random(BUDGET) < 0.03)
    correct = {(m, "mmlu_pro", q, 0): bool(truth[m][i]) for m in truth for i, q in enumerate(ids)}
    settings = AdaptiveSettings(block=BLOCK, margin=margin)
    walk = walk_benchmark("mmlu_pro", ids, correct, models=list(truth), samples=1, settings=settings, given_up=given_up)
    return build_state([walk], settings=settings, models=list(truth), samples=1), truth, ids


def test_markdown_carries_every_pair_and_the_validity_note():
    state, truth, ids = _state()
    lines = adaptive_markdown(state)
    text = "\n".join(lines)
    assert state.stopping_rule in text
    assert "not valid" in text and "fixed-sample" in text
    rows = [line for line in lines if line.startswith("| MMLU-Pro |")]
    assert len(rows) == len(state.pairs) == 3
    # The '|' in a model name does not break the table: every row has the header's columns.
    header = next(line for line in lines if line.startswith("| benchmark |"))
    assert all(row.count(" | ") == header.count(" | ") for row in rows)
    assert "ok\\|x vs near" in text
    by_pair = {(p.a, p.b): p for p in state.pairs}
    poor = by_pair[("ok|x", "poor")]
    assert poor.decision == "different" and poor.questions_used < BUDGET
    # The e-value in the report is the mixture on the counts (recomputed from the truth).
    n = poor.questions_used
    a_only = int(np.sum(truth["ok|x"][:n] & ~truth["poor"][:n]))
    b_only = int(np.sum(~truth["ok|x"][:n] & truth["poor"][:n]))
    assert (poor.a_only, poor.b_only) == (a_only, b_only)
    assert poor.e_value >= mixture_evalue(a_only, b_only) * (1 - 1e-9)  # the running maximum
    assert f"| {n} | {100 * (a_only - b_only) / n:+.1f} |" in text
    assert f"p {poor.p_anytime:.3g}" in pair_sentence(poor, 0.1)
    assert math.isclose(poor.p_anytime, min(1.0, 3 / poor.e_value), rel_tol=1e-9)
    near = by_pair[("ok|x", "near")]
    sentence = pair_sentence(near, 0.1)
    assert near.decision in sentence and str(near.questions_used) in sentence


def test_the_plot_is_a_png_with_one_panel_and_the_report_names_it(tmp_path):
    state, _, _ = _state()
    data = render_adaptive_png(state)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert f"]({ADAPTIVE_PNG})" in "\n".join(adaptive_markdown(state))
    assert f"]({ADAPTIVE_PNG})" not in "\n".join(adaptive_markdown(state, plot=None))


def test_undecided_pairs_say_how_far_they_are():
    state, _, _ = _state(margin=0.0)  # no equivalence: the close pair stays undecided
    near = next(p for p in state.pairs if p.b == "near")
    assert near.decision == "undecided" and near.questions_used == BUDGET
    assert "undecided after 200 questions" in pair_sentence(near, 0.0)


def test_extension_note_and_hostile_files(tmp_path):
    lines = extension_markdown([{"questions_before": {"mmlu_pro": 300}, "questions_after": {"mmlu_pro": 600}}])
    assert "MMLU-Pro 300 → 600" in lines[0] and "not valid" in lines[0]
    assert extension_markdown([]) == []
    assert read_adaptive(tmp_path) is None
    for junk in (b"\xff\xfe not json", b'{"schema_version": 1}', b"[" * 100000):
        (tmp_path / ADAPTIVE_FILE).write_bytes(junk)
        with pytest.raises(DataError, match="not a valid adaptive.json"):
            read_adaptive(tmp_path)
    state, _, _ = _state()
    (tmp_path / ADAPTIVE_FILE).write_text(state.model_dump_json())
    assert read_adaptive(tmp_path) == state


def test_a_given_up_error_drops_the_question_from_that_variants_pairs():
    rng = np.random.default_rng(8)
    ids = [f"q{i}" for i in range(60)]
    models = ["a", "b", "c"]
    correct = {(m, "mmlu_pro", q, 0): bool(rng.random() < 0.7) for m in models for q in ids}
    settings = AdaptiveSettings(block=BLOCK, margin=0.0)
    full = walk_benchmark("mmlu_pro", ids, correct, models=models, samples=1, settings=settings)
    key = ("c", "mmlu_pro", "q3", 0)
    del correct[key]
    # Retried errors leave the block open: nothing is decided past it.
    open_walk = walk_benchmark("mmlu_pro", ids, correct, models=models, samples=1, settings=settings)
    assert open_walk.blocks_done == 0 and not open_walk.finished
    # Given up (--no-retry-errors): the block completes, q3 leaves c's pairs only.
    walk = walk_benchmark("mmlu_pro", ids, correct, models=models, samples=1, settings=settings, given_up={key})
    assert walk.blocks_done == full.blocks_done == 3
    assert walk.pairs[("a", "b")] == full.pairs[("a", "b")]
    for pair in (("a", "c"), ("b", "c")):
        assert [h.questions for h in walk.pairs[pair].history] == [19, 39, 59]
        d = [int(correct[(pair[0], "mmlu_pro", q, 0)]) - int(correct[(pair[1], "mmlu_pro", q, 0)]) for q in ids if q != "q3"]
        assert walk.pairs[pair].diff == pytest.approx(sum(d) / len(d))
