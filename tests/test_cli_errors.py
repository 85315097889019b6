"""Bad input gets one clear line and a non-zero exit, never a traceback; secrets never
reach the run folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from misbehaving_server import MisbehavingServer
from test_run_faults import make_config

SECRET = "sk-test-" + "9f8e7d6c5b4a" * 3


def qatcmp(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("QATCMP_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "qatcmp", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    # Progress and warnings may come first; the error itself is one line, the last.
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("qatcmp: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "servers.yaml"
    path.write_text(text)
    return str(path)


RUN = ["--mmlu-pro", "2", "--mmlu-pro-data", "builtin", "--plain"]


def test_malformed_yaml(tmp_path):
    config = write(tmp_path, "servers:\n  - name: a\n    base_url: [unclosed\n")
    result = qatcmp("run", "--config", config, "--out", str(tmp_path / "r"), *RUN)
    assert_one_line_error(result, "servers.yaml:", "invalid YAML")
    assert not (tmp_path / "r").exists()


def test_unknown_field_is_named(tmp_path):
    text = make_config("http://127.0.0.1:1/v1").replace("temperature: 0.0", "temprature: 0.0")
    result = qatcmp("run", "--config", write(tmp_path, text), "--out", str(tmp_path / "r"), *RUN)
    assert_one_line_error(result, "defaults.sampling.temprature", "unknown field")


def test_missing_config_file(tmp_path):
    result = qatcmp("run", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r"), *RUN)
    assert_one_line_error(result, "no such file")


def test_key_in_file_is_refused(tmp_path):
    text = make_config("http://127.0.0.1:1/v1").replace("    max_concurrency", f"    api_key: {SECRET}\n    max_concurrency")
    result = qatcmp("check", "--config", write(tmp_path, text))
    assert_one_line_error(result, "api_key_env")
    assert SECRET not in result.stderr


def test_missing_environment_variable_for_the_key(tmp_path):
    text = make_config("http://127.0.0.1:1/v1", key_env="QATCMP_TEST_KEY_UNSET")
    result = qatcmp("run", "--config", write(tmp_path, text), "--out", str(tmp_path / "r"), *RUN,
                    env={"QATCMP_TEST_KEY_UNSET": ""})
    assert_one_line_error(result, "QATCMP_TEST_KEY_UNSET", "not set")


def test_unreachable_url(tmp_path):
    text = make_config(f"http://127.0.0.1:{closed_port()}/v1")
    result = qatcmp("run", "--config", write(tmp_path, text), "--out", str(tmp_path / "r"), *RUN)
    assert_one_line_error(result, "cannot connect")


def test_unknown_model_404(tmp_path):
    with MisbehavingServer(models=["some-other-model"]) as server:
        text = make_config(server.base_url)
        result = qatcmp("run", "--config", write(tmp_path, text), "--out", str(tmp_path / "r"), *RUN)
    assert_one_line_error(result, "HTTP 404", "not found")


def test_wrong_key_401_and_the_key_never_reaches_disk(tmp_path):
    with MisbehavingServer(api_key="the-right-key") as server:
        text = make_config(server.base_url, key_env="QATCMP_TEST_KEY")
        result = qatcmp("run", "--config", write(tmp_path, text), "--out", str(tmp_path / "r"), *RUN,
                        env={"QATCMP_TEST_KEY": SECRET})
    assert_one_line_error(result, "HTTP 401")
    assert SECRET not in result.stderr + result.stdout


def test_right_key_works_and_is_not_written_under_runs(tmp_path):
    with MisbehavingServer(api_key=SECRET) as server:
        text = make_config(server.base_url, key_env="QATCMP_TEST_KEY")
        result = qatcmp("run", "--config", write(tmp_path, text), "--out", str(tmp_path / "r"), *RUN,
                        env={"QATCMP_TEST_KEY": SECRET})
        assert result.returncode == 0, result.stderr
        assert server.chat_requests()[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    files = [p for p in (tmp_path / "r").rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert SECRET not in path.read_text(errors="replace"), path


def test_no_network_for_the_hub_points_at_local_options(tmp_path):
    with MisbehavingServer() as server:
        text = make_config(server.base_url)
        result = qatcmp("run", "--config", write(tmp_path, text), "--out", str(tmp_path / "r"), "--mmlu-pro", "2",
                        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert_one_line_error(result, "--mmlu-pro-data builtin")


def test_bad_data_path(tmp_path):
    result = qatcmp("run", "--config", write(tmp_path, make_config("http://127.0.0.1:1/v1")), "--out", str(tmp_path / "r"),
                    "--mmlu-pro", "2", "--mmlu-pro-data", str(tmp_path / "missing.jsonl"))
    assert_one_line_error(result, "no such file")


def test_unknown_model_name_in_models_option(tmp_path):
    result = qatcmp("run", "--config", write(tmp_path, make_config("http://127.0.0.1:1/v1")), "--out", str(tmp_path / "r"),
                    "--models", "a,zzz", *RUN)
    assert_one_line_error(result, "unknown model zzz")


@pytest.mark.parametrize("args", [["--samples", "0"], ["--mmlu-pro", "-1"]])
def test_bad_numbers(tmp_path, args):
    result = qatcmp("run", "--config", write(tmp_path, make_config("http://127.0.0.1:1/v1")), "--out", str(tmp_path / "r"),
                    "--mmlu-pro-data", "builtin", *args)
    assert_one_line_error(result)


def test_check_reports_a_problem_with_non_zero_exit(tmp_path):
    text = make_config(f"http://127.0.0.1:{closed_port()}/v1")
    result = qatcmp("check", "--config", write(tmp_path, text))
    assert result.returncode == 1
    assert "PROBLEM" in result.stdout and "cannot connect" in result.stdout
    assert "Traceback" not in result.stderr


def test_check_passes_against_a_working_server(tmp_path):
    with MisbehavingServer() as server:
        result = qatcmp("check", "--config", write(tmp_path, make_config(server.base_url)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "yes (reasoning_content)" in result.stdout
