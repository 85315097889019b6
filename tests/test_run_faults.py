"""The run stage against a local server that misbehaves on cue: every fault a real backend
shows is retried or fails fast as it should, and the transcripts hold each question exactly
once afterwards."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from misbehaving_server import MisbehavingServer, answer_for
from qatcmp.config import parse_config
from qatcmp.records import TranscriptRecord
from qatcmp.rundir import RunDir
from qatcmp.runner import Runner, RunAborted
from qatcmp.selection import plan_benchmarks


def make_config(base_url: str, *, stream: bool = True, attempts: int = 4, read: float = 30.0,
                concurrency: int = 2, thinking: bool = True, key_env: str | None = None) -> str:
    key = f"\n    api_key_env: {key_env}" if key_env else ""
    return f"""
servers:
  - name: local
    base_url: {base_url}{key}
    max_concurrency: {concurrency}
    stream: {str(stream).lower()}
    timeouts: {{connect: 2, read: {read}, total: 60}}
    retries: {{max_attempts: {attempts}, initial_backoff: 0.01, max_backoff: 0.05}}
defaults:
  sampling: {{temperature: 0.0, max_tokens: 64}}
models:
  - name: a
    server: local
    model: test-model
    thinking: {str(thinking).lower()}
"""


def run_once(config_text: str, out: Path, *, mmlu: int = 1, retry_errors: bool = True):
    config = parse_config(config_text)
    plans = plan_benchmarks({"mmlu_pro": mmlu}, {"mmlu_pro": "builtin"}, seed=3)
    runner = Runner(config, config.models, plans, run_dir=out, seed=3, samples=1, retry_errors=retry_errors)
    summary = asyncio.run(runner.execute())
    return summary, plans


def raw_records(out: Path) -> list[dict]:
    """Every complete record; a file's last line may be half written when it is read while a
    run writes it (the run's torn-tail repair drops such a line on resume)."""
    records = []
    for path in RunDir(out).transcript_files():
        lines = path.read_text().splitlines()
        records += [json.loads(line) for line in lines[:-1]]
        if lines:
            try:
                records.append(json.loads(lines[-1]))
            except ValueError:
                pass
    return records


FAULTS_STREAMING = [
    "status:503",
    "status:429",
    "status:500",
    "status:502",
    "status:409",
    "status:507",
    "stream_error",
    "cut_mid_stream",
    "no_done",
    "mlxerror:503",
]
FAULTS_PLAIN = ["error_in_200", "spaces_then_cut", "status:503", "mlxerror:500"]


@pytest.mark.parametrize("fault", FAULTS_STREAMING)
def test_streaming_fault_is_retried_and_recorded_once(tmp_path, fault):
    with MisbehavingServer() as server:
        server.queue(fault)
        summary, plans = run_once(make_config(server.base_url), tmp_path / "run")
        requests = server.chat_requests()
    records = raw_records(tmp_path / "run")
    assert len(records) == 1, records
    record = TranscriptRecord.model_validate(records[0])
    assert record.error is None
    assert record.attempts == 2
    assert record.content == answer_for(requests[-1]["body"])
    assert record.reasoning == "Thinking it over."
    assert record.reasoning_source == "reasoning_content"
    assert record.finish_reason == "stop"
    assert [r["behaviour"] for r in requests] == [fault, "ok"]
    assert summary.exit_code == 0


@pytest.mark.parametrize("fault", FAULTS_PLAIN)
def test_non_streaming_fault_is_retried_and_recorded_once(tmp_path, fault):
    with MisbehavingServer() as server:
        server.queue(fault)
        run_once(make_config(server.base_url, stream=False), tmp_path / "run")
    records = raw_records(tmp_path / "run")
    assert len(records) == 1
    assert records[0]["error"] is None and records[0]["attempts"] == 2
    assert records[0]["usage"]["total_time"] == 0.01  # server extras are kept


def test_read_timeout_is_retried(tmp_path):
    with MisbehavingServer() as server:
        server.queue("slow:3")
        run_once(make_config(server.base_url, read=0.5), tmp_path / "run")
    (record,) = raw_records(tmp_path / "run")
    assert record["error"] is None and record["attempts"] == 2


def test_retry_after_is_honoured(tmp_path):
    with MisbehavingServer() as server:
        server.queue("status:503,1")
        started = time.monotonic()
        run_once(make_config(server.base_url), tmp_path / "run")
        elapsed = time.monotonic() - started
    # Backoff alone is at most 0.05 s here; the server asked for a one-second pause.
    assert elapsed >= 1.0


def test_exhausted_retries_write_an_error_record_and_the_run_goes_on(tmp_path):
    with MisbehavingServer() as server:
        server.queue("status:503", "status:503", "status:503")  # all attempts of the first request
        summary, plans = run_once(make_config(server.base_url, attempts=3, concurrency=1), tmp_path / "run", mmlu=3)
    records = [TranscriptRecord.model_validate(r) for r in raw_records(tmp_path / "run")]
    assert len(records) == 3
    failed = [r for r in records if r.error]
    assert len(failed) == 1
    assert failed[0].attempts == 3 and failed[0].error_kind == "http_503" and "503" in failed[0].error
    assert failed[0].content is None
    assert summary.errors == 1 and summary.exit_code == 1


def test_resume_retries_only_the_error_and_leaves_one_valid_record_per_question(tmp_path):
    out = tmp_path / "run"
    with MisbehavingServer() as server:
        server.queue("status:500", "status:500")
        run_once(make_config(server.base_url, attempts=2, concurrency=1), out, mmlu=3)
        before = len(server.chat_requests())
        summary, _ = run_once(make_config(server.base_url, attempts=2, concurrency=1), out, mmlu=3)
        assert len(server.chat_requests()) - before == 1  # only the failed question
    latest = RunDir(out).read_transcripts()
    assert len(latest) == 3 and all(r.ok for r in latest)
    assert summary.exit_code == 0


def test_complete_run_sends_zero_requests_on_resume(tmp_path):
    out = tmp_path / "run"
    with MisbehavingServer() as server:
        run_once(make_config(server.base_url), out, mmlu=4)
        first = len(server.chat_requests())
        summary, _ = run_once(make_config(server.base_url), out, mmlu=4)
        assert len(server.chat_requests()) == first == 4
    assert summary.sent == 0 and summary.skipped_done == 4


def test_changed_config_is_refused(tmp_path):
    from qatcmp.errors import ConfigError

    out = tmp_path / "run"
    with MisbehavingServer() as server:
        run_once(make_config(server.base_url), out)
        changed = make_config(server.base_url).replace("temperature: 0.0", "temperature: 0.7")
        with pytest.raises(ConfigError, match="different set-up.*temperature"):
            run_once(changed, out)


def test_many_faults_under_concurrency_leave_no_duplicate_and_no_gap(tmp_path):
    faults = ["stream_error", "cut_mid_stream", "status:503", "no_done", "status:409", "ok"] * 3
    with MisbehavingServer() as server:
        server.queue(*faults)
        summary, plans = run_once(make_config(server.base_url, concurrency=4, attempts=8), tmp_path / "run", mmlu=12)
    records = raw_records(tmp_path / "run")
    keys = [(r["model"], r["item_id"]) for r in records]
    assert len(keys) == len(set(keys)) == 12
    assert {r["item_id"] for r in records} == set(plans[0].selection.item_ids)
    assert all(r["error"] is None for r in records)


def test_truncated_thinking_repeated_as_content_is_not_taken_as_an_answer(tmp_path):
    with MisbehavingServer() as server:
        server.queue("length")
        run_once(make_config(server.base_url), tmp_path / "run")
    (record,) = raw_records(tmp_path / "run")
    assert record["finish_reason"] == "length"
    assert record["content"] is None
    assert record["reasoning"] == "Okay, let"


def test_unknown_model_aborts_the_run_with_the_servers_message(tmp_path):
    with MisbehavingServer(models=["other-model"]) as server:
        with pytest.raises(RunAborted, match="HTTP 404.*not found"):
            run_once(make_config(server.base_url), tmp_path / "run", mmlu=3)
        assert len(server.chat_requests()) <= 2  # fails fast, not once per question


def test_warns_once_when_a_thinking_model_returns_no_reasoning(tmp_path, monkeypatch):
    import misbehaving_server

    monkeypatch.setattr(misbehaving_server._Handler, "_sse_answer", _answer_without_reasoning)
    with MisbehavingServer() as server:
        summary, _ = run_once(make_config(server.base_url, concurrency=1), tmp_path / "run", mmlu=5)
    assert len(summary.warnings) == 1
    assert "no reasoning" in summary.warnings[0]
    assert RunDir(tmp_path / "run").read_manifest().warnings == summary.warnings


def _answer_without_reasoning(self, body):
    self._sse_start()
    self._sse({"id": "x", "choices": [{"index": 0, "delta": {"content": answer_for(body)}, "finish_reason": "stop"}]})
    self._sse_raw("data: [DONE]\n\n")


def test_request_records_every_parameter_and_the_manifest_holds_server_info(tmp_path):
    with MisbehavingServer() as server:
        run_once(make_config(server.base_url), tmp_path / "run", mmlu=2)
        bodies = [r["body"] for r in server.chat_requests()]
    records = raw_records(tmp_path / "run")
    for record in records:
        sent = next(b for b in bodies if b["messages"] == record["messages"])
        assert record["request"] == {k: v for k, v in sent.items() if k != "messages"}
        assert record["request"]["chat_template_kwargs"] == {"enable_thinking": True}
        assert record["usage"]["cached_tokens"] == 4
        assert record["usage"]["generation_tokens_per_second"] == 800.0
    assert len({r["request"]["seed"] for r in records}) == 2  # one seed per question
    manifest = RunDir(tmp_path / "run").read_manifest()
    assert manifest.servers["local"].models == ["test-model"]
    assert set(manifest.spec.benchmarks[0].item_ids) == {r["item_id"] for r in records}


def test_non_streaming_cut_off_thinking_is_recorded_as_reasoning(tmp_path, monkeypatch):
    # oMLX, non-streaming, budget exhausted while thinking: the unfinished reasoning comes
    # back as content with no reasoning field and no tag (seen on oMLX 0.5.3).
    import misbehaving_server

    def cut_off(self, body, arg):
        self._json(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Let me think about this question"},
                                      "finish_reason": "length"}], "usage": {"prompt_tokens": 5, "completion_tokens": 8}})

    monkeypatch.setattr(misbehaving_server._Handler, "_b_ok", cut_off)
    with MisbehavingServer() as server:
        summary, _ = run_once(make_config(server.base_url, stream=False, concurrency=1), tmp_path / "run", mmlu=4)
    records = raw_records(tmp_path / "run")
    assert len(records) == 4
    for record in records:
        assert record["content"] is None
        assert record["reasoning"] == "Let me think about this question"
        assert record["reasoning_source"] == "unclosed_in_content"
    assert summary.warnings == []  # cut-off answers are not "no reasoning"


def test_one_rejected_prompt_does_not_stop_the_run(tmp_path):
    with MisbehavingServer() as server:
        server.queue("status:400")  # e.g. a prompt over the context window
        summary, _ = run_once(make_config(server.base_url, concurrency=1), tmp_path / "run", mmlu=3)
    records = [TranscriptRecord.model_validate(r) for r in raw_records(tmp_path / "run")]
    assert len(records) == 3
    assert sum(r.error is not None for r in records) == 1 and records[0].attempts == 1
    assert summary.exit_code == 1


def test_a_rejected_parameter_stops_the_run_after_a_few_requests(tmp_path):
    with MisbehavingServer() as server:
        server.queue(*["status:422"] * 10)
        with pytest.raises(RunAborted, match="HTTP 422"):
            run_once(make_config(server.base_url, concurrency=1), tmp_path / "run", mmlu=8)
        assert len(server.chat_requests()) == 3


def test_resume_without_models_option_uses_the_runs_own_variants(tmp_path):
    config_text = make_config("http://127.0.0.1:1/v1") + """  - name: b
    server: local
    model: test-model
"""
    with MisbehavingServer() as server:
        config = tmp_path / "servers.yaml"
        config.write_text(config_text.replace("http://127.0.0.1:1/v1", server.base_url))
        from qatcmp.cli import main

        out = str(tmp_path / "run")
        assert main(["run", "--config", str(config), "--out", out, "--models", "a", "--mmlu-pro", "2",
                     "--mmlu-pro-data", "builtin", "--plain"]) == 0
        assert main(["run", "--config", str(config), "--out", out, "--plain"]) == 0
        assert len(server.chat_requests()) == 2


def test_samples_ask_each_question_k_times_with_distinct_seeds(tmp_path):
    with MisbehavingServer() as server:
        config = parse_config(make_config(server.base_url))
        plans = plan_benchmarks({"mmlu_pro": 2}, {"mmlu_pro": "builtin"}, seed=3)
        runner = Runner(config, config.models, plans, run_dir=tmp_path / "run", seed=3, samples=3)
        summary = asyncio.run(runner.execute())
    records = RunDir(tmp_path / "run").read_transcripts()
    assert summary.sent == 6 and len(records) == 6
    assert sorted((r.item_id, r.sample) for r in records) == sorted(
        (i, k) for i in plans[0].selection.item_ids for k in range(3))
    assert len({r.request["seed"] for r in records}) == 6
