"""The program the sandbox runs in each child process (copied alone into the child's fresh
working directory, so it imports nothing but the standard library).

Two processes. The supervisor (the namespace's first process when there are namespaces)
prepares what needs privileges - a private /tmp, the interpreter's files made readable -
then forks the worker and waits for it. The worker sets the resource limits, drops
privileges and only then runs the untrusted code. Each writes one line to the result pipe
starting with a token the parent passed through another pipe: the worker its verdict, the
supervisor how the worker ended (exit code or signal). An answer that exits early, prints a
fake "passed" or closes its outputs cannot count as passed, and a crash is named.

    python -I -S -B sandbox_child.py TOKEN_FD RESULT_FD JOB_FILE   (JOB_FILE: a marshal'd dict)
"""

from __future__ import annotations

import builtins
import ctypes
import marshal
import os
import resource
import sys

# Types a HumanEval function returns. A value of any other type is refused before the tests
# compare it: an object whose __eq__ always says True would pass every `assert x == y`.
_PLAIN_TYPES = (int, float, complex, bool, str, bytes, type(None), list, tuple, dict, set, frozenset)


def main() -> None:
    token_fd, result_fd, job_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    # marshal, not json: importing json (and re) would be a good part of the start-up time.
    with open(job_path, "rb") as fh:
        job = marshal.load(fh)
    token = _read_all(token_fd)
    # The untrusted code must not read the tests off the disk (to answer them by rote).
    for path in (job_path, sys.argv[0]):
        try:
            os.unlink(path)
        except OSError:
            pass
    setup = job["setup"]
    # The interpreter runs with -S (no `site`: its .pth processing is most of the start-up
    # time); the parent's package folders are put on the path as they are.
    sys.path.extend(p for p in setup.get("package_paths", []) if p not in sys.path)
    if setup.get("private_tmp"):
        _mount_private_tmp()
        if setup.get("drop_to_uid") is not None:
            _expose_interpreter()
    sys.stdout.flush()
    worker = os.fork()
    if worker == 0:
        _worker(job, token, result_fd)
    _, status = os.waitpid(worker, 0)
    ending = f"signal={os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"code={os.WEXITSTATUS(status)}"
    _send(os.write, result_fd, token, "exit", ending)
    os._exit(0)


def _worker(job: dict, token: str, result_fd: int) -> None:
    write = os.write  # kept before the untrusted code can replace it
    setup = job["setup"]
    _set_limits(setup["limits"], setup.get("cpu_grace_s", 1))
    if setup.get("drop_to_uid") is not None:
        _drop_privileges(setup["drop_to_uid"], setup["drop_to_gid"])
    _no_new_privileges()
    if setup.get("refuse_sockets"):
        _refuse_sockets()
    if setup.get("guard_os_calls"):
        _guard_os_calls()
    sys.setrecursionlimit(setup.get("recursion_limit", 3000))
    status, detail = _run(job)
    _send(write, result_fd, token, status, detail)
    sys.stdout.flush()
    os._exit(0)  # skip atexit handlers the untrusted code may have registered


def _send(write, fd: int, token: str, kind: str, value: str) -> None:  # type: ignore[no-untyped-def]
    """One line: token, kind (passed/failed/error, or exit), value - tab-separated."""
    value = " ".join(value.split())  # no tab or newline inside
    try:
        write(fd, f"{token}\t{kind}\t{value}\n".encode("utf-8", "replace"))
    except OSError:
        pass  # the untrusted code closed the pipe: the parent sees no verdict


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


def _set_limits(limits: dict[str, int], cpu_grace_s: int) -> None:
    for name, value in limits.items():
        which = getattr(resource, name, None)
        if which is None:
            continue  # not on this OS (RLIMIT_NPROC/AS are missing on some)
        # CPU: SIGXCPU at the soft limit, SIGKILL a little later if that is ignored.
        hard = value + cpu_grace_s if name == "RLIMIT_CPU" else value
        try:
            resource.setrlimit(which, (value, hard))
        except (ValueError, OSError):
            # macOS refuses some values (e.g. RLIMIT_AS); keep the others.
            pass


def _libc() -> ctypes.CDLL:
    # The running program's own symbols include libc's (ctypes.util.find_library would
    # start a process to ask ldconfig).
    return ctypes.CDLL(None, use_errno=True)


def _mount_private_tmp() -> None:
    """Empty, small tmpfs over the world-writable folders, visible only in this mount
    namespace: the code cannot leave files behind there. The working directory (under the
    real /tmp) stays reachable because the process is already inside it."""
    libc = _libc()
    for target in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        if os.path.isdir(target):
            libc.mount(b"tmpfs", target.encode(), b"tmpfs", 0, b"size=16m,mode=1777")


def _expose_interpreter() -> None:
    """Let the dropped user read the interpreter's own files when they live in a private
    home (e.g. /root/.pyenv): an empty tmpfs hides that home, and the interpreter's folders
    alone are bind-mounted back into it. Other files there stay out of sight."""
    wanted = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, *sys.path) if os.path.isdir(p)})
    blocked = {b for b in (_first_closed_ancestor(p) for p in wanted) if b is not None}
    if not blocked:
        return
    hidden = [p for p in wanted if any(p == b or p.startswith(b + "/") for b in blocked)]
    handles = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in hidden}
    libc = _libc()
    for home in sorted(blocked):
        libc.mount(b"tmpfs", home.encode(), b"tmpfs", 0, b"size=1m,mode=0755")
    for path, fd in handles.items():
        os.makedirs(path, mode=0o755, exist_ok=True)
        libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, 4096, None)  # MS_BIND
        os.close(fd)


def _first_closed_ancestor(path: str) -> str | None:
    """The first folder on the way to path that others cannot enter, or None."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & 0o001:
            return current
    return None


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise SystemExit("could not drop privileges")


def _no_new_privileges() -> None:
    if sys.platform.startswith("linux"):
        _libc().prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: no setuid binaries


def _refuse_sockets() -> None:
    """Where there is no network namespace: a weak, in-process refusal."""
    import socket

    def refused(*args: object, **kwargs: object) -> None:
        raise OSError("network access is disabled in the qatcmp sandbox")

    socket.socket = refused  # type: ignore[assignment,misc]
    socket.create_connection = refused  # type: ignore[assignment]
    socket.socketpair = refused  # type: ignore[assignment]


def _guard_os_calls() -> None:
    """Where there is no PID namespace and no privilege drop, the code runs as the user: take
    away the obvious ways to signal or spawn outside processes (weak; in-process only)."""

    def disabled(*args: object, **kwargs: object) -> None:
        raise PermissionError("disabled in the qatcmp sandbox")

    for name in ("kill", "killpg", "system", "fork", "forkpty", "setsid", "putenv"):
        if hasattr(os, name):
            setattr(os, name, disabled)
    import subprocess

    subprocess.Popen = disabled  # type: ignore[assignment,misc]


def _run(job: dict) -> tuple[str, str]:
    pristine_builtins = dict(builtins.__dict__)
    namespace: dict = {"__name__": "__qatcmp_solution__", "__builtins__": builtins}
    try:
        exec(compile(job["program"], "solution.py", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - any failure of untrusted code is a verdict
        return "failed", "the code does not run: " + _describe(exc)
    entry_point = job["entry_point"]
    candidate = namespace.get(entry_point)
    if not callable(candidate):
        return "failed", f"no function {entry_point} defined"
    # The tests run with the names the solution defined (a test may call the prompt's
    # helpers) but with builtins as they were before the solution ran.
    test_namespace = dict(namespace)
    test_namespace["__builtins__"] = pristine_builtins
    test_namespace["__name__"] = "__qatcmp_test__"
    try:
        exec(compile(job["test"], "test.py", "exec"), test_namespace)
        check = test_namespace["check"]
    except BaseException as exc:  # noqa: BLE001
        return "error", "the test code does not run: " + _describe(exc)
    sys.settrace(None)
    sys.setprofile(None)
    try:
        check(_plain_values_only(candidate))
    except BaseException as exc:  # noqa: BLE001
        return "failed", _describe(exc)
    return "passed", ""


def _plain_values_only(function):  # type: ignore[no-untyped-def]
    def guarded(*args, **kwargs):  # type: ignore[no-untyped-def]
        value = function(*args, **kwargs)
        _require_plain(value, depth=0)
        return value

    return guarded


def _require_plain(value: object, depth: int) -> None:
    kind = type(value)
    if kind not in _PLAIN_TYPES and not kind.__module__.startswith("numpy"):
        raise TypeError(f"returned a {kind.__qualname__} object; only plain values are compared")
    if depth > 20:
        return
    if kind in (list, tuple, set, frozenset):
        for element in value:  # type: ignore[attr-defined]
            _require_plain(element, depth + 1)
    elif kind is dict:
        for key, element in value.items():  # type: ignore[attr-defined]
            _require_plain(key, depth + 1)
            _require_plain(element, depth + 1)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, AssertionError) and not str(exc):
        text = "AssertionError (a test failed)"
    return text[:300]


if __name__ == "__main__":
    main()
