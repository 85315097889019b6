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


# --------------------------------------------------------------------------- numbers


def test_more_mmlu_questions_than_exist(tmp_path):
    text = make_config(DEAD_URL)
    line = assert_bad_input(run_with_config(tmp_path, text, "--mmlu-pro", "1000000"), "--mmlu-pro 1000000", "has only")
    available = int(line.split("has only ")[1].split()[0])
    assert 0 < available < 1000000


def test_more_humaneval_problems_than_exist(tmp_path):
    text = make_config(DEAD_URL)
    result = run_with_config(tmp_path, text, "--humaneval", "500", "--humaneval-data", "builtin")
    assert_bad_input(result, "--humaneval 500", "has only 164 questions", "at most 164")


@pytest.mark.parametrize("value", ["1000000000", "101", "0", "-3"])
def test_absurd_samples(tmp_path, value):
    result = run_with_config(tmp_path, make_config(DEAD_URL), "--samples", value)
    assert_bad_input(result, f"--samples {value}", "1 to 100")


def test_hundred_samples_are_allowed(tmp_path):
    # The limit is not off by one: 100 passes the checks and fails only at the dead server.
    result = qatcmp("run", "--config", _write(tmp_path, make_config(DEAD_URL)), "--out", str(tmp_path / "r"),
                    *RUN, "--samples", "100")
    assert "--samples" not in result.stderr and "cannot connect" in result.stderr


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "servers.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1e9"])
def test_score_timeout_must_be_a_sane_number(tmp_path, value):
    result = qatcmp("score", str(tmp_path / "no-run"), "--timeout", value)
    assert_bad_input(result, "--timeout", "seconds above 0")


def test_bad_option_is_one_line(tmp_path):
    result = qatcmp("run", "--config", "x.yaml", "--out", str(tmp_path / "r"), "--samples", "many")
    assert_bad_input(result, "--samples", "invalid int value", "qatcmp run --help")


# --------------------------------------------------------------------------- --out


def test_out_is_a_regular_file(tmp_path):
    out = tmp_path / "results.txt"
    out.write_text("precious\n")
    result = qatcmp("run", "--config", _write(tmp_path, make_config(DEAD_URL)), "--out", str(out), *RUN)
    assert_bad_input(result, f"--out {out} is a file, not a folder")
    assert out.read_text() == "precious\n"


def test_out_under_a_regular_file(tmp_path):
    parent = tmp_path / "results.txt"
    parent.write_text("precious\n")
    result = qatcmp("run", "--config", _write(tmp_path, make_config(DEAD_URL)), "--out", str(parent / "run"), *RUN)
    assert_bad_input(result, "cannot write there", "Not a directory")
    assert parent.read_text() == "precious\n"


def test_out_under_proc(tmp_path):
    result = qatcmp("run", "--config", _write(tmp_path, make_config(DEAD_URL)), "--out", "/proc/qatcmp-run", *RUN)
    assert_bad_input(result, "/proc is a virtual file system")


def test_out_read_only(tmp_path):
    folder = tmp_path / "ro"
    with read_only_folder(folder):
        result = qatcmp("run", "--config", _write(tmp_path, make_config(DEAD_URL)), "--out", str(folder / "run"), *RUN)
    assert_bad_input(result, "cannot write there", "Read-only file system" if os.geteuid() == 0 else "Permission denied")


# --------------------------------------------------------------------------- a full disk


import contextlib  # noqa: E402
import subprocess  # noqa: E402


@contextlib.contextmanager
def tmpfs(path: Path, size: int, *options: str):
    """A real small file system, mounted for the test (needs root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    opts = ",".join([f"size={size}", *options])
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only_folder(path: Path):
    if os.geteuid() == 0:
        with tmpfs(path, 1 << 20, "ro"):
            yield path
    else:
        path.mkdir()
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)


def assert_run_error(result, *fragments: str) -> str:
    """Exit 2; progress lines may come first, the error is one line and the last."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout and "internal error" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("qatcmp: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp." in p.name]


def page(n: int) -> int:
    return -(-n // 4096) * 4096


def test_disk_full_mid_run_keeps_what_was_written_and_resumes(tmp_path):
    n = 40
    with MisbehavingServer() as server:
        config = _write(tmp_path, make_config(server.base_url))
        run = ["--mmlu-pro", str(n), "--mmlu-pro-data", "builtin", "--plain"]
        # Measure a complete run, then give the real one room for its set-up and about half
        # of its answers.
        sizing = tmp_path / "sizing"
        assert qatcmp("run", "--config", config, "--out", str(sizing), *run).returncode == 0
        fixed = page((sizing / "items.jsonl").stat().st_size) + 3 * page((sizing / "manifest.json").stat().st_size) + 4096
        answers = sum(p.stat().st_size for p in (sizing / "transcripts").iterdir())
        disk = tmp_path / "disk"
        with tmpfs(disk, fixed + page(answers // 2)):
            out = disk / "run"
            full = qatcmp("run", "--config", config, "--out", str(out), *run)
            assert_run_error(full, "No space left on device", "run the same command again")
            assert temp_files(disk) == []
            complete = []
            for path in (out / "transcripts").iterdir():
                lines = path.read_text().splitlines()
                complete += [json.loads(line) for line in lines[:-1]]  # all but a torn last line parse
                with contextlib.suppress(ValueError):
                    complete.append(json.loads(lines[-1]))
            assert 0 < len(complete) < n
            subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
            resumed = qatcmp("run", "--config", config, "--out", str(out), *run)
            assert resumed.returncode == 0, resumed.stderr
            records = [json.loads(line) for p in (out / "transcripts").iterdir() for line in p.read_text().splitlines()]
            assert temp_files(disk) == []
    ids = [r["item_id"] for r in records]
    assert len(ids) == n == len(set(ids))
    assert all(r in records for r in complete)  # nothing written before the full disk was lost


def test_disk_full_at_the_start_leaves_no_temporary_files(tmp_path):
    disk = tmp_path / "disk"
    with tmpfs(disk, 8192):
        result = qatcmp("run", "--config", _write(tmp_path, make_config(DEAD_URL)), "--out", str(disk / "run"),
                        "--mmlu-pro", "50", "--mmlu-pro-data", "builtin", "--plain")
        assert_run_error(result, "No space left on device")
        leftovers = sorted(p.name for p in disk.rglob("*"))
    # No temporary file, and the folder the run made (holding only its lock) is gone.
    assert leftovers == [], leftovers


def test_duplicate_key_in_config(tmp_path):
    text = make_config(DEAD_URL) + "models:\n  - {name: b, server: local, model: other}\n"
    assert_bad_input(run_with_config(tmp_path, text), "the key 'models' is given twice")


def test_merge_keys_may_be_overridden(tmp_path):
    text = make_config(DEAD_URL).replace("  sampling: {temperature: 0.0, max_tokens: 64}",
                                         "  sampling: {<<: &s {temperature: 0.5, max_tokens: 64}, temperature: 0.0}")
    path = tmp_path / "servers.yaml"
    path.write_text(text)
    assert "qatcmp: error" not in qatcmp("check", "--config", str(path)).stderr


def test_refused_run_leaves_a_foreign_folder_as_it_was(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8")
    result = qatcmp("run", "--config", _write(tmp_path, make_config(DEAD_URL)), "--out", str(folder), *RUN)
    assert_bad_input(result, "is not a qatcmp run folder")
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg"]


def test_thinking_switch_on_off_keys_as_the_readme_writes_them():
    from qatcmp.config import parse_config

    text = make_config(DEAD_URL).replace(
        "    max_concurrency",
        "    thinking_switch:\n      on:  {chat_template_kwargs: {enable_thinking: yes}}\n"
        "      off: {think: false}\n    max_concurrency")
    server = parse_config(text).servers[0]
    # on/off are keys, not YAML 1.1 booleans; `yes` stays the string it is.
    assert server.thinking_switch.on == {"chat_template_kwargs": {"enable_thinking": "yes"}}
    assert server.thinking_switch.off == {"think": False}
    assert server.stream is True
