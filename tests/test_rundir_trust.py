"""A run folder is trusted only as far as it checks out (issue 8): one run at a time, the
model is the file name's, records outside the run are refused, edited questions are refused,
a complete unterminated last line is kept, a damaged scores.jsonl is re-made, and the
manifest keeps every session. Everything goes through the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from misbehaving_server import MisbehavingServer
from qatcmp.rundir import RunDir
from test_bad_inputs import assert_bad_input
from test_cli_errors import qatcmp
from test_run_faults import make_config


def start_run(config: Path, out: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "QATCMP_DEBUG"}
    return subprocess.Popen(
        [sys.executable, "-m", "qatcmp", "run", "--config", str(config), "--out", str(out), "--plain", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )


def mmlu(n: int) -> list[str]:
    return ["--mmlu-pro", str(n), "--mmlu-pro-data", "builtin"]


def lines_of(out: Path) -> list[str]:
    return [line for p in RunDir(out).transcript_files() for line in p.read_text().splitlines()]


def wait_until(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def server():
    with MisbehavingServer() as s:
        yield s


@pytest.fixture
def config(tmp_path, server) -> Path:
    path = tmp_path / "servers.yaml"
    path.write_text(make_config(server.base_url))
    return path


def complete_run(config: Path, out: Path, *args: str) -> RunDir:
    result = qatcmp("run", "--config", str(config), "--out", str(out), "--plain", *(args or mmlu(3)))
    assert result.returncode == 0, result.stderr
    return RunDir(out)


def rewrite_records(path: Path, change) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        change(record)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


# --------------------------------------------------------------------------- the lock


def test_second_run_on_the_same_folder_refuses_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    with MisbehavingServer(delay=0.3) as server:
        config = tmp_path / "servers.yaml"
        config.write_text(make_config(server.base_url, concurrency=1))
        first = start_run(config, out, *mmlu(20))  # 6 s at least: the second run starts meanwhile
        wait_until(lambda: len(lines_of(out)) >= 2)
        second = qatcmp("run", "--config", str(config), "--out", str(out), "--plain", *mmlu(20))
        line = assert_bad_input(second, str(out), "in use by another qatcmp run", f"pid {first.pid} on {socket.gethostname()}", "started 20")
        assert first.poll() is None, "the first run should still have been running"
        assert first.wait(timeout=60) == 0, first.stderr.read()
        asked = [r["body"]["messages"][-1]["content"] for r in server.chat_requests()]
    assert len(asked) == 20 == len(set(asked)), "the refused run must not have sent anything"
    ids = [json.loads(line)["item_id"] for line in lines_of(out)]
    assert len(ids) == 20 == len(set(ids))
    assert line.count("\n") == 0


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "run"
    with MisbehavingServer(delay=0.05) as server:
        config = tmp_path / "servers.yaml"
        config.write_text(make_config(server.base_url, concurrency=2))
        first = start_run(config, out, *mmlu(30))
        wait_until(lambda: len(lines_of(out)) >= 4)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        holder = json.loads((out / ".lock").read_text())
        assert holder["pid"] == first.pid  # the dead run's details are still in the file
        result = qatcmp("run", "--config", str(config), "--out", str(out), "--plain", *mmlu(30))
        assert result.returncode == 0, result.stderr
    assert (out / ".lock").read_text() == ""  # released: no holder named
    ids = [json.loads(line)["item_id"] for line in lines_of(out) if line.endswith("}")]
    assert len(set(ids)) == 30


def test_a_refused_run_leaves_no_folder_behind(tmp_path, server):
    config = tmp_path / "servers.yaml"
    config.write_text(make_config(server.base_url))
    result = qatcmp("run", "--config", str(config), "--out", str(tmp_path / "r"), "--plain", *mmlu(3),
                    "--mmlu-pro-data", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- transcripts


def test_a_stray_copy_cannot_replace_a_models_answers(tmp_path, config):
    rd = complete_run(config, tmp_path / "run")
    (original,) = rd.transcript_files()
    stray = original.with_name("a-old.mmlu_pro.jsonl")
    stray.write_text(original.read_text().replace("The answer is", "The answer is (J) not"))
    result = qatcmp("score", str(rd.path))
    assert_bad_input(result, "transcripts/a-old.mmlu_pro.jsonl", "model 'a-old'", "not in this run", "move it out")
    assert not rd.scores.exists()


def test_record_whose_model_disagrees_with_its_file_is_refused(tmp_path, config):
    rd = complete_run(config, tmp_path / "run")
    (path,) = rd.transcript_files()
    lines = path.read_text().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["model"] = "b"
    path.write_text(lines[0] + json.dumps(record) + "\n" + "".join(lines[2:]))
    for command in (["score", str(rd.path)], ["stats", str(rd.path)]):
        assert_bad_input(qatcmp(*command), "a.mmlu_pro.jsonl: record 2", "says model 'b'", "file name")
    resumed = qatcmp("run", "--config", str(config), "--out", str(rd.path), "--plain")
    assert_bad_input(resumed, "says model 'b'")


def test_file_named_for_no_benchmark_of_the_run_is_refused(tmp_path, config):
    rd = complete_run(config, tmp_path / "run")
    (path,) = rd.transcript_files()
    path.with_name("a.mmlu_pro.backup.jsonl").write_bytes(path.read_bytes())
    assert_bad_input(qatcmp("score", str(rd.path)), "a.mmlu_pro.backup.jsonl", "is not <model>.<benchmark>.jsonl")


def test_files_that_are_not_jsonl_are_ignored(tmp_path, config):
    rd = complete_run(config, tmp_path / "run")
    (path,) = rd.transcript_files()
    path.with_name(path.name + ".bak").write_text("not a transcript\n")
    result = qatcmp("score", str(rd.path))
    assert result.returncode == 0, result.stderr
    assert len(rd.read_scores()) == 3


def test_out_of_range_sample_is_refused(tmp_path, config):
    rd = complete_run(config, tmp_path / "run")
    (path,) = rd.transcript_files()
    rewrite_records(path, lambda r: r.update(sample=7))
    assert_bad_input(qatcmp("stats", str(rd.path)), "record 1", "sample 7 is outside this run's samples 0..0")
    assert not (rd.path / "report.json").exists()


def test_question_outside_the_run_is_refused(tmp_path, config):
    rd = complete_run(config, tmp_path / "run")
    (path,) = rd.transcript_files()
    rewrite_records(path, lambda r: r.update(item_id="999999"))
    assert_bad_input(qatcmp("score", str(rd.path)), "mmlu_pro item 999999 is not one of this run's questions")


def test_transcript_path_that_is_a_folder(tmp_path, config):
    rd = complete_run(config, tmp_path / "run")
    (path,) = rd.transcript_files()
    saved = path.read_bytes()
    path.unlink()
    path.mkdir()
    assert_bad_input(qatcmp("score", str(rd.path)), "transcripts/a.mmlu_pro.jsonl is a folder")
    resumed = qatcmp("run", "--config", str(config), "--out", str(rd.path), "--plain")
    assert_bad_input(resumed, "is a folder")
    path.rmdir()
    path.write_bytes(saved)  # nothing else was touched: the run is whole again
    assert qatcmp("score", str(rd.path)).returncode == 0


def test_complete_last_line_without_newline_is_kept_on_resume(tmp_path, server, config):
    """The data-loss case: the last record saved without its newline (an editor, a copy)
    was counted as done, then cut off by the torn-tail repair when the resume appended."""
    rd = complete_run(config, tmp_path / "run", *mmlu(4))
    (path,) = rd.transcript_files()
    lines = path.read_text().splitlines(keepends=True)
    kept = json.loads(lines[2])
    path.write_text("".join(lines[:2]) + lines[2].rstrip("\n"))  # record 4 missing, 3 unterminated
    asked_before = len(server.chat_requests())
    complete_run(config, rd.path, *mmlu(4))
    assert len(server.chat_requests()) - asked_before == 1  # only the missing one
    text = path.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == 4 == len({r["item_id"] for r in records})
    assert records[2] == kept


def test_unparsable_tail_is_still_cut_on_resume(tmp_path, server, config):
    rd = complete_run(config, tmp_path / "run", *mmlu(3))
    (path,) = rd.transcript_files()
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:40])
    complete_run(config, rd.path, *mmlu(3))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 3 == len({r["item_id"] for r in records})


# --------------------------------------------------------------------------- items


@pytest.mark.parametrize("command", ["score", "stats", "run"])
def test_edited_humaneval_tests_are_refused(tmp_path, config, command):
    rd = complete_run(config, tmp_path / "run", "--humaneval", "2", "--humaneval-data", "builtin")
    if command == "stats":
        assert qatcmp("score", str(rd.path)).returncode == 0  # scores exist and look current
    items = [json.loads(line) for line in rd.items.read_text().splitlines()]
    items[1]["test"] = "def check(candidate):\n    pass\n"  # every answer would pass
    rd.items.write_text("".join(json.dumps(i) + "\n" for i in items))
    scores_before = rd.scores.read_bytes() if rd.scores.exists() else None
    if command == "run":
        result = qatcmp("run", "--config", str(config), "--out", str(rd.path), "--plain")
    else:
        result = qatcmp(command, str(rd.path))
    assert_bad_input(result, "items.jsonl", f"humaneval item {items[1]['item_id']} is not the one this run was made with")
    assert (rd.scores.read_bytes() if rd.scores.exists() else None) == scores_before


def test_reordered_keys_of_an_item_are_not_an_edit(tmp_path, config):
    rd = complete_run(config, tmp_path / "run")
    items = [json.loads(line) for line in rd.items.read_text().splitlines()]
    rd.items.write_text("".join(json.dumps(dict(reversed(list(i.items()))), indent=None) + "\n" for i in items))
    assert qatcmp("score", str(rd.path)).returncode == 0


def test_manifest_item_missing_from_items_jsonl(tmp_path, config):
    rd = complete_run(config, tmp_path / "run")
    lines = rd.items.read_text().splitlines(keepends=True)
    missing = json.loads(lines[1])["item_id"]
    rd.items.write_text(lines[0] + lines[2])
    assert_bad_input(qatcmp("score", str(rd.path)), f"mmlu_pro item {missing} of the manifest is missing")
    resumed = qatcmp("run", "--config", str(config), "--out", str(rd.path), "--plain")
    assert_bad_input(resumed, f"mmlu_pro item {missing} of the manifest is missing")


# --------------------------------------------------------------------------- scores


@pytest.mark.parametrize("damage", ["cut_last_line", "bad_json", "edited_value", "dropped_line"])
def test_damaged_scores_are_made_again(tmp_path, config, damage):
    rd = complete_run(config, tmp_path / "run", *mmlu(4))
    assert qatcmp("score", str(rd.path)).returncode == 0
    good = rd.scores.read_bytes()
    lines = good.decode().splitlines(keepends=True)
    if damage == "cut_last_line":
        damaged = "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]
    elif damage == "bad_json":
        damaged = lines[0] + "{not json\n" + "".join(lines[2:])
    elif damage == "edited_value":
        record = json.loads(lines[0])
        record["correct"] = not record["correct"]
        damaged = json.dumps(record) + "\n" + "".join(lines[1:])
    else:
        damaged = "".join(lines[:-1])
    rd.scores.write_text(damaged)
    result = qatcmp("stats", str(rd.path), "--json")
    assert result.returncode == 0, result.stderr
    assert rd.scores.read_bytes() == good
    report = json.loads(result.stdout)
    assert report["benchmarks"][0]["models"][0]["n"] == 4


# --------------------------------------------------------------------------- sessions


def test_manifest_keeps_one_entry_per_session(tmp_path, server):
    dead = tmp_path / "dead.yaml"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead.write_text(make_config(f"http://127.0.0.1:{port}/v1"))
    good = tmp_path / "servers.yaml"
    good.write_text(make_config(server.base_url))
    out = tmp_path / "run"
    failed = qatcmp("run", "--config", str(dead), "--out", str(out), "--plain", *mmlu(3))
    assert failed.returncode != 0
    complete_run(good, out, *mmlu(3))
    complete_run(good, out)  # nothing left to do: still a session
    manifest = json.loads((out / "manifest.json").read_text())
    first, second, third = manifest["sessions"]
    assert str(dead) in first["command"] and first["outcome"].startswith("failed: ")
    assert first["config"]["servers"][0]["base_url"] == f"http://127.0.0.1:{port}/v1"
    assert first["sent"] == 0 and first["finished_at"]
    assert str(good) in second["command"] and second["outcome"] == "complete" and second["sent"] == 3
    assert second["config"]["servers"][0]["base_url"] == server.base_url
    assert second["servers"]["local"]["base_url"] == server.base_url and second["servers"]["local"]["models"]
    assert third["sent"] == 0 and third["outcome"] == "complete"
    assert manifest["command"] == third["command"]  # the top level is the latest session's


def test_an_old_manifest_without_sessions_or_hashes_still_works(tmp_path, config):
    rd = complete_run(config, tmp_path / "run", *mmlu(3))
    manifest = json.loads(rd.manifest.read_text())
    old_command = manifest["command"]
    for key in ("sessions", "item_hashes"):
        del manifest[key]
    rd.manifest.write_text(json.dumps(manifest))
    assert qatcmp("score", str(rd.path)).returncode == 0
    complete_run(config, rd.path, *mmlu(3))
    sessions = json.loads(rd.manifest.read_text())["sessions"]
    assert [s["command"] for s in sessions][0] == old_command
    assert len(sessions) == 2 and sessions[1]["sent"] == 0
