"""A hostile or broken server: every malformed shape, encoding and size becomes a retried
error and then an error record naming the reason - never a crash (exit 70) - and no secret
qatcmp sends (API key, header values, URL credentials) reaches the run folder or the screen,
whatever the server echoes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from misbehaving_server import MisbehavingServer
from qatcmp import redact
from qatcmp.cli import main
from test_run_faults import make_config, raw_records, run_once

CHUNK_FAULTS = {
    "surrogate": "bad_text",
    "deep": "bad_json",
    "choices_string": "bad_shape",
    "choices_int": "bad_shape",
    "list": "bad_shape",
    "int_content": "bad_shape",
    "usage_lots": "bad_shape",
    "int_finish": "bad_shape",
    "deep_usage": "bad_shape",
}
BODY_FAULTS = {k: v for k, v in CHUNK_FAULTS.items() if k != "deep_usage"}


def _first_error_then_ok(out: Path, plans) -> tuple[dict, dict]:
    records = raw_records(out)
    assert len(records) == 2 and len({r["item_id"] for r in records}) == 2
    failed = [r for r in records if r["error"]]
    ok = [r for r in records if not r["error"]]
    assert len(failed) == 1 and len(ok) == 1
    return failed[0], ok[0]


@pytest.mark.parametrize("fault", sorted(CHUNK_FAULTS))
def test_malformed_stream_chunk_is_an_error_record_with_its_reason(tmp_path, fault):
    with MisbehavingServer() as server:
        server.queue(f"hostile_chunk:{fault}", f"hostile_chunk:{fault}")  # both attempts of question 1
        summary, plans = run_once(make_config(server.base_url, attempts=2, concurrency=1), tmp_path / "run", mmlu=2)
    failed, ok = _first_error_then_ok(tmp_path / "run", plans)
    assert failed["error_kind"] == CHUNK_FAULTS[fault], failed["error"]
    assert failed["attempts"] == 2 and failed["content"] is None
    assert ok["content"].startswith("The answer is")
    assert summary.errors == 1 and summary.answers == 1 and summary.exit_code == 1


@pytest.mark.parametrize("fault", sorted(BODY_FAULTS))
def test_malformed_body_is_an_error_record_with_its_reason(tmp_path, fault):
    with MisbehavingServer() as server:
        server.queue(f"hostile_body:{fault}", f"hostile_body:{fault}")
        summary, plans = run_once(make_config(server.base_url, stream=False, attempts=2, concurrency=1), tmp_path / "run", mmlu=2)
    failed, ok = _first_error_then_ok(tmp_path / "run", plans)
    assert failed["error_kind"] == BODY_FAULTS[fault], failed["error"]
    assert summary.errors == 1 and summary.exit_code == 1


def test_a_malformed_chunk_once_is_retried_into_a_valid_answer(tmp_path):
    with MisbehavingServer() as server:
        server.queue("hostile_chunk:surrogate")
        summary, _ = run_once(make_config(server.base_url), tmp_path / "run")
    (record,) = raw_records(tmp_path / "run")
    assert record["error"] is None and record["attempts"] == 2 and summary.exit_code == 0


@pytest.mark.parametrize("fault", ["endless", "endless:line", "huge:1.5"])
def test_runaway_answers_are_cut_at_the_size_cap(tmp_path, fault):
    config = make_config(pytest_url := "URL", attempts=2, concurrency=1).replace(
        "    stream: true", "    stream: true\n    max_answer_mb: 0.5")
    with MisbehavingServer() as server:
        server.queue(fault, fault)
        summary, plans = run_once(config.replace(pytest_url, server.base_url), tmp_path / "run", mmlu=2)
    failed, _ = _first_error_then_ok(tmp_path / "run", plans)
    assert failed["error_kind"] == "too_large", failed["error"]
    assert summary.errors == 1
    # The transcript holds no part of the runaway answer.
    assert sum(p.stat().st_size for p in (tmp_path / "run" / "transcripts").iterdir()) < 100_000


def test_a_models_list_nested_too_deep_does_not_stop_the_run(tmp_path):
    with MisbehavingServer(models_deep=True) as server:
        summary, _ = run_once(make_config(server.base_url), tmp_path / "run", mmlu=2)
    assert summary.exit_code == 0 and summary.answers == 2


def test_a_lone_surrogate_through_the_cli_exits_1_not_70(tmp_path, capsys):
    with MisbehavingServer() as server:
        server.queue(*["hostile_chunk:surrogate"] * 2)
        config = tmp_path / "servers.yaml"
        config.write_text(make_config(server.base_url, attempts=2, concurrency=1))
        code = main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--mmlu-pro", "2",
                     "--mmlu-pro-data", "builtin", "--plain"])
    out = capsys.readouterr()
    assert code == 1, out.err
    assert "internal error" not in out.err
    assert "1 answers and 1 error records saved" in out.out


# --------------------------------------------------------------------------- secrets

KEY = "sk-test-0123456789abcdef"
HEADER_VALUE = "hdr-secret-value-42"
USER, PASSWORD = "alice", "pa55w0rd-xyz"
BASIC = "YWxpY2U6cGE1NXcwcmQteHl6"  # base64("alice:pa55w0rd-xyz"), as HTTP basic auth sends it


def _secret_config(base_url: str, *, attempts: int = 2, url_credentials: bool = True) -> str:
    host = base_url.removeprefix("http://")
    url = f"http://{USER}:{PASSWORD}@{host}" if url_credentials else base_url
    text = make_config(url, attempts=attempts, concurrency=1, key_env="QATCMP_TEST_KEY")
    return text.replace("    stream: true", f"    stream: true\n    headers: {{X-Org-Token: {HEADER_VALUE}}}")


def _assert_no_secret(tmp_path: Path, *texts: str) -> None:
    for secret in (KEY, HEADER_VALUE, PASSWORD, f"{USER}:", BASIC):
        for path in (tmp_path / "run").rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), (secret, path)
        for text in texts:
            assert secret not in text, (secret, text)


@pytest.mark.parametrize("url_credentials", [False, True])
def test_secrets_echoed_by_the_server_never_reach_the_run_folder_or_the_screen(tmp_path, monkeypatch, capsys, url_credentials):
    monkeypatch.setenv("QATCMP_TEST_KEY", KEY)
    redact.clear()
    with MisbehavingServer() as server:
        # Question 1: a 400 echoing the headers; 2: a 500 echoing them, twice; 3: an error
        # inside a 200 echoing them, twice; 4 answers.
        server.queue("echo:400", "echo:500", "echo:500", "echo:200", "echo:200")
        config = tmp_path / "servers.yaml"
        config.write_text(_secret_config(server.base_url, url_credentials=url_credentials))
        code = main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--mmlu-pro", "4",
                     "--mmlu-pro-data", "builtin", "--plain"])
        sent = server.chat_requests()
        server.queue("echo:401")
        check_code = main(["check", "--config", str(config)])
    out = capsys.readouterr()
    assert code == 1 and check_code == 1
    # The server really did receive (and echo) every secret...
    # (httpx sends URL credentials as basic auth in place of the key)
    assert sent[0]["headers"]["Authorization"] == (f"Basic {BASIC}" if url_credentials else f"Bearer {KEY}")
    assert sent[0]["headers"]["X-Org-Token"] == HEADER_VALUE
    errors = [r["error"] for r in raw_records(tmp_path / "run") if r["error"]]
    scheme = "Basic" if url_credentials else "Bearer"
    assert len(errors) == 3 and all(f"invalid api key: auth={scheme} ***" in e for e in errors), errors
    assert "invalid api key" in out.out  # check printed the server's message, masked
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    if url_credentials:
        assert manifest["servers"]["local"]["base_url"].startswith("http://***@127.0.0.1")
    _assert_no_secret(tmp_path, out.out, out.err)


def test_unknown_model_error_line_with_credentials_is_masked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QATCMP_TEST_KEY", KEY)
    with MisbehavingServer(models=["other-model"]) as server:
        config = tmp_path / "servers.yaml"
        config.write_text(_secret_config(server.base_url))
        code = main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--mmlu-pro", "2",
                     "--mmlu-pro-data", "builtin", "--plain"])
    out = capsys.readouterr()
    assert code == 2
    assert out.err.count("\n") == 1 and "qatcmp: error: model 'a'" in out.err and "not found" in out.err
    _assert_no_secret(tmp_path, out.out, out.err)
    assert not list((tmp_path / "run").glob("transcripts/*"))  # failed in the preflight, nothing sent


def test_a_status_page_nested_900_deep_is_not_stored(tmp_path, monkeypatch):
    import misbehaving_server

    def deep_status(self):
        if self.path == "/api/status":
            self._raw_response(200, "application/json", b'{"a":' * 900 + b"1" + b"}" * 900)
        else:
            original(self)

    original = misbehaving_server._Handler.do_GET
    monkeypatch.setattr(misbehaving_server._Handler, "do_GET", deep_status)
    with MisbehavingServer() as server:
        summary, _ = run_once(make_config(server.base_url), tmp_path / "run", mmlu=1)
    assert summary.exit_code == 0
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["servers"]["local"]["status"] is None
