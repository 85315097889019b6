"""Every bad input of issue 8 gets one line `qatcmp: error: ...`, exit 2, no traceback, and
nothing already written is lost. Each case goes through the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from misbehaving_server import MisbehavingServer
from test_cli_errors import qatcmp
from test_run_faults import make_config

RUN = ["--mmlu-pro", "2", "--mmlu-pro-data", "builtin", "--plain"]
DEAD_URL = "http://127.0.0.1:9/v1"  # never contacted: the config is refused first


def assert_bad_input(result, *fragments: str) -> str:
    """Exit 2, no traceback, and exactly one line on stderr: the error."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert "internal error" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("qatcmp: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run_with_config_bytes(tmp_path: Path, data: bytes, *extra: str):
    path = tmp_path / "servers.yaml"
    path.write_bytes(data)
    out = tmp_path / "r"
    result = qatcmp("run", "--config", str(path), "--out", str(out), *RUN, *extra)
    assert not out.exists(), "a refused config must not create the run folder"
    return result


def run_with_config(tmp_path: Path, text: str, *extra: str):
    return run_with_config_bytes(tmp_path, text.encode(), *extra)


# --------------------------------------------------------------------------- config file


def test_config_not_utf8(tmp_path):
    text = make_config(DEAD_URL).replace("name: a", "name: a  # caf\xe9")
    result = run_with_config_bytes(tmp_path, text.encode("latin-1"))
    assert_bad_input(result, "not UTF-8", "byte 0xe9")


def test_config_utf16(tmp_path):
    result = run_with_config_bytes(tmp_path, make_config(DEAD_URL).encode("utf-16"))
    assert_bad_input(result, "UTF-16", "save it as UTF-8")


def test_config_utf8_bom_is_fine(tmp_path):
    path = tmp_path / "servers.yaml"
    path.write_bytes(make_config(DEAD_URL).encode("utf-8-sig"))
    result = qatcmp("check", "--config", str(path))
    assert "qatcmp: error" not in result.stderr, result.stderr  # reaches the server check


def test_servers_is_a_number(tmp_path):
    text = "servers: 5\nmodels: [{name: a, server: local, model: m}]\n"
    assert_bad_input(run_with_config(tmp_path, text), "servers", "list")


def test_deep_nesting(tmp_path):
    text = make_config(DEAD_URL) + "    extra_body: {x: " + "[" * 5000 + "]" * 5000 + "}\n"
    assert_bad_input(run_with_config(tmp_path, text), "nested more than")


def test_moderate_nesting_beyond_the_depth_limit(tmp_path):
    text = make_config(DEAD_URL) + "    extra_body: {x: " + "[" * 100 + "]" * 100 + "}\n"
    assert_bad_input(run_with_config(tmp_path, text), "models[0].extra_body.x", "nested more than 32")


@pytest.mark.parametrize("where, value, fragment", [
    ("sampling", ".nan", "defaults.sampling.temperature"),
    ("sampling", ".inf", "defaults.sampling.temperature"),
    ("sampling", "-.inf", "defaults.sampling.temperature"),
    ("extra_body", ".nan", "models[0].extra_body.temperature"),
    ("extra_body", ".inf", "models[0].extra_body.temperature"),
])
def test_non_finite_numbers(tmp_path, where, value, fragment):
    text = make_config(DEAD_URL)
    if where == "sampling":
        text = text.replace("temperature: 0.0", f"temperature: {value}")
    else:
        text += f"    extra_body: {{temperature: {value}}}\n"
    assert_bad_input(run_with_config(tmp_path, text), fragment, "not a finite number")


def test_port_above_65535(tmp_path):
    text = make_config("http://127.0.0.1:70000/v1")
    assert_bad_input(run_with_config(tmp_path, text), "servers[0].base_url", "out of range")


@pytest.mark.parametrize("value", ['"s3cr3t\\r\\nX-Injected: 1"', '"s3cr3t\\nmore"', '"s3cr3t\\u00e9"'])
def test_header_value_with_line_break_is_a_config_error(tmp_path, value):
    text = make_config(DEAD_URL).replace("    max_concurrency", f"    headers: {{X-Token: {value}}}\n    max_concurrency")
    line = assert_bad_input(run_with_config(tmp_path, text), "servers[0].headers", "X-Token")
    assert "s3cr3t" not in line  # the value (maybe a secret) is not echoed


def test_header_name_with_space(tmp_path):
    text = make_config(DEAD_URL).replace("    max_concurrency", '    headers: {"X Token": v}\n    max_concurrency')
    assert_bad_input(run_with_config(tmp_path, text), "not a valid HTTP header name")


def test_alias_bomb_is_refused_quickly(tmp_path):
    bomb = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        prev = chr(ord(level) - 1)
        bomb.append(f"{level}: &{level} [" + ",".join([f"*{prev}"] * 9) + "]")
    text = make_config(DEAD_URL) + "    extra_body:\n" + "".join(f"      {line}\n" for line in bomb)
    result = run_with_config(tmp_path, text)
    assert_bad_input(result, "YAML aliases")


def test_alias_expansion_is_bounded_even_under_the_alias_budget(tmp_path):
    # 6 levels of 10 aliases (60 aliases, under the budget) expand to a million values.
    bomb = ["a: &a [" + ",".join(["1"] * 10) + "]"]
    for level in "bcdef":
        prev = chr(ord(level) - 1)
        bomb.append(f"{level}: &{level} [" + ",".join([f"*{prev}"] * 10) + "]")
    text = make_config(DEAD_URL) + "    extra_body:\n" + "".join(f"      {line}\n" for line in bomb)
    assert_bad_input(run_with_config(tmp_path, text), "expands to more than")


def test_a_few_anchors_are_fine(tmp_path):
    text = make_config(DEAD_URL).replace("  sampling: {temperature: 0.0, max_tokens: 64}",
                                         "  sampling: &s {temperature: 0.0, max_tokens: 64}")
    text += "    sampling: *s\n"
    path = tmp_path / "servers.yaml"
    path.write_text(text)
    result = qatcmp("check", "--config", str(path))
    assert "qatcmp: error" not in result.stderr, result.stderr


def test_yaml_date_in_extra_body(tmp_path):
    text = make_config(DEAD_URL) + "    extra_body: {since: 2024-01-01}\n"
    assert_bad_input(run_with_config(tmp_path, text), "models[0].extra_body.since", "quote the value")


def test_config_is_a_folder(tmp_path):
    (tmp_path / "cfg").mkdir()
    result = qatcmp("run", "--config", str(tmp_path / "cfg"), "--out", str(tmp_path / "r"), *RUN)
    assert_bad_input(result, "is a folder")
