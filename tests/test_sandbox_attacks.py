"""Every hostile answer of tests/sandbox_attacks.py, as root and as an ordinary user, and what
happens where no isolation works: the refusal, and --unsafe-no-isolation recorded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from qatcmp.benchmarks import humaneval
from qatcmp.records import BenchmarkSelection, RunManifest, RunSpec, TranscriptRecord
from qatcmp.rundir import RunDir, write_jsonl_atomic
from qatcmp.sandbox import BWRAP_ENV, Sandbox, detect_protections

sys.path.insert(0, str(Path(__file__).parent))
import sandbox_attacks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = sandbox_attacks.attacks()
ISOLATED = detect_protections().isolation == "bubblewrap"
needs_bwrap = pytest.mark.skipif(not ISOLATED, reason=f"no bubblewrap isolation here: {detect_protections().missing}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    planted = sandbox_attacks.World.plant(tmp_path_factory.mktemp("attack-world"))
    saved = {key: os.environ.get(key) for key in ("HOME", "OPENAI_API_KEY")}
    os.environ["HOME"] = str(planted.home)
    os.environ["OPENAI_API_KEY"] = sandbox_attacks.API_KEY
    yield planted
    planted.listener.close()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(sandbox_attacks.LIMITS)


@needs_bwrap
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_fails_and_changes_nothing(world, sandbox: Sandbox, name: str) -> None:
    assert sandbox_attacks.run_attack(world, name, ATTACKS[name], sandbox) == []


QTEST = "qtest"


def _qtest_ids() -> tuple[int, int] | None:
    import pwd

    try:
        entry = pwd.getpwnam(QTEST)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not Path("/usr/bin/python3").exists()
                    or _qtest_ids() is None, reason="needs root, setpriv, /usr/bin/python3 and the user qtest")
def test_every_attack_fails_for_an_ordinary_user() -> None:
    """The same suite as the ordinary user `qtest` (their own home planted, their system
    Python): bubblewrap through an unprivileged user namespace."""
    uid, gid = _qtest_ids()  # type: ignore[misc]
    done = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "/usr/bin/python3",
         str(ROOT / "tests" / "sandbox_attacks.py")],
        capture_output=True, text=True, timeout=600, cwd="/", env={"PATH": "/usr/bin:/bin"},
    )
    if done.returncode != 0 and "Permission denied" in done.stderr:
        pytest.skip(f"the project is not readable by {QTEST}: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    protections = results.pop("_protections")
    assert "bubblewrap" in protections and "user-namespace" in protections
    assert set(results) == set(ATTACKS)
    assert {name: problems for name, problems in results.items() if problems} == {}


# --------------------------------------------------------------------------- no isolation

NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)


def _run_folder(path: Path) -> RunDir:
    items = humaneval.load("builtin")[0][:3]
    rd = RunDir(path)
    rd.path.mkdir(parents=True)
    selection = BenchmarkSelection(name="humaneval", dataset="builtin", total_available=164,
                                   item_ids=[i.item_id for i in items], prompt_template="")
    rd.write_manifest(RunManifest(qatcmp_version="test", created_at=NOW, updated_at=NOW, config={},
                                  spec=RunSpec(benchmarks=[selection], seed=0, samples=1, models={"m": {}})))
    rd.write_items(items)
    answers = [f"```python\n{i.prompt}{i.canonical_solution}```" for i in items[:2]] + ["```python\n    return None\n```"]
    write_jsonl_atomic(rd.transcript_file("m", "humaneval"), [
        TranscriptRecord(model="m", benchmark="humaneval", item_id=i.item_id, messages=[], request={}, content=a,
                         finish_reason="stop", started_at=NOW, finished_at=NOW)
        for i, a in zip(items, answers)
    ])
    return rd


def _qatcmp(*args: str, bwrap: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != BWRAP_ENV}
    if bwrap is not None:
        env[BWRAP_ENV] = bwrap
    return subprocess.run([sys.executable, "-m", "qatcmp", *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("command", ["score", "stats"])
def test_without_isolation_model_code_is_refused(tmp_path: Path, command: str) -> None:
    rd = _run_folder(tmp_path / "run")
    done = _qatcmp(command, str(rd.path), bwrap="/nonexistent/bwrap")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qatcmp: error: "), done.stderr
    assert "bubblewrap" in lines[0] and "apt-get install bubblewrap" in lines[0] and "--unsafe-no-isolation" in lines[0]
    assert "Traceback" not in done.stderr
    assert not rd.scores.exists() and not (rd.path / "scores.meta.json").exists()


def test_unsafe_no_isolation_runs_and_is_recorded(tmp_path: Path) -> None:
    rd = _run_folder(tmp_path / "run")
    done = _qatcmp("score", str(rd.path), "--unsafe-no-isolation", bwrap="/nonexistent/bwrap")
    assert done.returncode == 0, done.stderr
    assert "UNSAFE" in done.stdout and "none:" in done.stdout
    meta = json.loads((rd.path / "scores.meta.json").read_text())
    assert meta["sandbox_isolation"] == "none" and meta["unsafe_no_isolation"] is True
    assert "rlimits" in meta["sandbox_protections"] and meta["sandbox_limits"]["wall_s"] > 0
    assert [s.status for s in rd.read_scores()] == ["passed", "passed", "failed"]
    # stats takes the flag too (scores are current: nothing runs again, the meta stays).
    stats = _qatcmp("stats", str(rd.path), "--unsafe-no-isolation", bwrap="/nonexistent/bwrap")
    assert stats.returncode == 0, stats.stderr


@needs_bwrap
def test_isolated_scoring_is_recorded(tmp_path: Path) -> None:
    rd = _run_folder(tmp_path / "run")
    done = _qatcmp("score", str(rd.path))
    assert done.returncode == 0, done.stderr
    assert "sandbox protections: bubblewrap:" in done.stdout and "UNSAFE" not in done.stdout
    meta = json.loads((rd.path / "scores.meta.json").read_text())
    assert meta["sandbox_isolation"] == "bubblewrap" and meta["unsafe_no_isolation"] is False
    assert "judge-process" in meta["sandbox_protections"] and "pid-namespace" in meta["sandbox_protections"]
    assert [s.status for s in rd.read_scores()] == ["passed", "passed", "failed"]
