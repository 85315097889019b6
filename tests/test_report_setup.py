"""The report of a real run folder: the Set-up section against the manifest, both extraction
modes, --models, excluded questions, the unsafe header, incomplete runs, truncation that is
unknown, total or under different budgets."""

from __future__ import annotations

import json

import pytest

from qatcmp.cli import main
from qatcmp.report import build_report, build_report_from_scores, report_for_run
from qatcmp.rundir import RunDir, write_json_atomic
from qatcmp.scoring import SCORES_META, score_run
from report_runs import changes_its_mind, make_mmlu_run, real_mmlu_items, right, wrong
from test_report_build import make_run, score, scores_from_wrong


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- set-up


def test_setup_section_states_what_the_manifest_records(tmp_path):
    folder = make_mmlu_run(tmp_path / "run", {"6bit": right, "qat8": right}, max_tokens={"6bit": 4096, "qat8": 4096},
                           warnings=["server local reported two versions during the run"])
    report = build_report(folder)
    manifest = RunDir(folder).read_manifest()
    data = json.loads((folder / "report.json").read_text())
    setup = data["setup"]
    assert setup["seed"] == manifest.spec.seed and setup["samples"] == manifest.spec.samples
    assert setup["run_qatcmp_version"] == manifest.qatcmp_version
    for variant in setup["variants"]:
        spec = manifest.spec.models[variant["model"]]
        assert variant["model_id"] == spec["body"]["model"]
        assert variant["max_tokens"] == spec["body"]["max_tokens"] == 4096
        assert variant["server_url"] == manifest.servers["local"].base_url
        assert variant["server_version"] == manifest.servers["local"].version
        assert variant["thinking"] is spec["body"]["chat_template_kwargs"]["enable_thinking"]
        assert variant["sampling"] == {k: spec["body"][k] for k in ("temperature", "top_p", "top_k", "min_p", "seed")}
    (dataset,) = setup["datasets"]
    selection = manifest.spec.benchmarks[0]
    assert (dataset["kind"], dataset["revision"], dataset["questions"]) == ("builtin", selection.revision, 60)
    assert dataset["description"].startswith(f"builtin {selection.total_available}-question sample")
    assert setup["extraction_mode"] == data["extraction_mode"] == "default"
    # The manifest's warnings reach report.json and report.md (they used to be dropped).
    assert "run: server local reported two versions during the run" in data["warnings"]
    markdown = (folder / "report.md").read_text()
    assert "## Set-up" in markdown
    assert "| 6bit | http://127.0.0.1:8080/v1 | 0.9.3 | org/6bit-model | off | 4096 |" in markdown
    assert f"sha256 {selection.revision.removeprefix('sha256:')}" in markdown
    assert "MMLU-Pro extraction mode: **default** — qatcmp's default" in markdown
    assert "server local reported two versions" in markdown
    assert "equivalence margin ±5 points (qatcmp default; --margin sets another)" in markdown
    assert report.margin_source == "default"


def test_margin_and_delta_given_are_recorded(tmp_path):
    folder = make_mmlu_run(tmp_path / "run", {"a": right, "b": wrong})
    report = build_report(folder, margin=0.03, delta=0.02)
    assert (report.margin, report.margin_source, report.delta, report.delta_source) == (0.03, "--margin", 0.02, "--delta")
    assert "(given with --margin)" in (folder / "report.md").read_text()


def test_setup_reads_old_and_hostile_manifests_with_defaults(tmp_path):
    folder = make_run(tmp_path / "run", scores_from_wrong({"a": {1}, "b": {2}}, 20), ["a", "b"])
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["spec"]["models"]["a"] = {"server": 7, "body": "not a dict"}
    manifest["config"] = {"models": "nonsense"}
    write_json_atomic(folder / "manifest.json", manifest)
    report = report_for_run(folder)
    variant = report.setup.variants[0]
    assert (variant.model, variant.server, variant.model_id, variant.max_tokens) == ("a", None, None, None)
    assert report.setup.sandbox is None  # nothing recorded: nothing claimed


# --------------------------------------------------------------------------- sandbox


def _humaneval_run(tmp_path, meta: dict):
    folder = make_run(tmp_path / "run", scores_from_wrong({"a": {1}, "b": {2}}, 20), ["a", "b"])
    write_json_atomic(folder / SCORES_META, {"mode": "default", **meta})
    return folder


def test_unsafe_scoring_is_said_in_the_header(tmp_path):
    folder = _humaneval_run(tmp_path, {"sandbox_protections": [], "sandbox_limits": {"wall_s": 10},
                                       "sandbox_isolation": "none", "unsafe_no_isolation": True})
    report = build_report(folder)
    assert report.setup.sandbox.unsafe_no_isolation and report.setup.sandbox.isolation == "none"
    line = "HumanEval was scored without isolation (--unsafe-no-isolation)"
    assert report.warnings[0].startswith(line)
    markdown = (folder / "report.md").read_text()
    assert markdown.index(line) < markdown.index("## Summary")


def test_isolated_scoring_has_no_unsafe_line_and_lists_protections(tmp_path):
    folder = _humaneval_run(tmp_path, {"sandbox_protections": ["rlimits", "network namespace"],
                                       "sandbox_isolation": "bubblewrap", "unsafe_no_isolation": False})
    report = build_report(folder)
    assert not any("without isolation" in w for w in report.warnings)
    assert "HumanEval sandbox: isolation bubblewrap; protections: rlimits, network namespace" in (folder / "report.md").read_text()


# --------------------------------------------------------------------------- extraction modes


def test_a_pair_whose_verdict_flips_between_modes_is_marked_with_both_results(tmp_path):
    # b states a wrong letter first and the right one last: default reads the last statement,
    # official (TIGER-Lab) the first, so b is as good as a in one mode and far worse in the other.
    folder = make_mmlu_run(tmp_path / "run", {"a": right, "b": changes_its_mind, "c": right})
    report = build_report(folder)
    bench = report.benchmarks[0]
    assert (bench.extraction_mode, bench.other_mode) == ("default", "official")
    flipped = {(p.a, p.b): p for p in bench.pairs}
    ab = flipped[("a", "b")]
    assert ab.verdict == "inconclusive" and ab.other_mode.verdict == "difference"
    assert ab.verdict_differs_by_mode and ab.other_mode.diff == pytest.approx(1.0)
    assert "verdict depends on the extraction mode: default says not distinguishable; official says likely a real difference" in ab.sentence
    assert not flipped[("a", "c")].verdict_differs_by_mode  # a and c answer alike in both modes
    assert bench.verdicts_differing_by_mode == 2
    assert any("2 of 3 verdicts change with the extraction mode" in w for w in report.warnings)
    assert "**differs**: official says likely a real difference" in (folder / "report.md").read_text()


def test_the_mode_chosen_with_score_is_the_one_reported(tmp_path, capsys):
    folder = make_mmlu_run(tmp_path / "run", {"a": right, "b": changes_its_mind})
    code, _, _ = run_cli(capsys, "score", str(folder), "--extract", "official")
    assert code == 0
    code, out, _ = run_cli(capsys, "stats", str(folder))
    assert code == 0
    data = json.loads((folder / "report.json").read_text())
    assert data["extraction_mode"] == "official"
    assert data["setup"]["extraction_mode_source"].startswith("chosen with `qatcmp score --extract`")
    pair = data["benchmarks"][0]["pairs"][0]
    assert (pair["verdict"], pair["other_mode"]["mode"]) == ("difference", "default")
    assert pair["other_mode"]["verdict"] == "equivalent" and pair["verdict_differs_by_mode"]  # 60 agreements, one pair
    assert "MMLU-Pro extraction mode: official — chosen with" in out
    assert "MMLU-Pro extraction mode: **official** — chosen with" in (folder / "report.md").read_text()


def test_the_other_mode_is_scored_in_memory_only(tmp_path):
    folder = make_mmlu_run(tmp_path / "run", {"a": right, "b": changes_its_mind})
    score_run(folder, mode="official", chosen_by_user=True)
    before = (folder / "scores.jsonl").read_bytes(), (folder / SCORES_META).read_bytes()
    report_for_run(folder)
    assert ((folder / "scores.jsonl").read_bytes(), (folder / SCORES_META).read_bytes()) == before


# --------------------------------------------------------------------------- --models


def test_models_limits_the_family_holm_adjusts_over(tmp_path, capsys):
    wrong_on = {"a": set(range(0, 12)), "b": set(range(0, 2)), "c": set(range(0, 3)), "d": set(range(30, 45))}
    items = real_mmlu_items(80)
    answers = {m: (lambda bad: lambda item: wrong(item) if items.index(item) in bad else right(item))(bad)
               for m, bad in wrong_on.items()}
    folder = make_mmlu_run(tmp_path / "run", answers, n=80)
    everything = report_for_run(folder).benchmarks[0]
    assert len(everything.pairs) == 6
    code, out, _ = run_cli(capsys, "stats", str(folder), "--models", "a,b")
    assert code == 0
    data = json.loads((folder / "report.json").read_text())
    (pair,) = data["benchmarks"][0]["pairs"]
    assert (pair["a"], pair["b"]) == ("a", "b")
    assert pair["p_holm"] == pytest.approx(pair["mcnemar_midp_p"])  # a family of one pair
    full = next(p for p in everything.pairs if (p.a, p.b) == ("a", "b"))
    assert full.p_holm > pair["p_holm"]  # adjusted over 6 pairs in the full report
    assert data["models"] == ["a", "b"] and data["run_models"] == ["a", "b", "c", "d"]
    assert [m["model"] for m in data["benchmarks"][0]["models"]] == ["a", "b"]
    assert "Models compared: a, b (chosen with --models, of a, b, c, d in the run)" in out
    assert "| c |" not in (folder / "report.md").read_text()


@pytest.mark.parametrize(("value", "fragment"), [("a,zz", "--models zz: not a model of this run"), ("a,a", "named twice"), (",", "--models: give")])
def test_models_errors_are_one_line(tmp_path, capsys, value, fragment):
    folder = make_run(tmp_path / "run", scores_from_wrong({"a": {1}, "b": {2}}, 10), ["a", "b"])
    code, out, err = run_cli(capsys, "stats", str(folder), "--models", value)
    assert code == 2 and err.startswith("qatcmp: error: ") and fragment in err and err.count("\n") == 1


# --------------------------------------------------------------------------- excluded questions


def test_excluded_questions_are_left_out_of_every_pair_and_counted(tmp_path):
    items = real_mmlu_items(40)
    left_out = [items[0].item_id, items[1].item_id, items[2].item_id]
    folder = make_mmlu_run(
        tmp_path / "run", {"a": right, "b": lambda item: wrong(item) if item.item_id in left_out else right(item)}, n=40,
        extra_manifest={"excluded_items": [{"benchmark": "mmlu_pro", "item_id": q, "reason": "options differ"} for q in left_out]},
    )
    report = build_report(folder)
    bench = report.benchmarks[0]
    assert bench.excluded_items == 3 and len(report.excluded_items) == 3
    assert bench.pairs[0].n == 37 and bench.pairs[0].b_only == 0 and bench.pairs[0].a_only == 0
    assert [m.n for m in bench.models] == [37, 37]
    assert bench.missing_answers == 0  # excluded questions are not missing answers
    assert "3 questions are left out of every pair" in (folder / "report.md").read_text()


# --------------------------------------------------------------------------- incomplete runs


def test_error_records_give_the_incomplete_line(tmp_path):
    items = real_mmlu_items(30)
    failed = {items[3].item_id, items[4].item_id}
    folder = make_mmlu_run(tmp_path / "run", {"a": right, "b": lambda item: None if item.item_id in failed else right(item)}, n=30)
    report = build_report(folder)
    expected = f"incomplete: 2 answers missing — run `qatcmp run --out {folder}` again"
    assert expected in report.warnings
    assert expected in (folder / "report.md").read_text()


def test_questions_never_asked_count_as_missing(tmp_path):
    folder = make_mmlu_run(tmp_path / "run", {"a": right, "b": right}, n=30, asked=25)
    report = report_for_run(folder)
    assert report.benchmarks[0].missing_answers == 10
    assert any(w.startswith("incomplete: 10 answers missing") for w in report.warnings)


def test_a_complete_run_has_no_incomplete_line(tmp_path):
    report = report_for_run(make_mmlu_run(tmp_path / "run", {"a": right, "b": wrong}, n=20))
    assert not any(w.startswith("incomplete") for w in report.warnings)


# --------------------------------------------------------------------------- truncation


def test_truncation_not_recorded_reads_unknown_not_zero(tmp_path):
    folder = make_mmlu_run(tmp_path / "run", {"a": right, "b": wrong}, n=20, finish_reason=lambda m, item: None)
    report = build_report(folder)
    model = report.benchmarks[0].models[0]
    assert model.truncated is None and model.accuracy_excluding_truncated is None and model.truncation_unknown == 20
    markdown = (folder / "report.md").read_text()
    assert "| a | 100.0% (20/20) | [83.9, 100.0] | unknown |" in markdown
    assert "truncated 0" not in markdown and "| 0 | 0 | 0 |" not in markdown
    assert any("Truncation is unknown" in n for n in report.benchmarks[0].notes)


def test_every_answer_truncated_gets_its_own_warning(tmp_path):
    folder = make_mmlu_run(tmp_path / "run", {"a": right, "tiny": lambda item: "Let me think step by"}, n=20,
                           max_tokens={"a": 2048, "tiny": 8}, finish_reason=lambda m, item: "length" if m == "tiny" else "stop")
    report = report_for_run(folder)
    assert any(w.startswith("MMLU-Pro: every answer of tiny hit the token budget (max_tokens 8)") for w in report.warnings)


def test_different_budgets_are_named_in_the_truncation_warning(tmp_path):
    items = real_mmlu_items(40)
    cut = {i.item_id for i in items[:6]}
    folder = make_mmlu_run(tmp_path / "run", {"a": right, "b": right}, n=40, max_tokens={"a": 4096, "b": 512},
                           finish_reason=lambda m, item: "length" if m == "b" and item.item_id in cut else "stop")
    report = report_for_run(folder)
    truncation = report.benchmarks[0].truncation_warning
    assert "different max_tokens (a 4096, b 512)" in truncation
    assert "thinks longer" not in truncation
    assert any(w.startswith("The variants were given different max_tokens (a 4096, b 512)") for w in report.warnings)


def test_same_budget_keeps_the_thinking_explanation():
    scores = scores_from_wrong({"short": {0}, "long": {0, 1, 2, 3, 4}}, 40, benchmark="mmlu_pro")
    for s in scores:
        if s.model == "long" and s.item_id in {"1", "2", "3", "4"}:
            s.truncated, s.status, s.finish_reason = True, "truncated", "length"
    assert "thinks longer" in build_report_from_scores(scores).benchmarks[0].truncation_warning


# --------------------------------------------------------------------------- formatting


def test_tiny_p_values_read_p_below_not_p_equals(tmp_path):
    folder = make_mmlu_run(tmp_path / "run", {"a": right, "b": wrong, "c": right}, n=60)
    build_report(folder)
    markdown = (folder / "report.md").read_text()
    assert "p < 0.001" in markdown
    assert "= <" not in markdown and "p <0.001" not in markdown


def test_several_samples_use_per_question_means_for_the_independent_tests():
    import numpy as np
    from scipy.stats import norm

    right_a = [4, 4, 3, 2, 0, 1, 4, 0, 2, 3, 4, 4]
    right_b = [4, 2, 3, 0, 0, 1, 2, 0, 1, 3, 4, 2]
    scores = [score("a", q, s < c, sample=s) for q, c in enumerate(right_a) for s in range(4)]
    scores += [score("b", q, s < c, sample=s) for q, c in enumerate(right_b) for s in range(4)]
    pair = build_report_from_scores(scores).benchmarks[0].pairs[0]
    rates_a, rates_b = np.array(right_a) / 4, np.array(right_b) / 4
    se = np.sqrt(rates_a.var(ddof=1) / 12 + rates_b.var(ddof=1) / 12)
    assert pair.z_test_p == pytest.approx(2 * norm.sf(abs(rates_a.mean() - rates_b.mean()) / se))
    assert (pair.chi2_p, pair.chi2_yates_p, pair.fisher_p) == (None, None, None)
    assert pair.independent_basis == "question_means" and "per-question mean pass rates" in pair.independent_tests_note


@pytest.mark.parametrize("excluded", ["not a list", 7, [{"item_id": 3}, "x", {"benchmark": "mmlu_pro"}]])
def test_malformed_excluded_items_are_refused_in_one_line(tmp_path, excluded, capsys):
    """excluded_items is part of the manifest's schema: a damaged entry makes the manifest
    unreadable, which `qatcmp stats` says in one line (never a half-applied exclusion)."""
    import json

    from qatcmp.cli import main

    folder = make_mmlu_run(tmp_path / "run", {"a": right, "b": wrong}, n=10)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["excluded_items"] = excluded
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert main(["stats", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qatcmp: error:") and "excluded_items" in err[0]


def test_a_full_report_json_renders_again_to_the_same_markdown(tmp_path):
    from qatcmp.report import load_report, render_markdown

    folder = make_mmlu_run(tmp_path / "run", {"a": right, "b": changes_its_mind, "c": wrong}, n=30,
                           max_tokens={"a": 1024, "b": 2048, "c": 2048}, warnings=["w1"])
    build_report(folder, models=["a", "b"])
    again = load_report((folder / "report.json").read_text(encoding="utf-8"))
    assert again.setup is not None and again.run_models == ["a", "b", "c"]
    assert render_markdown(again) == (folder / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--delta", "2"], "--delta must be between 0 and 1"),
    (["--margin", "0"], "--margin must be between 0 and 1"),
])
def test_level_errors_are_one_line(tmp_path, capsys, argv, fragment):
    folder = make_run(tmp_path / "run", scores_from_wrong({"a": {1}, "b": {2}}, 10), ["a", "b"])
    code, _, err = run_cli(capsys, "stats", str(folder), *argv)
    assert code == 2 and err.startswith("qatcmp: error: ") and fragment in err and err.count("\n") == 1


def test_models_is_refused_with_counts(capsys):
    code, _, err = run_cli(capsys, "stats", "--counts", "humaneval:a=9/10,b=8/10", "--models", "a,b")
    assert code == 2 and "--models is for a run folder" in err
