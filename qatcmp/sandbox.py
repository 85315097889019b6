"""Running model-written code without fear: one sandboxed child process per sample.

Each sample runs in a fresh temporary folder (removed afterwards) as its own session, with a
scrubbed environment, stdin closed, output captured and capped, wall-clock and CPU time
limits, and address-space, process-count, file-size and open-file limits. On top of that, it
uses whatever isolation the machine allows, detected once and reported:

- Linux as root (the tests and CI): new network, PID and mount namespaces via ``unshare``,
  a private empty /tmp, and a drop to ``nobody`` in the child. A fork bomb meets
  RLIMIT_NPROC (which binds ``nobody``, not root), a daemon dies with its PID namespace, a
  network connection finds no interface, writes outside the working folder are refused.
- Linux as a user where unprivileged user namespaces are allowed: the same namespaces,
  without the change of user.
- Elsewhere (macOS): rlimits, the session's process group killed on timeout, sockets and
  process-control calls refused inside the child (weak, in-process), and on macOS a
  ``sandbox-exec`` profile denying network and writes outside the folder when available.

The verdict comes back on a pipe with a per-sample secret token (see sandbox_child.py): an
answer that exits before its tests, or prints a fake result, cannot pass.
"""

from __future__ import annotations

import marshal
import os
import pwd
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

CHILD_SOURCE = Path(__file__).with_name("sandbox_child.py")
MARKER_ENV = "QATCMP_SANDBOX"  # set in every child's environment, to find leftovers
WORKDIR_PREFIX = "qatcmp-sbx-"
UNSHARE = "/usr/bin/unshare"
SANDBOX_EXEC = "/usr/bin/sandbox-exec"
_NS_FLAGS = ["--net", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc"]


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30  # address space
    processes: int = 32
    file_bytes: int = 16 << 20
    open_files: int = 64
    output_bytes: int = 64 << 10  # captured stdout+stderr kept (the rest is discarded)
    output_kill_bytes: int = 16 << 20  # more output than this ends the sample


@dataclass(frozen=True)
class Protections:
    """Which isolation the sandbox uses on this machine."""

    namespaces: bool = False  # network + PID + mount namespaces (unshare)
    user_namespace: bool = False  # ... entered as an unprivileged user
    drop_to_nobody: bool = False
    private_tmp: bool = False
    sandbox_exec: bool = False  # macOS profile: no network, no writes outside the folder
    in_process_guards: bool = False  # socket/kill/fork refused inside the child (weak)

    def names(self) -> list[str]:
        active = ["rlimits", "own-session", "fresh-workdir", "scrubbed-env", "token-verdict"]
        if self.namespaces:
            active += ["net-namespace", "pid-namespace", "mount-namespace"]
        if self.user_namespace:
            active.append("user-namespace")
        if self.drop_to_nobody:
            active.append("drop-to-nobody")
        if self.private_tmp:
            active.append("private-tmp")
        if self.sandbox_exec:
            active.append("sandbox-exec")
        if self.in_process_guards:
            active.append("in-process-guards")
        return active

    def describe(self) -> str:
        text = ", ".join(self.names())
        if not self.namespaces and not self.sandbox_exec:
            text += " (no OS-level network or file-system isolation on this machine)"
        return text


@dataclass(frozen=True)
class Job:
    """One program to run: the solution, then the test, then check(entry_point)."""

    program: str
    test: str
    entry_point: str


@dataclass
class Outcome:
    status: str  # passed, failed, timeout, error
    detail: str = ""
    output: str = ""
    duration_s: float = 0.0
    exit_code: int | None = None
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- detection


@lru_cache(maxsize=1)
def detect_protections() -> Protections:
    """The strongest isolation that actually works here (each is tried, not assumed)."""
    if sys.platform.startswith("linux") and os.path.exists(UNSHARE):
        if os.geteuid() == 0 and _works([UNSHARE, *_NS_FLAGS, "true"]):
            return Protections(namespaces=True, drop_to_nobody=_nobody() is not None, private_tmp=True)
        user_flags = ["--user", "--map-root-user", *_NS_FLAGS]
        if os.geteuid() != 0 and _works([UNSHARE, *user_flags, "true"]):
            return Protections(namespaces=True, user_namespace=True, private_tmp=True)
    return Protections(sandbox_exec=_sandbox_exec_works(), in_process_guards=True)


def _sandbox_exec_works() -> bool:
    """macOS: the profile is tried once on a harmless command; an OS that refuses it (the
    tool is deprecated) leaves the in-process guards alone."""
    if sys.platform != "darwin" or not os.path.exists(SANDBOX_EXEC):
        return False
    return _works([SANDBOX_EXEC, "-p", _macos_profile(Path(tempfile.gettempdir())), "/usr/bin/true"])


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _nobody() -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


# --------------------------------------------------------------------------- running


class Sandbox:
    def __init__(self, limits: Limits | None = None, protections: Protections | None = None):
        self.limits = limits or Limits()
        self.protections = protections if protections is not None else detect_protections()
        self.python = sys.executable
        self.child_source = CHILD_SOURCE.read_text(encoding="utf-8")

    def run_many(self, jobs: list[Job], *, workers: int | None = None) -> list[Outcome]:
        """Run the jobs in parallel (each in its own child); results in the jobs' order."""
        if not jobs:
            return []
        workers = max(1, workers or os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            return list(pool.map(self.run, jobs))

    def run(self, job: Job) -> Outcome:
        workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        marker = workdir.name
        try:
            return self._run_in(workdir, job, marker)
        except OSError as exc:
            return Outcome("error", f"the sandbox could not run the sample: {exc}")
        finally:
            if not self.protections.namespaces:  # else the PID namespace took them all
                kill_marked_processes(marker)
            shutil.rmtree(workdir, ignore_errors=True)

    # ------------------------------------------------------------------ internals

    def _run_in(self, workdir: Path, job: Job, marker: str) -> Outcome:
        child = workdir / "sandbox_child.py"
        child.write_text(self.child_source, encoding="utf-8")
        job_file = workdir / "job.marshal"
        job_file.write_bytes(marshal.dumps(self._job_document(job)))
        nobody = _nobody() if self.protections.drop_to_nobody else None
        if nobody is not None:
            # The folder belongs to the dropped user so the code can write its own files
            # there; the files we put in it stay root-owned and read-only.
            os.chown(workdir, *nobody)
        os.chmod(workdir, 0o755)
        for path in (child, job_file):
            os.chmod(path, 0o444)

        token = secrets.token_hex(16)
        token_r, token_w = os.pipe()
        result_r, result_w = os.pipe()
        cmd = self._command(child, job_file, token_r, result_w, workdir)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                cmd, cwd=workdir, env=self._environment(workdir, marker),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, pass_fds=(token_r, result_w),
            )
        finally:
            os.close(token_r)
            os.close(result_w)
        try:
            os.write(token_w, token.encode())
        except OSError:
            pass  # the child died at once; the missing verdict says so
        finally:
            os.close(token_w)
        try:
            output, verdict_raw, reason = self._collect(proc, result_r, started)
        finally:
            os.close(result_r)
            _end_everything(proc, namespaced=self.protections.namespaces)
        return self._verdict(proc, output, verdict_raw, reason, token, time.monotonic() - started)

    def _job_document(self, job: Job) -> dict:
        limits = self.limits
        rlimits = {
            "RLIMIT_CPU": limits.cpu_s,
            "RLIMIT_AS": limits.memory_bytes,
            # Counted per user (and, since Linux 5.14, per user namespace): it binds the
            # dropped `nobody` or the namespace's mapped root, not the real root.
            "RLIMIT_NPROC": limits.processes,
            "RLIMIT_FSIZE": limits.file_bytes,
            "RLIMIT_NOFILE": limits.open_files,
            "RLIMIT_CORE": 0,
        }
        nobody = _nobody() if self.protections.drop_to_nobody else None
        return {
            "program": job.program,
            "test": job.test,
            "entry_point": job.entry_point,
            "setup": {
                "limits": rlimits,
                "private_tmp": self.protections.private_tmp,
                "drop_to_uid": nobody[0] if nobody else None,
                "drop_to_gid": nobody[1] if nobody else None,
                "refuse_sockets": not self.protections.namespaces,
                "guard_os_calls": self.protections.in_process_guards,
                "package_paths": _package_paths(),
            },
        }

    def _command(self, child: Path, job_file: Path, token_fd: int, result_fd: int, workdir: Path) -> list[str]:
        python = [self.python, "-I", "-S", "-B", str(child), str(token_fd), str(result_fd), str(job_file)]
        if self.protections.namespaces:
            user = ["--user", "--map-root-user"] if self.protections.user_namespace else []
            return [UNSHARE, *user, *_NS_FLAGS, *python]
        if self.protections.sandbox_exec:
            return [SANDBOX_EXEC, "-p", _macos_profile(workdir), *python]
        return python

    @staticmethod
    def _environment(workdir: Path, marker: str) -> dict[str, str]:
        # Nothing from the parent's environment: no API keys, no proxies, no PYTHONPATH.
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            # One thread for numerical libraries: their thread pools would meet the
            # process-count limit (threads count) on a many-core machine.
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            MARKER_ENV: marker,
        }

    def _collect(self, proc: subprocess.Popen, result_fd: int, started: float) -> tuple[bytes, bytes, str]:
        """Read output and verdict until the child ends, the time is up or it floods us."""
        limits = self.limits
        output = bytearray()
        verdict = bytearray()
        total = 0
        reason = ""
        assert proc.stdout is not None
        os.set_blocking(result_fd, False)
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, "out")
            sel.register(result_fd, selectors.EVENT_READ, "verdict")
            open_streams = 2
            while open_streams:
                remaining = started + limits.wall_s - time.monotonic()
                if remaining <= 0:
                    reason = "timeout"
                    break
                for key, _ in sel.select(timeout=min(remaining, 0.5)):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        open_streams -= 1
                    elif key.data == "verdict":
                        if len(verdict) < 4096:
                            verdict += chunk
                    else:
                        total += len(chunk)
                        if len(output) < limits.output_bytes:
                            output += chunk[: limits.output_bytes - len(output)]
                        if total > limits.output_kill_bytes:
                            reason = "output"
                if reason:
                    break
                if proc.poll() is not None and open_streams and not sel.select(timeout=0.05):
                    break  # the child is gone; a grandchild may hold the pipes open
        return bytes(output), bytes(verdict), reason

    def _verdict(self, proc: subprocess.Popen, output: bytes, verdict_raw: bytes, reason: str,
                 token: str, duration: float) -> Outcome:
        text = output.decode("utf-8", errors="replace")
        outcome = Outcome("failed", output=text, duration_s=round(duration, 3), exit_code=proc.returncode)
        if reason == "timeout":
            outcome.status, outcome.detail = "timeout", f"still running after {self.limits.wall_s:g} s"
            return outcome
        if reason == "output":
            outcome.detail = f"wrote more than {self.limits.output_kill_bytes} bytes of output"
            return outcome
        verdict, ending = _parse_results(verdict_raw, token)
        if verdict is not None:
            outcome.status, outcome.detail = verdict
            return outcome
        outcome.status, outcome.detail = _ending_description(ending, self.limits, text)
        return outcome


@lru_cache(maxsize=1)
def _package_paths() -> list[str]:
    """The folders of installed packages (site-packages), so code that imports numpy works in
    a child started without `site`."""
    import site

    paths = [*site.getsitepackages(), site.getusersitepackages()]
    return [p for p in paths if os.path.isdir(p) and p in sys.path]


def _parse_results(raw: bytes, token: str) -> tuple[tuple[str, str] | None, str | None]:
    """The worker's verdict and the supervisor's account of how the worker ended
    ("signal=N" or "code=N"); lines without the token (forged by the untrusted code) are
    ignored."""
    verdict = ending = None
    for line in raw.decode("utf-8", errors="replace").splitlines():
        parts = line.split("\t", 2)
        if len(parts) != 3 or not secrets.compare_digest(parts[0], token):
            continue
        kind, value = parts[1], parts[2]
        if kind in ("passed", "failed", "error") and verdict is None:
            verdict = (kind, value[:300])
        elif kind == "exit" and ending is None:
            ending = value
    return verdict, ending


def _ending_description(ending: str | None, limits: Limits, output: str) -> tuple[str, str]:
    """(status, detail) of a worker that gave no verdict."""
    if ending is None:
        return "failed", "the sandboxed process ended without a verdict"
    kind, _, number_text = ending.partition("=")
    number = int(number_text) if number_text.lstrip("-").isdigit() else -1
    if kind == "signal":
        if number == signal.SIGXCPU:
            return "timeout", f"used more than {limits.cpu_s} s of CPU time"
        if number == signal.SIGXFSZ:
            return "failed", f"wrote a file larger than {limits.file_bytes} bytes"
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        verb = "killed" if number == signal.SIGKILL else "crashed"
        return "failed", f"{verb} ({name}) before the tests finished"
    if "MemoryError" in output:
        return "failed", "ran out of memory (address-space limit)"
    last = output.strip().splitlines()[-1][:200] if output.strip() else ""
    return "failed", f"exited (code {number}) before the tests finished" + (f": {last}" if last else "")


def _end_everything(proc: subprocess.Popen, *, namespaced: bool) -> None:
    """Kill what the sample started and wait until it is gone.

    With a PID namespace, killing the namespace's first process (unshare's child) makes the
    kernel kill every process in it, and unshare returns only once they are all gone - so
    kill that one first and wait for unshare. Then the session's process group, for
    whatever did not leave the session."""
    if namespaced and proc.poll() is None:
        for child in _children(proc.pid):
            _kill(child)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_marked_processes(marker: str) -> int:
    """Kill any process still carrying a sample's marker in its environment (Linux /proc):
    a daemon that left the session when no PID namespace holds it. Returns how many."""
    needle = f"{MARKER_ENV}={marker}".encode()
    killed = 0
    for pid in marked_processes(needle):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def marked_processes(needle: bytes) -> list[int]:
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _macos_profile(workdir: Path) -> str:
    folder = str(workdir.resolve()).replace('"', "")
    return (
        "(version 1)(allow default)(deny network*)"
        "(deny file-write*)"
        f'(allow file-write* (subpath "{folder}") (literal "/dev/null"))'
        "(deny signal (target others))"
    )
