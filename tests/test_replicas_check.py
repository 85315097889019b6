"""Replicas of one variant that report different versions or model sizes are warned about
(`qatcmp check` and the run); the servers.yaml form `server: [a, b]` is validated."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from misbehaving_server import MisbehavingServer
from qatcmp.cli import main
from qatcmp.config import parse_config
from qatcmp.errors import ConfigError
from qatcmp.records import ServerInfo
from qatcmp.replica_check import model_identity, replica_differences
from qatcmp.rundir import RunDir


def two_server_config(url1: str, url2: str, server_field: str = "[one, two]") -> str:
    servers = "".join(f"""
  - name: {name}
    base_url: {url}
    max_concurrency: 1
    retries: {{max_attempts: 1, initial_backoff: 0.01, max_backoff: 0.05}}""" for name, url in (("one", url1), ("two", url2)))
    return f"""
servers:{servers}
defaults:
  sampling: {{temperature: 0.0, max_tokens: 64}}
models:
  - name: a
    server: {server_field}
    model: test-model
"""


def info(version=None, status=None) -> ServerInfo:
    return ServerInfo(base_url="http://x/v1", version=version, model_status=status)


def test_different_sizes_and_versions_are_named_same_ones_are_not():
    same = {"models": [{"id": "m", "model_size": 100, "model_path": "/a"}]}
    moved = {"models": [{"id": "m", "model_size": 100, "model_path": "/elsewhere"}]}
    other = {"models": [{"id": "m", "model_size": 120, "model_path": "/a"}]}
    assert replica_differences("a", "m", {"s1": info("1.0", same), "s2": info("1.0", moved)}) == []
    (warning,) = replica_differences("a", "m", {"s1": info("1.0", same), "s2": info("1.0", other)})
    assert "model_size" in warning and "s1: 100" in warning and "s2: 120" in warning
    (warning,) = replica_differences("a", "m", {"s1": info("1.0"), "s2": info("1.1")})
    assert "versions" in warning and "s2: 1.1" in warning
    assert replica_differences("a", "m", {"s1": info(), "s2": info()}) == []  # nothing reported


@pytest.mark.parametrize("status", [None, [], "x", {"models": "x"}, {"models": [1, None, {"id": []}]},
                                    {"m": {"size": {"deep": 1}}}, {"data": {"m": {"total_size": 5}}}])
def test_any_status_shape_is_read_without_error(status):
    identity = model_identity(status, "m")
    assert isinstance(identity, dict)
    if status == {"data": {"m": {"total_size": 5}}}:
        assert identity == {"total_size": 5}


def test_check_warns_when_replicas_report_different_versions(tmp_path, capsys):
    with MisbehavingServer(status={"version": "0.5.3"}) as one, MisbehavingServer(status={"version": "0.6.0"}) as two:
        config = tmp_path / "servers.yaml"
        config.write_text(two_server_config(one.base_url, two.base_url))
        main(["check", "--config", str(config), "--max-tokens", "16"])
        out = capsys.readouterr().out
        checked = [len(one.chat_requests()), len(two.chat_requests())]
    assert "variant 'a': its servers run different oMLX versions (one: 0.5.3, two: 0.6.0)" in out.replace("\n", " ")
    assert checked == [1, 1]  # the variant is checked on each of its servers


def test_check_is_quiet_when_replicas_agree(tmp_path, capsys):
    with MisbehavingServer(status={"version": "0.5.3"}) as one, MisbehavingServer(status={"version": "0.5.3"}) as two:
        config = tmp_path / "servers.yaml"
        config.write_text(two_server_config(one.base_url, two.base_url))
        main(["check", "--config", str(config), "--max-tokens", "16"])
    assert "its servers" not in capsys.readouterr().out


@pytest.mark.parametrize("field, message", [
    ("[one, three]", "models[0].server: unknown server 'three' (servers: one, two)"),
    ("[]", "a non-empty list of server names"),
    ("[one, one]", "a server is listed twice"),
    ("[one, 2]", "a non-empty list of server names"),
])
def test_bad_server_lists_are_refused_with_one_line(field, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(two_server_config("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1", field))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_plain_string_and_a_list_both_read():
    plain = parse_config(two_server_config("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1", "two")).models[0]
    assert (plain.server, plain.servers) == ("two", ["two"])
    listed = parse_config(two_server_config("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1")).models[0]
    assert (listed.server, listed.servers) == ("one", ["one", "two"])


def test_a_run_over_replicas_of_different_versions_warns_and_records_both(tmp_path, capsys):
    with MisbehavingServer(status={"version": "0.5.3"}, delay=0.05) as one, \
            MisbehavingServer(status={"version": "0.6.0"}, delay=0.05) as two:
        config = tmp_path / "servers.yaml"
        config.write_text(two_server_config(one.base_url, two.base_url))
        code = main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--mmlu-pro", "8",
                     "--mmlu-pro-data", "builtin", "--plain"])
        asked = [len(one.chat_requests()), len(two.chat_requests())]
    run = RunDir(tmp_path / "run")
    manifest = run.read_manifest()
    assert code == 0
    assert {name: s.version for name, s in manifest.servers.items()} == {"one": "0.5.3", "two": "0.6.0"}
    assert any("different oMLX versions" in w for w in manifest.warnings)
    records = run.read_transcripts()
    assert len(records) == 8 and len({r.item_id for r in records}) == 8
    assert {r.server for r in records} == {"one", "two"}
    # Only the first replica gets the pre-flight request; every other request is asked once.
    assert sum(asked) in (8, 9) and min(asked) >= 1


def test_kill_9_mid_run_over_replicas_then_resume_asks_each_question_once(tmp_path):
    from test_run_crash import start_run, transcript_lines

    n = 30
    out = tmp_path / "run"
    with MisbehavingServer(delay=0.05) as one, MisbehavingServer(delay=0.05) as two:
        config = tmp_path / "servers.yaml"
        config.write_text(two_server_config(one.base_url, two.base_url))
        proc = start_run(config, out, n)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(transcript_lines(out)) < 6:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        written = len(transcript_lines(out))
        assert 6 <= written < n, "the run should have been killed half-way"
        resumed = start_run(config, out, n)
        _, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
    records = [json.loads(line) for line in transcript_lines(out)]
    ids = [r["item_id"] for r in records]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == n
    assert {r["server"] for r in records} == {"one", "two"}


def test_a_replica_that_does_not_answer_at_the_start_is_skipped_with_a_warning(tmp_path, capsys):
    from qatcmp.demo import free_port

    closed = f"http://127.0.0.1:{free_port()}/v1"
    with MisbehavingServer(delay=0.01) as one:
        config = tmp_path / "servers.yaml"
        config.write_text(two_server_config(closed, one.base_url))  # the first replica is the dead one
        code = main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--mmlu-pro", "5",
                     "--mmlu-pro-data", "builtin", "--plain"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "server 'one'" in err and "its variants run on their other servers" in err
    records = RunDir(tmp_path / "run").read_transcripts()
    assert len(records) == 5 and {r.server for r in records} == {"two"}


def test_a_variant_whose_only_servers_are_down_still_stops_with_one_line(tmp_path, capsys):
    from qatcmp.demo import free_port

    config = tmp_path / "servers.yaml"
    config.write_text(two_server_config(f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{free_port()}/v1"))
    code = main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--mmlu-pro", "5",
                 "--mmlu-pro-data", "builtin", "--plain"])
    err = capsys.readouterr().err
    assert code != 0
    (line,) = [line for line in err.splitlines() if line.startswith("qatcmp: error:")]
    assert "server 'one'" in line
