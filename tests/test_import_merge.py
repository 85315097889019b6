"""`qatcmp import mmlu-pro-official FILE --model M --out RUN` adds a model to a run folder:
questions matched by content, differing ones excluded and listed, --force replacing only that
model, and runs made by `qatcmp run` accepted when their questions match."""

from __future__ import annotations

import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from qatcmp.cli import main
from qatcmp.importers import import_outputs, read_tiger_lab_outputs
from qatcmp.records import BenchmarkSelection, MmluProItem, RunManifest, RunSpec, TranscriptRecord
from qatcmp.rundir import RunDir, write_jsonl_atomic
from qatcmp.scoring import score_run

DATA = Path(__file__).parent / "data"
LLAMA3 = DATA / "tiger_lab_mmlu_pro_llama3_8b_sample.zip"
LLAMA31 = DATA / "tiger_lab_mmlu_pro_llama3_1_8b_sample.zip"
REV_LLAMA3 = DATA / "tiger_lab_mmlu_pro_llama3_8b_revisions.zip"
REV_LLAMA31 = DATA / "tiger_lab_mmlu_pro_llama3_1_8b_revisions.zip"
# The questions TIGER-Lab's two Llama files disagree on (tests/data/README.md).
DIFFERING = {"94", "96", "120", "143", "305", "321", "2129", "2253", "2453", "3983", "5664", "5666", "6392", "6921"}
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def ids_of(path: Path) -> set[str]:
    return {str(row["question_id"]) for row in read_tiger_lab_outputs(path)}


def imports(*args: str | Path) -> int:
    return main(["import", "mmlu-pro-official", *map(str, args)])


def report(run: Path) -> dict:
    assert main(["stats", str(run)]) == 0
    return json.loads((run / "report.json").read_text())["benchmarks"][0]


def write_edited(source: Path, target: Path, edit) -> Path:
    rows = read_tiger_lab_outputs(source)
    edit(rows)
    target.write_text(json.dumps(rows))
    return target


def test_two_published_files_make_one_run_with_pairs_over_common_questions(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert imports(LLAMA3, "--model", "llama3", "--out", run) == 0
    assert imports(LLAMA31, "--model", "llama31", "--out", run) == 0
    out = capsys.readouterr().out
    assert "imported 300 MMLU-Pro answers of llama31" in out and "models: llama3, llama31" in out
    common = ids_of(LLAMA3) & ids_of(LLAMA31)
    assert len(common) == 10
    assert "290 questions new to the run, 290 of the run's questions not in the file" in out
    rd = RunDir(run)
    manifest = rd.read_manifest()
    assert list(manifest.spec.models) == ["llama3", "llama31"]
    assert manifest.spec.models["llama31"]["imported_from"] == LLAMA31.name
    assert manifest.spec.models["llama31"]["questions"] == 300
    # The run holds every question either file answered, each once.
    assert set(manifest.spec.benchmarks[0].item_ids) == ids_of(LLAMA3) | ids_of(LLAMA31)
    assert len(manifest.spec.benchmarks[0].item_ids) == len(rd.read_items()) == 590
    assert manifest.excluded_items == []  # the two samples share no differing question
    assert any("a pair compares only the questions both models answered" in w.lower() for w in manifest.warnings)
    bench = report(run)
    assert [(p["a"], p["b"], p["n"]) for p in bench["pairs"]] == [("llama3", "llama31", 10)]
    assert {m["model"]: m["n"] for m in bench["models"]} == {"llama3": 300, "llama31": 300}


def test_a_question_with_another_answer_is_excluded_and_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert imports(LLAMA31, "--model", "a", "--out", run) == 0
    first = read_tiger_lab_outputs(LLAMA31)

    def change_answer(rows: list[dict]) -> None:
        rows[7]["answer"] = "J" if rows[7]["answer"] != "J" else "A"
        rows[8]["question"] += " (edited)"

    edited = write_edited(LLAMA31, tmp_path / "edited.json", change_answer)
    assert imports(edited, "--model", "b", "--out", run) == 0
    out = capsys.readouterr().out
    assert "warning: 2 questions differ in text, options or answer" in out
    changed = {str(first[7]["question_id"]), str(first[8]["question_id"])}
    manifest = RunDir(run).read_manifest()
    assert {e.item_id for e in manifest.excluded_items} == changed
    by_id = {e.item_id: e for e in manifest.excluded_items}
    assert "answer differs" in by_id[str(first[7]["question_id"])].reason
    assert "question text differs" in by_id[str(first[8]["question_id"])].reason
    assert all(e.models == ["b"] and e.benchmark == "mmlu_pro" for e in manifest.excluded_items)
    assert any("2 questions" in w and "excluded_items" in w for w in manifest.warnings)
    # b has no answer to them, so no pair can use them; the rest are all compared.
    b_ids = {t.item_id for t in RunDir(run).read_transcripts() if t.model == "b"}
    assert len(b_ids) == 298 and not (b_ids & changed)
    assert report(run)["pairs"][0]["n"] == 298
    # The same file under a third name: the exclusions gather the models they concern.
    assert imports(edited, "--model", "c", "--out", run) == 0
    manifest = RunDir(run).read_manifest()
    assert {tuple(e.models) for e in manifest.excluded_items} == {("b", "c")}


def test_force_replaces_only_that_models_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert imports(REV_LLAMA3, "--model", "llama3", "--out", run) == 0
    assert imports(REV_LLAMA31, "--model", "other", "--out", run) == 0
    rd = RunDir(run)
    llama3_file = rd.transcript_file("llama3", "mmlu_pro").read_bytes()
    # Importing a model that is already there needs --force.
    assert imports(LLAMA31, "--model", "other", "--out", run) == 2
    assert "already holds a run with other in it" in capsys.readouterr().err
    assert imports(LLAMA31, "--model", "other", "--out", run, "--force") == 0
    assert "replaced" in capsys.readouterr().out
    # Only the new file's answers are left for that model (no stale answers merged in)...
    answers = {t.item_id for t in rd.read_transcripts() if t.model == "other"}
    assert answers == ids_of(LLAMA31) - ({"143"} & ids_of(LLAMA31))  # 143 differs from the run's copy
    assert not answers & (ids_of(REV_LLAMA31) - ids_of(LLAMA31))
    # ...the other model is untouched, and the old exclusions and warnings about it are gone.
    assert rd.transcript_file("llama3", "mmlu_pro").read_bytes() == llama3_file
    manifest = rd.read_manifest()
    assert {e.item_id for e in manifest.excluded_items} == {"143"} & ids_of(LLAMA31)
    assert sum("import other:" in w for w in manifest.warnings) == 2
    assert manifest.spec.models["other"]["imported_from"] == LLAMA31.name


def test_files_from_different_dataset_revisions_get_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert imports(REV_LLAMA3, "--model", "llama3", "--out", run) == 0
    assert imports(REV_LLAMA31, "--model", "llama31", "--out", run) == 0
    out = capsys.readouterr().out
    assert "warning: 14 questions differ in text, options or answer" in out
    manifest = RunDir(run).read_manifest()
    assert {e.item_id for e in manifest.excluded_items} == DIFFERING
    assert [w for w in manifest.warnings if "different revisions of the dataset" in w]
    reasons = {e.item_id: e.reason for e in manifest.excluded_items}
    assert reasons["6392"] == "answer differs (D in the run, B in llama31's file)"  # the known correction
    fingerprints = {m: spec["questions_sha256"] for m, spec in manifest.spec.models.items()}
    assert fingerprints["llama3"] != fingerprints["llama31"]
    bench = report(run)
    assert bench["pairs"][0]["n"] == 36
    # Same revision, no warning: the file's questions equal the run's copy (the first file's).
    assert imports(REV_LLAMA3, "--model", "again", "--out", run) == 0
    manifest = RunDir(run).read_manifest()
    assert not [w for w in manifest.warnings if w.startswith("import again:")]


def make_qatcmp_run(path: Path, items: list[MmluProItem]) -> RunDir:
    """A run folder as `qatcmp run` leaves it: its own questions, one variant's answers."""
    rd = RunDir(path)
    rd.path.mkdir(parents=True)
    selection = BenchmarkSelection(name="mmlu_pro", dataset="TIGER-Lab/MMLU-Pro", revision="b189ec7", split="test",
                                   total_available=12032, item_ids=[i.item_id for i in items], prompt_template="x")
    spec = RunSpec(benchmarks=[selection], seed=0, samples=1, models={"q4": {"server": "omlx", "body": {}}})
    rd.write_manifest(RunManifest(qatcmp_version="0", created_at=NOW, updated_at=NOW, config={}, spec=spec))
    rd.write_items(items)
    write_jsonl_atomic(rd.transcript_file("q4", "mmlu_pro"), [
        TranscriptRecord(model="q4", benchmark="mmlu_pro", item_id=i.item_id, messages=[], request={},
                         content=f"The answer is ({i.answer}).", finish_reason="stop", started_at=NOW, finished_at=NOW)
        for i in items])
    return rd


def test_a_folder_made_by_qatcmp_run_accepts_published_answers_to_its_questions(tmp_path: Path) -> None:
    rows = read_tiger_lab_outputs(REV_LLAMA31)  # the hub's revision: same content as the run's
    asked = [MmluProItem(item_id=str(r["question_id"]), category=r["category"], question=r["question"],
                         options=r["options"], answer=r["answer"]) for r in rows[:40]]
    rd = make_qatcmp_run(tmp_path / "run", asked)
    spec_before = rd.read_manifest().spec.benchmarks[0].model_dump()
    items_before = rd.items.read_bytes()
    result = import_outputs(REV_LLAMA3, model="llama3", out=rd.path)
    # The run's questions stay as they are: the file's other questions are not imported.
    assert rd.read_manifest().spec.benchmarks[0].model_dump() == spec_before
    assert rd.items.read_bytes() == items_before
    assert result.skipped == 10 and result.only_in_run == 0
    differing = {i.item_id for i in asked} & DIFFERING
    assert {e.item_id for e in result.excluded} == differing and differing
    answered = {t.item_id for t in rd.read_transcripts() if t.model == "llama3"}
    assert answered == {i.item_id for i in asked} - differing
    scores = score_run(rd, mode="official")
    assert {s.model for s in scores} == {"q4", "llama3"}
    # A variant the run asked is not overwritten by an import, even with --force.
    assert main(["import", "mmlu-pro-official", str(REV_LLAMA3), "--model", "q4", "--out", str(rd.path), "--force"]) == 2


def test_bad_input_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert imports(LLAMA3, "--model", "llama3", "--out", run) == 0
    manifest_before = (run / "manifest.json").read_bytes()
    cases = {
        "text.json": lambda rows: rows[0].__setitem__("generated_text", {"not": "text"}),
        "id.json": lambda rows: rows[0].__setitem__("question_id", [1]),
        "options.json": lambda rows: rows[0].__setitem__("options", None),
    }
    for name, edit in cases.items():
        path = write_edited(LLAMA31, tmp_path / name, edit)
        assert imports(path, "--model", "x", "--out", run) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("qatcmp: error: ") and "Traceback" not in err and err.count("\n") == 1
    (tmp_path / "empty.json").write_text("[]")
    assert imports(tmp_path / "empty.json", "--model", "x", "--out", tmp_path / "new") == 2
    assert "holds no answers" in capsys.readouterr().err and not (tmp_path / "new").exists()
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        archive.writestr("a.json", "[]")
        archive.writestr("b.json", "[]")
    assert imports(tmp_path / "two.zip", "--model", "x", "--out", run) == 2
    assert (run / "manifest.json").read_bytes() == manifest_before  # nothing half-merged
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    assert imports(LLAMA3, "--model", "x", "--out", tmp_path / "stuff") == 2
    assert "not a qatcmp run folder" in capsys.readouterr().err
