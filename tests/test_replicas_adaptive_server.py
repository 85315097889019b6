"""Adaptive runs (`--until-decided`) over replicas, against real mlx_lm.server processes: one
variant on two replicas and one on a server of its own. Every item of each block is asked
exactly once per variant, both replicas answer, every variant finishes block k before any
request of block k + 1 starts, a replica stopped mid-run hands its work to the other, and a
run killed with -9 resumes without asking anything twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from qatcmp.cli import main
from qatcmp.rundir import RunDir
from replica_stop import stop_once_it_answered

pytestmark = pytest.mark.server

BLOCK, BUDGET = 4, 8


def adaptive_config(replicas: dict[str, str], single: str, model_a: str, model_b: str, *, outage_wait: float = 1.0) -> str:
    lines = ["servers:"]
    for name, url in {**replicas, "solo": single}.items():
        lines += [f"  - name: {name}", f"    base_url: {url}", "    max_concurrency: 2",
                  "    retries: {max_attempts: 2, initial_backoff: 0.1, max_backoff: 0.3}",
                  f"    outage: {{after_failures: 1, wait: {outage_wait}}}"]
    lines += ["defaults:", "  sampling: {temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, max_tokens: 32}",
              "models:", f"  - name: q4\n    server: [{', '.join(replicas)}]\n    model: {model_a}",
              f"  - name: q8\n    server: solo\n    model: {model_b}"]
    return "\n".join(lines) + "\n"


def command(config: Path, out: Path) -> list[str]:
    # Margin 0: no pair can be equivalent, so the run goes on for several blocks.
    return ["run", "--config", str(config), "--out", str(out), "--mmlu-pro", str(BUDGET), "--mmlu-pro-data", "builtin",
            "--until-decided", "--block", str(BLOCK), "--margin", "0", "--plain"]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for p in RunDir(out).transcript_files() for line in p.read_text().splitlines() if line.strip()]


def check_blocks(out: Path) -> list[dict]:
    """Each variant's questions: a prefix of whole blocks of the nested sample, each once; no
    request of block k + 1 started before every request of block k had finished."""
    rows = records(out)
    order = RunDir(out).read_manifest().spec.benchmarks[0].item_ids
    position = {item: i for i, item in enumerate(order)}
    per_variant = Counter((r["model"], r["item_id"]) for r in rows)
    assert max(per_variant.values()) == 1, "a question was asked twice"
    asked = {}
    for r in rows:
        asked.setdefault(r["model"], []).append(position[r["item_id"]])
    blocks_done = {model: len(ids) for model, ids in asked.items()}
    for model, ids in asked.items():
        assert sorted(ids) == list(range(len(ids))), model  # a prefix of the nested sample
    assert len(set(blocks_done.values())) == 1 or min(blocks_done.values()) % BLOCK == 0
    by_block: dict[int, list[dict]] = {}
    for r in rows:
        by_block.setdefault(position[r["item_id"]] // BLOCK, []).append(r)
    for k in sorted(by_block)[1:]:
        finished = max(datetime.fromisoformat(r["finished_at"]) for r in by_block[k - 1])
        started = min(datetime.fromisoformat(r["started_at"]) for r in by_block[k])
        assert finished <= started, f"block {k} started before block {k - 1} was over"
    return rows


@pytest.fixture()
def two_replicas(mlx_servers, demo_models):
    servers = [mlx_servers.start(demo_models["4bit"]) for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def setup(tmp_path, two_replicas, mlx_servers, **kwargs) -> tuple[Path, Path]:
    a, b = two_replicas
    solo = mlx_servers.single("8bit")
    config = tmp_path / "servers.yaml"
    config.write_text(adaptive_config({"r1": a.base_url, "r2": b.base_url}, solo.base_url,
                                      next(iter(a.model_ids.values())), next(iter(solo.model_ids.values())), **kwargs))
    return config, tmp_path / "run"


def test_blocks_of_an_adaptive_run_are_spread_over_both_replicas_each_item_once(two_replicas, mlx_servers, tmp_path):
    config, out = setup(tmp_path, two_replicas, mlx_servers)
    assert main(command(config, out)) in (0, 1)
    rows = check_blocks(out)
    q4 = [r for r in rows if r["model"] == "q4"]
    assert {r["server"] for r in q4} == {"r1", "r2"}  # both replicas took part, and are named
    assert {r["server"] for r in rows if r["model"] == "q8"} == {"solo"}
    assert all(r["error"] is None for r in rows)
    assert len(q4) >= BLOCK
    state = json.loads((out / "adaptive.json").read_text())
    assert state["benchmarks"]["mmlu_pro"]["blocks_done"] * BLOCK >= len(q4) - BLOCK


def test_a_replica_stopped_mid_adaptive_run_hands_its_work_to_the_other(two_replicas, mlx_servers, tmp_path):
    config, out = setup(tmp_path, two_replicas, mlx_servers, outage_wait=300.0)
    _, r2 = two_replicas
    transcript = RunDir(out).transcript_file("q4", "mmlu_pro")

    watcher = stop_once_it_answered(transcript, "r2", r2.stop, timeout=120)
    started = time.monotonic()
    try:
        code = main(command(config, out))
    finally:
        watcher.join()
    assert time.monotonic() - started < 200  # the other replica took the work: no 300 s wait
    assert code in (0, 1)
    rows = check_blocks(out)
    q4 = [r for r in rows if r["model"] == "q4"]
    assert all(r["error"] is None for r in rows)
    by_server = Counter(r["server"] for r in q4)
    assert by_server["r2"] >= 1 and by_server["r1"] > by_server["r2"]
    state = json.loads((out / "adaptive.json").read_text())
    # Every block the decisions looked at was answered in full by both variants.
    assert state["benchmarks"]["mmlu_pro"]["questions_asked"] == len(q4) or state["finished"]


def test_kill_9_mid_adaptive_run_over_replicas_then_resume_asks_nothing_twice(two_replicas, mlx_servers, tmp_path):
    config, out = setup(tmp_path, two_replicas, mlx_servers)
    cmd = [sys.executable, "-m", "qatcmp", *command(config, out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(records_safe(out)) < BLOCK + 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    written = len(records_safe(out))
    assert BLOCK + 2 <= written < 2 * BUDGET, "the run should have been killed half-way"
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode in (0, 1), resumed.stderr
    rows = check_blocks(out)  # no question twice, blocks whole and in order across the kill
    assert len(rows) > written
    assert {r["server"] for r in rows if r["model"] == "q4"} == {"r1", "r2"}


def records_safe(out: Path) -> list[str]:
    # Read while the run writes: only whole lines count (the last one may be half-written).
    lines = []
    if not (out / "transcripts").is_dir():
        return lines
    for path in (out / "transcripts").glob("*.jsonl"):
        lines += [line for line in path.read_text().splitlines() if line.endswith("}")]
    return lines
