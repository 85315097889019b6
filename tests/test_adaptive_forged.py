"""A run folder someone else sent: its adaptive.json is not trusted. The report recomputes
every pair's decision from the transcripts under the settings the file states, shows the
recomputed decisions, and says where the file disagrees; settings no adaptive run can have
are one clear error. The folders are made by a real `run --until-decided` against the local
server with known per-question correctness."""

from __future__ import annotations

import json
import shutil

import pytest

from known_answers_server import KnownAnswersServer
from qatcmp.cli import main
from test_adaptive_run import RULES, SEED, command, config_text


@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("forged")
    with KnownAnswersServer(RULES, run_seed=SEED) as server:
        config = root / "servers.yaml"
        config.write_text(config_text(server.base_url))
        assert main(command(config, root / "run", budget=150)) == 0
    return root / "run"


@pytest.fixture()
def folder(made_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(made_run, copy)
    for name in ("report.md", "report.json", "report.html"):
        (copy / name).unlink(missing_ok=True)
    return copy


def edit_adaptive(folder, change) -> dict:
    path = folder / "adaptive.json"
    state = json.loads(path.read_text())
    change(state)
    path.write_text(json.dumps(state))
    return state


def pairs_of(report: dict) -> dict:
    return {(p["a"], p["b"]): p for p in report["adaptive"]["pairs"]}


def test_an_untouched_run_is_reported_as_written(folder, capsys):
    written = json.loads((folder / "adaptive.json").read_text())
    assert main(["stats", str(folder)]) == 0
    report = json.loads((folder / "report.json").read_text())
    assert not any("disagrees" in w for w in report["warnings"])
    assert report["adaptive"]["pairs"] == written["pairs"]


def test_a_forged_decision_is_replaced_by_the_transcripts_and_named(folder, capsys):
    honest = json.loads((folder / "adaptive.json").read_text())
    target = next(p for p in honest["pairs"] if p["decision"] != "different")

    def forge(state):
        for pair in state["pairs"]:
            if (pair["a"], pair["b"]) == (target["a"], target["b"]):
                pair.update(decision="different", e_value=1e6, p_anytime=1e-6)

    edit_adaptive(folder, forge)
    assert main(["stats", str(folder)]) == 0
    printed = capsys.readouterr()
    report = json.loads((folder / "report.json").read_text())
    shown = pairs_of(report)[(target["a"], target["b"])]
    assert shown["decision"] == target["decision"] and shown["e_value"] == pytest.approx(target["e_value"])
    warning = next(w for w in report["warnings"] if "disagrees" in w)
    assert f"{target['a']} vs {target['b']} (mmlu_pro): adaptive.json says different" in warning
    assert f"the transcripts give {target['decision']}" in warning
    md = (folder / "report.md").read_text()
    assert "adaptive.json disagrees with this run's transcripts" in md
    sentence = next(line for line in md.splitlines() if line.startswith(f"- {target['a']} vs {target['b']}, MMLU-Pro"))
    assert f"— {target['decision']}" in sentence and "different" not in sentence
    assert "disagrees" in printed.out + printed.err


def test_a_forged_stopping_rule_is_rewritten_from_the_settings(folder):
    edit_adaptive(folder, lambda s: s.update(stopping_rule="Decided by a coin."))
    assert main(["stats", str(folder)]) == 0
    report = json.loads((folder / "report.json").read_text())
    assert report["adaptive"]["stopping_rule"].startswith("After every block of 25 questions")
    assert "coin" not in (folder / "report.md").read_text()


def test_fewer_blocks_claimed_are_checked_on_those_blocks(folder):
    # A file claiming the run stopped after one block is checked there: the pairs decided
    # later are undecided after it, whatever the file says.
    def shrink(state):
        for bench in state["benchmarks"].values():
            bench["blocks_done"] = 1

    edit_adaptive(folder, shrink)
    assert main(["stats", str(folder)]) == 0
    report = json.loads((folder / "report.json").read_text())
    assert all(p["questions_used"] <= 25 for p in report["adaptive"]["pairs"])


@pytest.mark.parametrize("change, message", [
    (lambda s: s["settings"].update(alpha=5), "alpha 5"),
    (lambda s: s["settings"].update(block=0), "block 0"),
    (lambda s: s["settings"].update(futility=0.2), "futility 0.2"),  # without a plan
    (lambda s: s.update(models=["ref", "intruder"]), "unknown variants 'intruder'"),
    (lambda s: s.update(samples=3), "3 samples"),
    (lambda s: s.update(models=["ref", "ref", "close"]), "a variant named twice"),
    (lambda s: s["settings"].update(reference="nobody"), "--reference 'nobody'"),
])
def test_settings_no_run_can_have_are_one_line(folder, capsys, change, message):
    edit_adaptive(folder, change)
    capsys.readouterr()
    assert main(["stats", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "adaptive.json" in err and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (folder / "transcripts").is_dir()  # nothing of the run was touched
