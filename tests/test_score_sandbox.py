"""The sandbox against hostile answers: each one fails with a reason, in bounded time, with
nothing changed outside the sandbox and no process left behind, and the harness still works."""

from __future__ import annotations

import json
import os
import socket
import textwrap
import time
from pathlib import Path

import pytest

from qatcmp.sandbox import MARKER_ENV, Job, Limits, Outcome, Sandbox, detect_protections, marked_processes

LIMITS = Limits(wall_s=3.0, cpu_s=3, output_kill_bytes=1 << 20)
TEST = "def check(candidate):\n    assert candidate(1) == 2\n"
GOOD = "def f(x):\n    return x + 1\n"
PROTECTIONS = detect_protections()
needs_namespaces = pytest.mark.skipif(not PROTECTIONS.namespaces, reason="no namespaces on this machine")


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(LIMITS)


def run_hostile(sandbox: Sandbox, program: str, test: str = TEST) -> Outcome:
    started = time.monotonic()
    outcome = sandbox.run(Job(textwrap.dedent(program), test, "f"))
    elapsed = time.monotonic() - started
    assert elapsed < LIMITS.wall_s + 3, f"took {elapsed:.1f} s"
    assert marked_processes(f"{MARKER_ENV}=".encode()) == [], "a sandboxed process outlived its run"
    # The harness still works after it.
    assert sandbox.run(Job(GOOD, TEST, "f")).status == "passed"
    return outcome


def assert_refused(outcome: Outcome, *statuses: str) -> None:
    assert outcome.status in (statuses or ("failed",)), outcome
    assert outcome.status != "passed"
    assert outcome.detail, "a refused sample must say why"


def test_good_and_wrong_solutions(sandbox: Sandbox) -> None:
    assert sandbox.run(Job(GOOD, TEST, "f")).status == "passed"
    wrong = sandbox.run(Job("def f(x):\n    return x\n", TEST, "f"))
    assert wrong.status == "failed" and "AssertionError" in wrong.detail


def test_protections_are_reported() -> None:
    names = PROTECTIONS.names()
    assert "rlimits" in names and PROTECTIONS.describe()
    if os.geteuid() == 0 and Path("/usr/bin/unshare").exists():
        assert PROTECTIONS.namespaces and PROTECTIONS.drop_to_nobody


def test_infinite_loop(sandbox: Sandbox) -> None:
    outcome = run_hostile(sandbox, "while True:\n    pass\n")
    assert_refused(outcome, "timeout", "failed")


def test_sleep(sandbox: Sandbox) -> None:
    assert_refused(run_hostile(sandbox, "import time\ntime.sleep(100)\n"), "timeout")


def test_ignoring_sigterm(sandbox: Sandbox) -> None:
    program = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        time.sleep(100)
    """
    assert_refused(run_hostile(sandbox, program), "timeout")


@needs_namespaces
def test_fork_bomb(sandbox: Sandbox) -> None:
    program = """
        import os, time
        for _ in range(100000):
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
        def f(x):
            return x + 1
    """
    outcome = run_hostile(sandbox, program)
    assert_refused(outcome, "timeout", "failed")


def test_memory_bomb(sandbox: Sandbox) -> None:
    program = """
        hoard = []
        while True:
            hoard.append(bytearray(50 * 1024 * 1024))
    """
    outcome = run_hostile(sandbox, program)
    assert_refused(outcome)
    assert "MemoryError" in outcome.detail or "memory" in outcome.detail


def test_deep_recursion(sandbox: Sandbox) -> None:
    outcome = run_hostile(sandbox, "def f(x):\n    return f(x) + 1\n")
    assert_refused(outcome)
    assert "RecursionError" in outcome.detail


def test_recursion_past_the_c_stack(sandbox: Sandbox) -> None:
    program = """
        import sys
        sys.setrecursionlimit(10**7)
        def f(x):
            return f(x + 1) + 1
    """
    assert_refused(run_hostile(sandbox, program), "failed", "timeout")


def test_huge_output(sandbox: Sandbox) -> None:
    outcome = run_hostile(sandbox, "while True:\n    print('x' * 10000)\n")
    assert_refused(outcome)
    assert "output" in outcome.detail
    assert len(outcome.output) <= LIMITS.output_bytes


@needs_namespaces
def test_files_outside_the_folder_are_out_of_reach(sandbox: Sandbox, tmp_path: Path) -> None:
    open_dir = tmp_path / "world-writable"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    program = f"""
        import os, shutil
        done = []
        for action in (
            lambda: os.remove({str(sentinel)!r}),
            lambda: open({str(sentinel)!r}, "w").write("changed"),
            lambda: open({str(open_dir / 'planted.txt')!r}, "w").write("x"),
            lambda: open("/var/tmp/qatcmp-planted.txt", "w").write("x"),
            lambda: open({str(Path.cwd() / 'qatcmp-planted.txt')!r}, "w").write("x"),
            lambda: shutil.rmtree({str(tmp_path)!r}),
        ):
            try:
                action()
                done.append(1)
            except OSError:
                pass
        open("own-file.txt", "w").write("my own folder is writable")
        def f(x):
            return x
    """
    outcome = run_hostile(sandbox, program)
    assert_refused(outcome)
    assert "PermissionError" not in outcome.detail  # its own folder was writable
    assert sentinel.read_text() == "keep me"
    assert list(open_dir.iterdir()) == []
    assert not Path("/var/tmp/qatcmp-planted.txt").exists()
    assert not (Path.cwd() / "qatcmp-planted.txt").exists()


def test_workdir_is_removed(sandbox: Sandbox) -> None:
    program = """
        import os
        print(os.getcwd())
        open("left-behind.txt", "w").write("x")
        def f(x):
            return x + 1
    """
    outcome = sandbox.run(Job(textwrap.dedent(program), TEST, "f"))
    assert outcome.status == "passed"
    workdir = outcome.output.strip().splitlines()[0]
    assert "qatcmp-sbx-" in workdir and not Path(workdir).exists()


def test_parent_environment_is_not_readable(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-qatcmp-test-secret-4242"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    program = f"""
        import os
        found = {secret!r} in str(dict(os.environ))
        for pid in ("self", "1", str(os.getppid()), {str(os.getpid())!r}):
            try:
                found = found or {secret!r} in open(f"/proc/{{pid}}/environ", errors="replace").read()
            except OSError:
                pass
        print(sorted(os.environ))
        def f(x):
            return x + 1 if found else x
    """
    outcome = run_hostile(sandbox, program)
    assert_refused(outcome)
    assert secret not in outcome.output
    assert "OPENAI_API_KEY" not in outcome.output


def test_no_network(sandbox: Sandbox) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    program = f"""
        import socket
        connected = False
        for host in ("127.0.0.1", "1.1.1.1"):
            try:
                socket.create_connection((host, {port} if host == "127.0.0.1" else 80), timeout=1).close()
                connected = True
            except OSError:
                pass
        def f(x):
            return x + 1 if connected else x
    """
    try:
        outcome = run_hostile(sandbox, program)
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()
    assert_refused(outcome)


@pytest.mark.parametrize("exit_call", ["os._exit(0)", "sys.exit(0)", "raise SystemExit(0)", "os.close(1); os.close(2)"])
def test_exiting_before_the_tests_is_not_a_pass(sandbox: Sandbox, exit_call: str) -> None:
    program = f"import os, sys\ndef f(x):\n    return x\n{exit_call}\n"
    outcome = run_hostile(sandbox, program)
    assert_refused(outcome)


def test_exiting_from_inside_the_function_is_not_a_pass(sandbox: Sandbox) -> None:
    program = "import os\ndef f(x):\n    os._exit(0)\n"
    assert_refused(run_hostile(sandbox, program))


def test_printing_a_fake_verdict_is_not_a_pass(sandbox: Sandbox) -> None:
    program = """
        import os, json
        for fd in range(3, 20):
            try:
                os.write(fd, json.dumps({"token": "guess", "status": "passed", "detail": ""}).encode())
                os.write(fd, b"guess\tpassed\t\n\tpassed\t\n")
            except OSError:
                pass
        print("passed")
        os._exit(0)
    """
    assert_refused(run_hostile(sandbox, program))


def test_killing_its_parent(sandbox: Sandbox) -> None:
    program = """
        import os, signal
        for target in (lambda: os.kill(os.getppid(), signal.SIGKILL),
                       lambda: os.killpg(os.getpgrp(), signal.SIGKILL),
                       lambda: os.kill(-1, signal.SIGKILL)):
            try:
                target()
            except (OSError, PermissionError):
                pass
        def f(x):
            return x
    """
    assert_refused(run_hostile(sandbox, program))


def test_daemon_does_not_outlive_the_sample(sandbox: Sandbox, tmp_path: Path) -> None:
    program = """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            os._exit(0)
        def f(x):
            return x + 1
    """
    outcome = run_hostile(sandbox, program)
    # The function itself is right: the daemon is killed, the answer still passes.
    assert outcome.status == "passed"


def test_thread_left_running_does_not_hang_the_harness(sandbox: Sandbox) -> None:
    program = """
        import threading, time
        threading.Thread(target=lambda: time.sleep(100)).start()
        def f(x):
            return x + 1
    """
    assert run_hostile(sandbox, program).status == "passed"


def test_redefining_check_does_not_help(sandbox: Sandbox) -> None:
    program = "def f(x):\n    return 0\n\ndef check(candidate):\n    pass\n"
    assert_refused(run_hostile(sandbox, program))


def test_patching_builtins_does_not_help(sandbox: Sandbox) -> None:
    program = """
        import builtins
        builtins.abs = lambda value: 0
        builtins.AssertionError = type("Ignored", (Exception,), {})
        builtins.isinstance = lambda *a: True
        def f(x):
            return 0.0
    """
    test = "def check(candidate):\n    assert isinstance(candidate(1), float)\n    assert abs(candidate(1) - 2.0) < 1e-6\n"
    assert_refused(run_hostile(sandbox, program, test))


def test_always_equal_object_does_not_help(sandbox: Sandbox) -> None:
    program = """
        class Anything(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def f(x):
            return Anything(0)
    """
    outcome = run_hostile(sandbox, program)
    assert_refused(outcome)
    assert "plain values" in outcome.detail


def test_tracing_hook_swallowing_failures_does_not_help(sandbox: Sandbox) -> None:
    program = """
        import sys
        def tracer(frame, event, arg):
            if frame.f_code.co_name == "check":
                frame.f_trace_lines = False
            return tracer
        sys.settrace(tracer)
        import threading
        def f(x):
            return 0
    """
    assert_refused(run_hostile(sandbox, program))


def test_parallel_runs_keep_their_order(sandbox: Sandbox) -> None:
    jobs = [Job(f"def f(x):\n    return x + {i}\n", TEST, "f") for i in range(6)]
    outcomes = sandbox.run_many(jobs, workers=3)
    assert [o.status for o in outcomes] == ["failed", "passed", "failed", "failed", "failed", "failed"]


def test_fallback_without_namespaces_still_refuses_sockets_and_exits() -> None:
    fallback = Sandbox(LIMITS, protections=type(PROTECTIONS)(in_process_guards=True))
    assert fallback.run(Job(GOOD, TEST, "f")).status == "passed"
    network = "import socket\ntry:\n    socket.socket()\n    ok = True\nexcept OSError:\n    ok = False\ndef f(x):\n    return x + 1 if ok else x\n"
    assert fallback.run(Job(network, TEST, "f")).status == "failed"
    assert fallback.run(Job("import os\nos._exit(0)\n", TEST, "f")).status == "failed"
    slow = fallback.run(Job("import time\ntime.sleep(60)\n", TEST, "f"))
    assert slow.status == "timeout"
    assert marked_processes(f"{MARKER_ENV}=".encode()) == []




def test_fallback_timeout_is_bounded() -> None:
    fallback = Sandbox(Limits(wall_s=1.0, cpu_s=1), protections=type(PROTECTIONS)(in_process_guards=True))
    started = time.monotonic()
    assert fallback.run(Job("import time\ntime.sleep(60)\n", TEST, "f")).status == "timeout"
    assert time.monotonic() - started < 3


def test_how_a_sample_ended_is_named() -> None:
    quick = Sandbox(Limits(wall_s=5.0, cpu_s=1, file_bytes=1 << 20))
    cpu = quick.run(Job("while True:\n    pass\n", TEST, "f"))
    assert (cpu.status, cpu.detail) == ("timeout", "used more than 1 s of CPU time")
    crash = quick.run(Job("import ctypes\nctypes.string_at(0)\n", TEST, "f"))
    assert crash.status == "failed" and "SIGSEGV" in crash.detail
    big_file = quick.run(Job("import signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
                             "open('big', 'wb').write(b'x' * (4 << 20))\n", TEST, "f"))
    assert big_file.status == "failed" and "larger than" in big_file.detail
    exited = quick.run(Job("import os\nos._exit(3)\n", TEST, "f"))
    assert exited.detail.startswith("exited (code 3)")


_AS_USER = """
import sys, time
sys.path.insert(0, {root!r})
from qatcmp.sandbox import MARKER_ENV, Job, Limits, Sandbox, detect_protections, marked_processes
sandbox = Sandbox(Limits(wall_s=3.0, cpu_s=3))
test = "def check(candidate):\\n    assert candidate(1) == 2\\n"
good = sandbox.run(Job("def f(x):\\n    return x + 1\\n", test, "f")).status
net = sandbox.run(Job("import socket\\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\\n", test, "f")).status
started = time.monotonic()
bomb = sandbox.run(Job("import os, time\\nwhile True:\\n    try:\\n        os.fork()\\n    except OSError:\\n        time.sleep(0.01)\\n", test, "f")).status
import json
print(json.dumps([detect_protections().names(), good, net, bomb, time.monotonic() - started,
                  marked_processes(f"{{MARKER_ENV}}=".encode())]))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists() or not Path("/usr/bin/python3").exists(),
                    reason="needs root to become an ordinary user, setpriv and a system python3")
def test_an_ordinary_user_gets_user_namespaces(tmp_path: Path) -> None:
    """As an ordinary Linux user (here `nobody`): a user namespace replaces the change of
    user, and a fork bomb is still held by RLIMIT_NPROC (counted per user namespace)."""
    import subprocess

    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-I", "-c",
         _AS_USER.format(root=root)],
        capture_output=True, text=True, timeout=60, cwd="/", env={"PATH": "/usr/bin:/bin"},
    )
    if done.returncode != 0 and ("Permission denied" in done.stderr or "No module named" in done.stderr):
        pytest.skip(f"the project is not readable by nobody here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    names, good, net, bomb, seconds, left = json.loads(done.stdout)
    assert "rlimits" in names and "drop-to-nobody" not in names
    if "user-namespace" not in names:
        pytest.skip("unprivileged user namespaces are not allowed on this machine")
    assert (good, net, bomb) == ("passed", "failed", "timeout")
    assert seconds < 6 and left == []


def test_the_tests_cannot_be_read_off_the_disk(sandbox: Sandbox) -> None:
    program = """
        import os
        seen = sorted(os.listdir("."))
        print(seen)
        def f(x):
            return x + 1 if not seen else x
    """
    outcome = run_hostile(sandbox, program)
    assert outcome.status == "passed", outcome.output
