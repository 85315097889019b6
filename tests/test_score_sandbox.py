"""The sandbox's ordinary behaviour: verdicts across the judge/candidate boundary keep Python's
semantics for plain values, every ending is named, limits hold, nothing is left behind.
(Hostile answers: test_sandbox_attacks.py.)"""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

import pytest

from qatcmp.sandbox import (
    MARKER_ENV, Job, Limits, Protections, Sandbox, detect_protections, marked_processes, remove_tree,
)

LIMITS = Limits(wall_s=4.0, cpu_s=2, file_bytes=1 << 20, output_kill_bytes=1 << 20)
TEST = "def check(candidate):\n    assert candidate(1) == 2\n"
PROMPT = 'def f(x):\n    """x + 1"""\n'
GOOD = "def f(x):\n    return x + 1\n"
PROTECTIONS = detect_protections()
needs_bwrap = pytest.mark.skipif(PROTECTIONS.isolation != "bubblewrap", reason=f"no bubblewrap: {PROTECTIONS.missing}")


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(LIMITS)


def run(sandbox: Sandbox, program: str, test: str = TEST, prompt: str = PROMPT, entry_point: str = "f"):
    return sandbox.run(Job(textwrap.dedent(program), textwrap.dedent(test), entry_point, prompt))


@needs_bwrap
def test_good_and_wrong_solutions(sandbox: Sandbox) -> None:
    assert run(sandbox, GOOD).status == "passed"
    wrong = run(sandbox, "def f(x):\n    return x\n")
    assert (wrong.status, wrong.detail) == ("failed", "AssertionError (a test failed)")


@needs_bwrap
def test_plain_values_cross_exactly(sandbox: Sandbox) -> None:
    program = """
        import math
        def f(kind):
            return {
                "tuple": (1, 2), "list": [1, 2], "nan": math.nan, "negzero": -0.0, "inf": -math.inf,
                "bool": True, "int": 1, "big": 3 ** 500, "bytes": b"\\x00\\xff", "str": "h\\u00e9\\ud800",
                "set": {1, (2, 3)}, "frozenset": frozenset({"a"}), "dict": {(1, 2): [None, 1.5]},
                "complex": 1 - 2j, "nested": [[[[]]]],
            }[kind]
    """
    test = """
        import math
        def check(candidate):
            assert candidate("tuple") == (1, 2) and type(candidate("tuple")) is tuple
            assert candidate("list") == [1, 2] and type(candidate("list")) is list
            assert candidate("tuple") != [1, 2]
            assert math.isnan(candidate("nan"))
            assert math.copysign(1.0, candidate("negzero")) == -1.0
            assert candidate("inf") == -math.inf
            assert candidate("bool") is True and type(candidate("int")) is int
            assert candidate("big") == 3 ** 500
            assert candidate("bytes") == b"\\x00\\xff" and candidate("str") == "h\\u00e9\\ud800"
            assert candidate("set") == {1, (2, 3)} and type(candidate("frozenset")) is frozenset
            assert candidate("dict") == {(1, 2): [None, 1.5]}
            assert candidate("complex") == 1 - 2j and candidate("nested") == [[[[]]]]
    """
    outcome = run(sandbox, program, test)
    assert outcome.status == "passed", outcome.detail


@needs_bwrap
def test_arguments_cross_too_and_keywords_work(sandbox: Sandbox) -> None:
    program = "def f(a, *, b):\n    return (type(a).__name__, a, b)\n"
    test = "def check(candidate):\n    assert candidate((1, [2]), b={3}) == ('tuple', (1, [2]), {3})\n"
    assert run(sandbox, program, test).status == "passed"


@needs_bwrap
def test_exceptions_raised_by_the_answer_are_named(sandbox: Sandbox) -> None:
    outcome = run(sandbox, "def f(x):\n    raise KeyError('nope')\n")
    assert (outcome.status, outcome.detail) == ("failed", "raised KeyError: 'nope'")
    # A test may expect an exception, as in a one-process harness.
    test = "def check(candidate):\n    try:\n        candidate(0)\n    except Exception:\n        return\n    raise AssertionError\n"
    assert run(sandbox, "def f(x):\n    raise ValueError\n", test).status == "passed"


@needs_bwrap
def test_the_test_may_name_the_entry_point(sandbox: Sandbox) -> None:
    # HumanEval/33 compares candidate(x) with sort_third(x): that name is the answer too.
    test = "def check(candidate):\n    assert candidate(1) == f(1) == 2\n"
    assert run(sandbox, GOOD, test).status == "passed"


@needs_bwrap
def test_prompt_helpers_live_in_the_judge(sandbox: Sandbox) -> None:
    prompt = "def helper(x):\n    return x * 10\n\n" + PROMPT
    test = "def check(candidate):\n    assert candidate(1) == helper(1) + 1\n"
    assert run(sandbox, "def helper(x):\n    return 0\n\ndef f(x):\n    return 11\n", test, prompt).status == "passed"
    assert run(sandbox, "def helper(x):\n    return 0\n\ndef f(x):\n    return helper(x) + 1\n", test, prompt).status == "failed"


@needs_bwrap
def test_broken_dataset_code_is_an_error(sandbox: Sandbox) -> None:
    assert run(sandbox, GOOD, "def check(candidate) oops\n").status == "error"
    outcome = run(sandbox, GOOD, "def check(candidate):\n    candidate(object())\n")
    assert outcome.status == "error" and "cannot cross" in outcome.detail


@needs_bwrap
def test_loading_failures_are_named(sandbox: Sandbox) -> None:
    assert run(sandbox, "def g(x):\n    return 1\n").detail == "no function f defined"
    assert run(sandbox, "1/0\n").detail == "the code does not run: ZeroDivisionError: division by zero"


@needs_bwrap
def test_how_a_sample_ended_is_named(sandbox: Sandbox) -> None:
    # A wall-clock limit far above the CPU limit: on a busy machine 2 s of CPU take longer.
    patient = Sandbox(Limits(wall_s=60.0, cpu_s=2))
    cpu = patient.run(Job("def f(x):\n    while True:\n        pass\n", TEST, "f", PROMPT))
    assert (cpu.status, cpu.detail) == ("timeout", "used more than 2 s of CPU time")
    crash = run(sandbox, "import ctypes\ndef f(x):\n    ctypes.string_at(0)\n")
    assert crash.status == "failed" and "SIGSEGV" in crash.detail
    big_file = run(sandbox, "import signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
                            "def f(x):\n    open('big', 'wb').write(b'x' * (4 << 20))\n")
    # As its namespace's PID 1 the interpreter ignores SIGXFSZ: the write fails instead.
    assert big_file.status == "failed" and ("File too large" in big_file.detail or "larger than" in big_file.detail)
    exited = run(sandbox, "import os\ndef f(x):\n    os._exit(3)\n")
    assert exited.detail == "exited (code 3) before the tests finished"
    slow_call = Sandbox(Limits(wall_s=4.0, call_s=0.5)).run(Job("import time\ndef f(x):\n    time.sleep(3)\n", TEST, "f", PROMPT))
    assert (slow_call.status, slow_call.detail) == ("timeout", "call 1 took longer than 0.5 s")


@needs_bwrap
def test_output_is_capped(sandbox: Sandbox) -> None:
    outcome = run(sandbox, "print('x' * 100000)\nwhile True:\n    print('x' * 10000)\n")
    assert outcome.status == "failed" and "output" in outcome.detail
    assert len(outcome.output) <= LIMITS.output_bytes


@needs_bwrap
def test_parallel_runs_keep_their_order(sandbox: Sandbox) -> None:
    jobs = [Job(f"def f(x):\n    return x + {i}\n", TEST, "f", PROMPT) for i in range(6)]
    assert [o.status for o in sandbox.run_many(jobs, workers=3)] == ["failed", "passed"] + ["failed"] * 4


@needs_bwrap
def test_the_writable_folder_is_a_private_tmpfs(sandbox: Sandbox) -> None:
    before = set(os.listdir(tempfile.gettempdir()))
    program = """
        import os
        open("mine.txt", "w").write("my own folder is writable")
        def f(x):
            return x + 1 if os.getcwd() == "/tmp" and open("mine.txt").read() else x
    """
    assert run(sandbox, program).status == "passed"
    new = set(os.listdir(tempfile.gettempdir())) - before  # other programs may use it meanwhile
    assert "mine.txt" not in new and not any(name.startswith("qatcmp") for name in new)


def test_protections_are_described() -> None:
    assert "rlimits" in PROTECTIONS.names() and PROTECTIONS.describe().startswith(PROTECTIONS.isolation)
    none = Protections(missing="bubblewrap is not installed")
    assert not none.isolated and "NO isolation" in none.describe()
    assert Protections("bubblewrap").isolated


def test_refusal_without_isolation() -> None:
    from qatcmp.errors import QatcmpError

    refusing = Sandbox(LIMITS, protections=Protections(missing="bubblewrap is not installed (sudo apt-get install bubblewrap)"))
    with pytest.raises(QatcmpError, match="refusing to run model code without a sandbox: bubblewrap is not installed"):
        refusing.run(Job(GOOD, TEST, "f", PROMPT))
    with pytest.raises(QatcmpError):
        refusing.run_many([Job(GOOD, TEST, "f", PROMPT)])


# --------------------------------------------------------------------------- cleanup


def _deep_tree(root: Path, depth: int = 1500) -> None:
    """Nested folders deeper than PATH_MAX allows as one path, an unreadable folder, odd names."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("folder-with-a-long-name", dir_fd=fd)
            inner = os.open("folder-with-a-long-name", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with open(os.open("deep-file", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w") as fh:
            fh.write("x")
    finally:
        os.close(fd)
    (root / "odd\nname \udcff").mkdir()
    (root / "odd\nname \udcff" / "f").write_text("x")
    locked = root / "locked" / "inner"
    locked.mkdir(parents=True)
    (locked / "file").write_text("x")
    locked.chmod(0)
    (root / "locked").chmod(0)


def test_remove_tree_survives_deep_unreadable_odd_trees(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    root = tmp_path / "sample"
    root.mkdir()
    _deep_tree(root)
    (root / "link-out").symlink_to(outside)
    remove_tree(root)
    assert not root.exists()
    assert (outside / "keep.txt").read_text() == "keep"  # the symlink was not followed


def test_without_isolation_cleanup_and_processes_still_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--unsafe-no-isolation: host folders are used, removed however the code filled them,
    and daemons that left the session are found by their marker and killed."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    unsafe = Sandbox(LIMITS, protections=Protections(missing="test"), allow_unsafe=True)
    program = """
        import os
        base = os.getcwd()
        for _ in range(1500):
            os.mkdir("d")
            os.chdir("d")
        os.chdir(base)
        os.makedirs("locked/inner")
        os.chmod("locked/inner", 0)
        os.chmod("locked", 0)
        os.mkdir("odd\\nname \\udcff")
        if os.fork() == 0:
            os.setsid()
            import time
            time.sleep(30)
            os._exit(0)
        def f(x):
            return x + 1
    """
    outcome = unsafe.run(Job(textwrap.dedent(program), TEST, "f", PROMPT))
    assert outcome.status == "passed", outcome.detail
    assert list(temp.iterdir()) == []
    assert marked_processes(f"{MARKER_ENV}=".encode()) == []
