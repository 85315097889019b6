"""Crash safety: a run killed with SIGKILL mid-way loses at most the requests in flight,
and the same command completes it with every question exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from misbehaving_server import MisbehavingServer
from qatcmp.rundir import RunDir, repair_torn_tail
from test_run_faults import make_config


def start_run(config: Path, out: Path, n: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "qatcmp", "run", "--config", str(config), "--out", str(out),
         "--mmlu-pro", str(n), "--mmlu-pro-data", "builtin", "--plain"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def transcript_lines(out: Path) -> list[str]:
    return [line for p in RunDir(out).transcript_files() for line in p.read_text().splitlines()]


def test_kill_9_mid_run_then_resume(tmp_path):
    n = 40
    out = tmp_path / "run"
    with MisbehavingServer(delay=0.05) as server:
        config = tmp_path / "servers.yaml"
        config.write_text(make_config(server.base_url, concurrency=4))
        proc = start_run(config, out, n)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(transcript_lines(out)) < 8:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        written = len(transcript_lines(out))
        assert 8 <= written < n, "the run should have been killed half-way"

        resumed = start_run(config, out, n)
        _, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        sent_after_resume = len(server.chat_requests())

    lines = transcript_lines(out)
    records = [json.loads(line) for line in lines]  # every line is valid JSON
    ids = [r["item_id"] for r in records]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == n
    assert set(ids) == set(RunDir(out).read_manifest().spec.benchmarks[0].item_ids)
    # The second run asked only what was missing (plus what was in flight at the kill).
    assert sent_after_resume <= n + 4


def test_torn_last_line_is_dropped_and_cut_before_appending(tmp_path):
    out = tmp_path / "run"
    with MisbehavingServer() as server:
        config = tmp_path / "servers.yaml"
        config.write_text(make_config(server.base_url))
        first = start_run(config, out, 3)
        assert first.wait(timeout=60) == 0
        (path,) = RunDir(out).transcript_files()
        lines = path.read_text().splitlines(keepends=True)
        # Simulate a crash during the write of the last record.
        path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
        assert len(RunDir(out).read_transcripts()) == 2  # the torn line is not a record
        second = start_run(config, out, 3)
        assert second.wait(timeout=60) == 0
    text = path.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert sorted(r["item_id"] for r in records) == sorted({r["item_id"] for r in records})
    assert len(records) == 3


def test_repair_torn_tail_keeps_complete_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c":')
    assert repair_torn_tail(path) == len(b'{"c":')
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    assert repair_torn_tail(path) == 0


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    with MisbehavingServer(delay=0.05) as server:
        config = tmp_path / "servers.yaml"
        config.write_text(make_config(server.base_url, concurrency=2))
        proc = start_run(config, out, 40)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(transcript_lines(out)) < 4:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Resume with" in err and f"--out {out}" in err
    assert "Traceback" not in err
    records = [json.loads(line) for line in transcript_lines(out)]
    assert 4 <= len(records) < 40
    assert all(r["error"] is None for r in records)  # cancelled requests leave no record
