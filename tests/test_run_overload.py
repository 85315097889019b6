"""Overload, outages and the check before the run, against real local servers: a server that
admits only a few requests at once (answering the rest like oMLX's full queue), a server that
stops and comes back on the same port (the misbehaving server and a real mlx_lm.server), and
one that never comes back."""

from __future__ import annotations

import threading
import time

import pytest

from misbehaving_server import MisbehavingServer
from qatcmp.cli import main
from qatcmp.rundir import RunDir
from test_run_faults import make_config, raw_records, run_once


def _with(text: str, extra: str) -> str:
    """Add server fields to make_config's single server."""
    return text.replace("    stream: ", f"{extra}\n    stream: ", 1)


@pytest.mark.parametrize("stream,refusal", [(True, "queue_full"), (False, "queue_full"), (True, "429"), (True, "503")])
def test_too_high_max_concurrency_loses_nothing_and_learns_the_limit(tmp_path, stream, refusal):
    with MisbehavingServer(capacity=2, delay=0.15, refusal=refusal) as server:
        config = make_config(server.base_url, concurrency=16, attempts=3, stream=stream)
        summary, plans = run_once(config, tmp_path / "run", mmlu=24)
        refused = sum(r["behaviour"] == "queue_full" for r in server.chat_requests())
        peak = server.peak_in_flight
    records = raw_records(tmp_path / "run")
    assert sorted(r["item_id"] for r in records) == sorted(plans[0].selection.item_ids)  # each exactly once
    assert all(r["error"] is None for r in records)
    assert summary.errors == 0 and summary.exit_code == 0
    assert peak == 2 and refused > 0
    # The client backed off: the first burst, then about one probe of a higher limit per
    # few answers (a fixed 16 in flight would be refused hundreds of times).
    assert refused < 14 + 24
    (warning,) = [w for w in summary.warnings if "said it was full" in w]
    assert "set max_concurrency: 2" in warning


def test_capacity_stated_by_the_server_is_warned_about_in_check_and_run(tmp_path, capsys):
    with MisbehavingServer(status={"scheduler": {"max_concurrent_requests": 2}}) as server:
        config = tmp_path / "servers.yaml"
        config.write_text(make_config(server.base_url, concurrency=8))
        assert main(["check", "--config", str(config)]) == 0
        checked = capsys.readouterr().out
        assert main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--mmlu-pro", "2",
                     "--mmlu-pro-data", "builtin", "--plain"]) == 0
        ran = capsys.readouterr()
    line = "server 'local': max_concurrency 8 is above the 2 requests it runs at once"
    assert line in checked.replace("\n", " ")
    assert line in ran.err and line in ran.out
    assert any(line in w for w in RunDir(tmp_path / "run").read_manifest().warnings)


def _stop_after_answers(server, out_dir, answers: int) -> None:
    """Stop the server once a few answers are in: mid-run, whatever the machine's speed."""
    deadline = time.monotonic() + 60
    while len(raw_records(out_dir)) < answers and time.monotonic() < deadline:
        time.sleep(0.02)
    server.stop()


def test_a_server_that_goes_away_and_comes_back_loses_nothing(tmp_path):
    first = MisbehavingServer(delay=0.1)
    port = first.port
    first.__enter__()
    restarted: list[MisbehavingServer] = []

    def outage() -> None:
        _stop_after_answers(first, tmp_path / "run", 3)
        time.sleep(2.0)
        restarted.append(MisbehavingServer(delay=0.1, port=port).__enter__())

    thread = threading.Thread(target=outage)
    thread.start()
    try:
        config = _with(make_config(first.base_url, concurrency=2, attempts=3), "    outage: {after_failures: 2, wait: 30}")
        started = time.monotonic()
        summary, plans = run_once(config, tmp_path / "run", mmlu=20)
        elapsed = time.monotonic() - started
    finally:
        thread.join()
        for server in restarted:
            server.stop()
    records = raw_records(tmp_path / "run")
    assert sorted(r["item_id"] for r in records) == sorted(plans[0].selection.item_ids)
    assert all(r["error"] is None for r in records), [r["error"] for r in records if r["error"]]
    assert summary.exit_code == 0 and summary.errors == 0 and not summary.down
    assert len(first.chat_requests()) < 20 and len(restarted[0].chat_requests()) > 0  # really both
    assert elapsed > 2.0


def test_a_server_that_does_not_come_back_stops_cleanly_with_one_line(tmp_path, capsys):
    server = MisbehavingServer(delay=0.1).__enter__()
    out_dir = tmp_path / "run"
    threading.Thread(target=_stop_after_answers, args=(server, out_dir, 3)).start()
    config = tmp_path / "servers.yaml"
    config.write_text(_with(make_config(server.base_url, concurrency=2, attempts=3), "    outage: {after_failures: 2, wait: 2}"))
    started = time.monotonic()
    code = main(["run", "--config", str(config), "--out", str(out_dir), "--mmlu-pro", "30",
                 "--mmlu-pro-data", "builtin", "--plain"])
    elapsed = time.monotonic() - started
    out = capsys.readouterr()
    assert code == 3
    records = raw_records(out_dir)
    assert 0 < len(records) < 30
    assert all(r["error"] is None for r in records)  # nothing written for the outage
    (line,) = [line for line in out.err.splitlines() if line.startswith("qatcmp: error:")]
    assert "server 'local' stopped answering" in line and "did not come back within 2 s" in line
    assert f"{30 - len(records)} requests not sent" in line
    assert f"resume with: qatcmp run --config {config} --out {out_dir}" in line
    assert f"{len(records)} answers and 0 error records saved" in out.out
    assert elapsed < 20
    assert not list(out_dir.rglob(".*.tmp*"))
    # Resuming against a server that is back sends exactly the missing ones.
    with MisbehavingServer(port=server.port) as again:
        assert main(["run", "--config", str(config), "--out", str(out_dir), "--plain"]) == 0
        assert len(again.chat_requests()) == 30 - len(records)
    assert len(RunDir(out_dir).read_transcripts()) == 30


def test_a_wrong_model_id_in_a_later_variant_fails_before_the_first_question(tmp_path, capsys):
    text = make_config("URL") + "  - name: b\n    server: local\n    model: tset-model\n"
    with MisbehavingServer() as server:
        config = tmp_path / "servers.yaml"
        config.write_text(text.replace("URL", server.base_url))
        started = time.monotonic()
        code = main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--mmlu-pro", "20",
                     "--mmlu-pro-data", "builtin", "--plain"])
        requests = server.chat_requests()
    out = capsys.readouterr()
    assert code == 2 and time.monotonic() - started < 10
    assert [r["body"]["model"] for r in requests] == ["tset-model"]  # one tiny request, no question
    assert requests[0]["body"]["max_tokens"] == 1
    assert out.err.strip().splitlines() == [
        "qatcmp: error: model 'b' (tset-model on server 'local'): HTTP 404: Model 'tset-model' not found"]


@pytest.mark.server
def test_real_mlx_server_stopped_mid_run_and_started_again(mlx_servers, demo_models, tmp_path):
    from qatcmp.demo.server import free_port

    port = free_port()
    server = mlx_servers.start(demo_models["4bit"], port=port)
    model_id = server.model_ids[next(iter(server.model_ids))]
    config = make_config(server.base_url, concurrency=2, attempts=3, read=60).replace("model: test-model", f"model: {model_id}")
    config = _with(config, "    outage: {after_failures: 2, wait: 120}").replace("max_tokens: 64", "max_tokens: 48")

    def outage() -> None:
        # Stop it once a few answers are in, mid-run.
        deadline = time.monotonic() + 120
        while len(raw_records(tmp_path / "run")) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop()
        time.sleep(1.0)
        server.start()

    thread = threading.Thread(target=outage)
    thread.start()
    try:
        summary, plans = run_once(config, tmp_path / "run", mmlu=40)
    finally:
        thread.join()
    records = raw_records(tmp_path / "run")
    assert sorted(r["item_id"] for r in records) == sorted(plans[0].selection.item_ids)
    assert all(r["error"] is None for r in records), [r["error"] for r in records if r["error"]]
    assert summary.exit_code == 0 and not summary.down
    # the outage happened during the run (some answers came from the restarted server)
    assert max(r["attempts"] for r in records) >= 2


def test_sigterm_counts_answers_and_error_records_apart(tmp_path):
    import json
    import signal

    from test_run_crash import start_run, transcript_lines

    out = tmp_path / "run"
    with MisbehavingServer(delay=0.05) as server:
        server.queue("ok", "status:400", "status:400")  # two rejected prompts: error records, not answers
        config = tmp_path / "servers.yaml"
        config.write_text(make_config(server.base_url, concurrency=1))
        proc = start_run(config, out, 40)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(transcript_lines(out)) < 8:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    records = [json.loads(line) for line in transcript_lines(out)]
    errors = sum(r["error"] is not None for r in records)
    assert errors == 2
    assert f"Interrupted: {len(records) - 2} answers and 2 error records saved in {out}" in err
    assert "Traceback" not in err and "Task was destroyed" not in err
