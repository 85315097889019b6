"""Scoring a real run: transcripts written by the run stage from real mlx_lm.server
processes (the demo's tiny models), scored with `qatcmp score`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qatcmp.cli import main
from qatcmp.config import parse_config
from qatcmp.rundir import RunDir
from qatcmp.runner import Runner
from qatcmp.scoring import read_scores_meta
from qatcmp.selection import plan_benchmarks

pytestmark = pytest.mark.server


def config_text(base_url: str, variants: dict[str, str], max_tokens: int) -> str:
    lines = ["servers:", "  - name: mlx", f"    base_url: {base_url}", "    max_concurrency: 4",
             "defaults:", f"  sampling: {{temperature: 1.0, top_p: 1.0, max_tokens: {max_tokens}}}", "models:"]
    for variant, model_id in variants.items():
        lines += [f"  - name: {variant}", "    server: mlx", f"    model: {model_id}"]
    return "\n".join(lines) + "\n"


def test_score_a_real_run(mlx_servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = mlx_servers.multi
    config = parse_config(config_text(server.base_url, server.model_ids, max_tokens=256))
    plans = plan_benchmarks({"mmlu_pro": 6, "humaneval": 3}, {"mmlu_pro": "builtin", "humaneval": "builtin"}, seed=3)
    out = tmp_path / "run"
    summary = asyncio.run(Runner(config, config.models, plans, run_dir=out, seed=3, samples=1).execute())
    assert summary.exit_code == 0

    assert main(["score", str(out), "--jobs", "2"]) == 0
    assert "sandbox protections" in capsys.readouterr().out
    rd = RunDir(out)
    transcripts = {t.key: t for t in rd.read_transcripts()}
    scores = rd.read_scores()
    assert {s.key for s in scores} == set(transcripts) and len(scores) == 3 * (6 + 3)
    items = {(i.benchmark, i.item_id): i for i in rd.read_items()}
    for s in scores:
        t = transcripts[s.key]
        assert (s.finish_reason, s.completion_tokens, s.content_chars) == (
            t.finish_reason, t.usage.completion_tokens if t.usage else None, len(t.content or ""))
        if s.benchmark == "mmlu_pro":
            # The tiny models end with "The answer is (X)"; the letter is what they said.
            assert s.status == "answered" and s.extraction_rule == "answer_is"
            assert f"The answer is ({s.extracted})" in t.content
            assert s.correct == (s.extracted == items[("mmlu_pro", s.item_id)].answer)
        else:
            # They answer HumanEval with a body-only block, `return []`, which runs and fails.
            assert s.extraction_rule == "fenced_body" and "return []" in s.extracted
            assert s.status in ("passed", "failed")
            assert s.status == "passed" or s.detail
    assert read_scores_meta(rd)["records"] == len(scores)
