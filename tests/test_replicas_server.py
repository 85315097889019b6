"""One variant on two real mlx_lm.server replicas (the same demo model): every question is
answered exactly once, the transcripts name both replicas, a replica stopped mid-run has its
work moved to the other, and a finished run resumes to nothing."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from qatcmp.config import parse_config
from qatcmp.rundir import RunDir
from qatcmp.runner import Runner
from qatcmp.selection import plan_benchmarks
from replica_stop import stop_once_it_answered

pytestmark = pytest.mark.server


def replica_config(urls: dict[str, str], model_id: str, *, concurrency: int = 2, outage_wait: float = 1.0) -> str:
    lines = ["servers:"]
    for name, url in urls.items():
        lines += [f"  - name: {name}", f"    base_url: {url}", f"    max_concurrency: {concurrency}",
                  "    retries: {max_attempts: 2, initial_backoff: 0.1, max_backoff: 0.3}",
                  f"    outage: {{after_failures: 1, wait: {outage_wait}}}"]
    lines += ["defaults:", "  sampling: {temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, max_tokens: 64}",
              "models:", "  - name: q4", f"    server: [{', '.join(urls)}]", f"    model: {model_id}"]
    return "\n".join(lines) + "\n"


def run(text: str, out: Path, mmlu: int):
    config = parse_config(text)
    plans = plan_benchmarks({"mmlu_pro": mmlu}, {"mmlu_pro": "builtin"}, seed=7)
    summary = asyncio.run(Runner(config, config.models, plans, run_dir=out, seed=7, samples=1).execute())
    return summary, plans[0].selection.item_ids


@pytest.fixture()
def two_replicas(mlx_servers, demo_models):
    servers = [mlx_servers.start(demo_models["4bit"]) for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def test_one_variant_on_two_replicas_answers_every_question_once(two_replicas, tmp_path):
    a, b = two_replicas
    text = replica_config({"r1": a.base_url, "r2": b.base_url}, next(iter(a.model_ids.values())))
    summary, item_ids = run(text, tmp_path / "run", mmlu=16)
    records = RunDir(tmp_path / "run").read_transcripts()
    assert sorted(r.item_id for r in records) == sorted(item_ids)
    assert all(r.error is None for r in records)
    assert {r.server for r in records} == {"r1", "r2"}
    assert summary.exit_code == 0
    manifest = RunDir(tmp_path / "run").read_manifest()
    assert set(manifest.servers) == {"r1", "r2"}
    assert manifest.servers["r1"].base_url != manifest.servers["r2"].base_url
    again, _ = run(text, tmp_path / "run", mmlu=16)  # resume: whichever replica answered, done is done
    assert again.sent == 0 and again.skipped_done == 16


@pytest.mark.parametrize("outage_wait", [1.0, 300.0])
def test_a_replica_stopped_mid_run_hands_its_work_to_the_other(two_replicas, tmp_path, outage_wait):
    # With a long outage wait, the other replica takes the work while the stopped one is
    # waited for, and the run ends when everything is answered (not after the wait).
    a, b = two_replicas
    out = tmp_path / "run"
    text = replica_config({"r1": a.base_url, "r2": b.base_url}, next(iter(a.model_ids.values())), outage_wait=outage_wait)
    transcript = RunDir(out).transcript_file("q4", "mmlu_pro")

    watcher = stop_once_it_answered(transcript, "r2", b.stop, timeout=60)
    started = time.monotonic()
    try:
        summary, item_ids = run(text, out, mmlu=20)
    finally:
        watcher.join()
    assert time.monotonic() - started < 90  # not the 300 s wait
    records = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert sorted(r["item_id"] for r in records) == sorted(item_ids)  # each exactly once
    assert all(r["error"] is None for r in records)
    by_server = {s: sum(r["server"] == s for r in records) for s in ("r1", "r2")}
    assert by_server["r2"] >= 1 and by_server["r1"] > by_server["r2"]
    assert summary.exit_code == 0 and not summary.down
    if outage_wait < 60:  # the wait ran out during the run: said once, as a warning
        assert any("r2" in w and "went to the other servers" in w for w in summary.warnings)
