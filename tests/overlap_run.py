"""Test helper: run two variants (models m1, m2) on one real local HTTP server and tell whether
the second variant started while the first one's last answers were still out."""

from __future__ import annotations

from pathlib import Path

from qatcmp.cli import main
from qatcmp.rundir import RunDir


def second_variant_starts_early(tmp_path: Path, base_url: str, server_yaml: str = "",
                                second_model: str = "{name: b, server: one, model: m2}") -> bool:
    config = tmp_path / "servers.yaml"
    config.write_text(f"""
servers:
  - name: one
    base_url: {base_url}
    max_concurrency: 4
{server_yaml}    retries: {{max_attempts: 1, initial_backoff: 0.01, max_backoff: 0.05}}
defaults:
  sampling: {{temperature: 0.0, max_tokens: 64}}
models:
  - {{name: a, server: one, model: m1}}
  - {second_model}
""")
    code = main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--mmlu-pro", "9",
                 "--mmlu-pro-data", "builtin", "--plain"])
    assert code == 0
    records = RunDir(tmp_path / "run").read_transcripts()
    assert len(records) == 18
    first, second = sorted({r.model for r in records}, key=lambda m: min(r.started_at for r in records if r.model == m))
    last_of_first = max(r.finished_at for r in records if r.model == first)
    first_of_second = min(r.started_at for r in records if r.model == second)
    return first_of_second < last_of_first
