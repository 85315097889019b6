"""The run stage end to end against real mlx_lm.server processes over tiny models built by
the tests: three variants, reasoning captured separately, truncation recorded, resume sends
nothing, and variants sharing a server are scheduled with the fewest model swaps."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qatcmp.config import parse_config
from qatcmp.rundir import RunDir
from qatcmp.runner import Runner
from qatcmp.selection import plan_benchmarks

pytestmark = pytest.mark.server


def config_for(servers: list[tuple[str, str, dict[str, str]]], *, max_tokens: int = 256, concurrency: int = 4) -> str:
    """servers: (server name, base_url, {variant: model id})"""
    lines = ["servers:"]
    for name, url, _ in servers:
        lines += [f"  - name: {name}", f"    base_url: {url}", f"    max_concurrency: {concurrency}",
                  "    retries: {max_attempts: 3, initial_backoff: 0.1, max_backoff: 0.5}"]
    lines += ["defaults:", f"  sampling: {{temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, max_tokens: {max_tokens}}}", "models:"]
    for name, _, variants in servers:
        for variant, model_id in variants.items():
            lines += [f"  - name: {variant}", f"    server: {name}", f"    model: {model_id}"]
    return "\n".join(lines) + "\n"


def run(config_text: str, out: Path, *, mmlu: int, humaneval: int = 0, samples: int = 1):
    config = parse_config(config_text)
    plans = plan_benchmarks({"mmlu_pro": mmlu, "humaneval": humaneval}, {"mmlu_pro": "builtin", "humaneval": "builtin"}, seed=7)
    runner = Runner(config, config.models, plans, run_dir=out, seed=7, samples=samples)
    return asyncio.run(runner.execute())


@pytest.fixture()
def shared_server(mlx_servers):
    """One mlx_lm.server holding the three variants (it swaps between them)."""
    return mlx_servers.multi


def test_three_variants_on_one_server(shared_server, tmp_path):
    out = tmp_path / "run"
    text = config_for([("mlx", shared_server.base_url, shared_server.model_ids)])
    summary = run(text, out, mmlu=6, humaneval=2)
    assert summary.exit_code == 0 and summary.errors == 0
    records = RunDir(out).read_transcripts()
    assert len(records) == 3 * (6 + 2)
    for record in records:
        assert record.error is None
        assert record.finish_reason == "stop"
        # mlx-lm returns reasoning in `reasoning`, apart from the answer.
        assert record.reasoning_source == "reasoning"
        assert "think" in record.reasoning.lower()
        assert "<think>" not in (record.content or "")
        assert record.usage.completion_tokens > 0
        assert record.latency_s > 0 and record.ttft_s is not None
    mmlu = [r for r in records if r.benchmark == "mmlu_pro"]
    assert all("The answer is (" in r.content for r in mmlu)
    # The variants were built to disagree on some questions; same seed → same draw otherwise.
    answers = {}
    for r in mmlu:
        answers.setdefault(r.item_id, set()).add(r.content.strip())
    assert len(answers) == 6
    # Model-by-model: the server swapped models twice (4bit → 6bit → 8bit), not per question.
    assert summary.model_switches == 2
    manifest = RunDir(out).read_manifest()
    assert manifest.model_switches == 2
    assert set(manifest.servers["mlx"].models or []) >= set(shared_server.model_ids.values())


def test_tiny_budget_records_length_and_keeps_the_partial_reasoning(shared_server, tmp_path):
    variants = {"4bit": shared_server.model_ids["4bit"]}
    text = config_for([("mlx", shared_server.base_url, variants)], max_tokens=5)
    run(text, tmp_path / "run", mmlu=2)
    records = RunDir(tmp_path / "run").read_transcripts()
    assert len(records) == 2
    for record in records:
        assert record.finish_reason == "length"
        assert record.reasoning  # the partial thinking
        assert not (record.content or "").strip()  # no answer to score
        assert record.usage.completion_tokens == 5


def test_resume_sends_no_request_and_changes_nothing(shared_server, tmp_path):
    out = tmp_path / "run"
    text = config_for([("mlx", shared_server.base_url, shared_server.model_ids)])
    first = run(text, out, mmlu=3)
    before = {p.name: p.read_bytes() for p in RunDir(out).transcript_files()}
    second = run(text, out, mmlu=3)
    assert first.sent == 9 and second.sent == 0 and second.skipped_done == 9
    assert {p.name: p.read_bytes() for p in RunDir(out).transcript_files()} == before


def test_separate_servers_run_in_parallel(mlx_servers, tmp_path):
    servers = [mlx_servers.single("4bit"), mlx_servers.single("8bit")]
    text = config_for([(f"s{i}", s.base_url, {variant: s.model_ids[next(iter(s.model_ids))]})
                       for i, (variant, s) in enumerate(zip(("4bit", "8bit"), servers))])
    summary = run(text, tmp_path / "run", mmlu=3)
    assert summary.errors == 0 and summary.model_switches == 0
    by_model = {}
    for record in RunDir(tmp_path / "run").read_transcripts():
        by_model.setdefault(record.model, []).append(record)
    assert sorted(by_model) == ["4bit", "8bit"] and all(len(v) == 3 for v in by_model.values())


def test_cli_run_against_the_real_server_and_check(shared_server, tmp_path):
    config = tmp_path / "servers.yaml"
    config.write_text(config_for([("mlx", shared_server.base_url, shared_server.model_ids)]))
    check = subprocess.run([sys.executable, "-m", "qatcmp", "check", "--config", str(config)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("yes (reasoning)") == 3
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "qatcmp", "run", "--config", str(config), "--out", str(out),
                             "--mmlu-pro", "2", "--mmlu-pro-data", "builtin"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Requests sent: 6" in result.stdout
    lines = [json.loads(line) for p in RunDir(out).transcript_files() for line in p.read_text().splitlines()]
    assert len(lines) == 6
