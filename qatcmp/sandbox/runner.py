"""One HumanEval sample = two sandboxed processes, a judge and a candidate (see child.py).

The scorer starts both, wires them with two pipes (judge -> candidate: calls, candidate ->
judge: results) and gives the judge a third pipe for its verdict, which only the judge holds.
Each process runs under the isolation detected in isolation.py, with resource limits, a
scrubbed environment and its own session; the scorer caps their output and the time, then
kills what is left (with bubblewrap: each process's PID namespace, so nothing survives).
"""

from __future__ import annotations

import os
import secrets
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from qatcmp.errors import QatcmpError
from qatcmp.sandbox import codec
from qatcmp.sandbox.cleanup import MARKER_ENV, kill_marked_processes, remove_tree
from qatcmp.sandbox.isolation import (
    CHILD_DIR, INSIDE_DIR, SANDBOX_EXEC, WORK_DIR, Protections, bwrap_plan, detect_protections,
    macos_profile, package_paths, python_executable, sandbox_python,
)

WORKDIR_PREFIX = "qatcmp-sbx-"


class IsolationUnavailable(QatcmpError):
    """No OS isolation here and running without it was not asked for (one line, exit 2)."""


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0  # the whole sample (both processes)
    call_s: float | None = None  # one call of the function (default: wall_s)
    cpu_s: int = 10
    memory_bytes: int = 1 << 30  # address space, per process
    processes: int = 32  # per sandbox (threads count too)
    file_bytes: int = 16 << 20
    open_files: int = 64
    tmpfs_bytes: int = 32 << 20  # the private writable folder, all files together
    output_bytes: int = 64 << 10  # captured stdout+stderr kept (the rest is discarded)
    output_kill_bytes: int = 16 << 20  # more output than this ends the sample


@dataclass(frozen=True)
class Job:
    """One sample: the program (prompt + completion) runs in the candidate; the prompt (its
    helpers and the entry point's stub) and the test run in the judge."""

    program: str
    test: str
    entry_point: str
    prompt: str = ""


@dataclass
class Outcome:
    status: str  # passed, failed, timeout, error
    detail: str = ""
    output: str = ""
    duration_s: float = 0.0
    exit_code: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class _Process:
    proc: subprocess.Popen
    output: bytearray = field(default_factory=bytearray)
    workdir: Path | None = None  # host folder (no bubblewrap) to remove afterwards


class Sandbox:
    def __init__(self, limits: Limits | None = None, protections: Protections | None = None,
                 *, allow_unsafe: bool = False):
        self.limits = limits or Limits()
        self.protections = protections if protections is not None else detect_protections()
        self.allow_unsafe = allow_unsafe

    def require_isolation(self) -> None:
        """Refuse to run model code without isolation unless that was asked for."""
        if not self.protections.isolated and not self.allow_unsafe:
            raise IsolationUnavailable(
                f"refusing to run model code without a sandbox: {self.protections.missing} "
                "(or pass --unsafe-no-isolation to run it anyway, with your rights)"
            )

    def run_many(self, jobs: list[Job], *, workers: int | None = None) -> list[Outcome]:
        """Run the jobs in parallel (each in its own pair of processes), in the jobs' order."""
        if not jobs:
            return []
        self.require_isolation()
        workers = max(1, workers or os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            return list(pool.map(self.run, jobs))

    def run(self, job: Job) -> Outcome:
        self.require_isolation()
        marker = secrets.token_hex(8)
        started = time.monotonic()
        started_processes: list[_Process] = []
        pipes: list[int] = []
        try:
            return self._run(job, marker, started, started_processes, pipes)
        except OSError as exc:
            return Outcome("error", f"the sandbox could not run the sample: {exc}")
        finally:
            for fd in pipes:
                _close(fd)
            for process in started_processes:
                _end(process.proc, namespaced=self.protections.isolation == "bubblewrap")
            if self.protections.isolation != "bubblewrap":
                kill_marked_processes(marker)  # daemons that left the session
            for process in started_processes:
                if process.workdir is not None:
                    remove_tree(process.workdir)

    # ------------------------------------------------------------------ internals

    def _run(self, job: Job, marker: str, started: float, processes: list[_Process], pipes: list[int]) -> Outcome:
        request_r, request_w = os.pipe()
        response_r, response_w = os.pipe()
        verdict_r, verdict_w = os.pipe()
        pipes += [request_r, request_w, response_r, response_w, verdict_r, verdict_w]
        limits = self.limits
        call_s = limits.call_s or limits.wall_s
        common = {"limits": self._rlimits(), "package_paths": list(package_paths())}
        candidate = self._start("candidate", [request_r, response_w], marker,
                                {**common, "program": job.program, "entry_point": job.entry_point,
                                 "recursion_limit": 3000})
        processes.append(candidate)
        judge = self._start("judge", [request_w, response_r, verdict_w], marker,
                            {**common, "prompt": job.prompt, "test": job.test, "entry_point": job.entry_point, "call_s": call_s,
                             "total_s": limits.wall_s})
        processes.append(judge)
        for fd in (request_r, request_w, response_r, response_w, verdict_w):
            _close(fd)  # the children hold them now
            pipes.remove(fd)
        raw, reason = self._collect(processes, verdict_r, started)
        if reason == "" and candidate.proc.poll() is None:
            try:  # how the candidate ended names a crash (the judge only saw its pipe close)
                candidate.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        return self._verdict(raw, reason, candidate, judge, time.monotonic() - started)

    def _rlimits(self) -> dict[str, int]:
        limits = self.limits
        return {
            "RLIMIT_CPU": limits.cpu_s,
            "RLIMIT_AS": limits.memory_bytes,
            # Counted per user and user namespace: each bubblewrap sandbox has its own.
            "RLIMIT_NPROC": limits.processes,
            "RLIMIT_FSIZE": limits.file_bytes,
            "RLIMIT_NOFILE": limits.open_files,
            "RLIMIT_CORE": 0,
        }

    def _start(self, role: str, fds: list[int], marker: str, job: dict) -> _Process:
        env = _environment(marker)
        isolation = self.protections.isolation
        workdir = plan = None
        options: dict = {"pass_fds": fds}
        python = python_executable()
        if isolation == "bubblewrap":
            plan = bwrap_plan(self.protections.bwrap or "bwrap", self.limits.tmpfs_bytes)
            prefix = plan.command
            for key, value in env.items():
                prefix += ["--setenv", key, value]
            child = f"{INSIDE_DIR}/child.py"
            cwd = "/"
            options = plan.popen_options()
            options["pass_fds"] = (*options["pass_fds"], *fds)
            python = sandbox_python() or python
        else:
            workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
            env = {**env, "HOME": str(workdir), "TMPDIR": str(workdir)}
            prefix = [SANDBOX_EXEC, "-p", macos_profile(workdir)] if isolation == "sandbox-exec" else []
            child = str(CHILD_DIR / "child.py")
            cwd = str(workdir)
        cmd = [*prefix, python, "-I", "-S", "-B", child, role, *map(str, fds)]
        try:
            proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, **options,
            )
        finally:
            if plan is not None:
                plan.close()
        process = _Process(proc, workdir=workdir)
        payload = codec.encode(job)
        # A thread, so a large program cannot block us on a full pipe while the child is busy.
        threading.Thread(target=_feed, args=(proc, payload), daemon=True).start()
        return process

    def _collect(self, processes: list[_Process], verdict_fd: int, started: float) -> tuple[bytes, str]:
        """Output and verdict until the judge has spoken, the time is up or output floods."""
        limits = self.limits
        deadline = started + limits.wall_s + 2.0  # the judge keeps the time itself; this is the backstop
        verdict = bytearray()
        total = 0
        with selectors.DefaultSelector() as sel:
            for process in processes:
                assert process.proc.stdout is not None
                sel.register(process.proc.stdout, selectors.EVENT_READ, process)
            sel.register(verdict_fd, selectors.EVENT_READ, None)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return bytes(verdict), "timeout"
                for key, _ in sel.select(timeout=min(remaining, 0.5)):
                    chunk = os.read(key.fd, 65536)
                    if key.data is None:
                        if not chunk:
                            return bytes(verdict), ""
                        verdict += chunk[: 65536 - len(verdict)]
                        continue
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    total += len(chunk)
                    kept = key.data.output
                    kept += chunk[: max(0, limits.output_bytes - len(kept))]
                    if total > limits.output_kill_bytes:
                        return bytes(verdict), "output"

    def _verdict(self, raw: bytes, reason: str, candidate: _Process, judge: _Process, duration: float) -> Outcome:
        output = bytes(candidate.output) + bytes(judge.output)
        text = output[: self.limits.output_bytes].decode("utf-8", errors="replace")
        outcome = Outcome("failed", output=text, duration_s=round(duration, 3), exit_code=candidate.proc.returncode)
        if reason == "timeout":
            outcome.status, outcome.detail = "timeout", f"still running after {self.limits.wall_s:g} s"
            return outcome
        if reason == "output":
            outcome.detail = f"wrote more than {self.limits.output_kill_bytes} bytes of output"
            return outcome
        verdict = _parse_verdict(raw)
        if verdict is None:
            outcome.status, outcome.detail = "error", "the judge process ended without a verdict: " + _ending(judge.proc.poll())
            return outcome
        status, detail = verdict
        if status == "gone":  # the candidate died: say how, from its exit status
            status, detail = _candidate_ending(candidate.proc.poll(), detail, self.limits, text)
        outcome.status, outcome.detail = status, detail
        return outcome


def _parse_verdict(raw: bytes) -> tuple[str, str] | None:
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != len(raw) - 4:
        return None
    try:
        value = codec.decode(raw[4:])
    except codec.CodecError:
        return None
    if (type(value) is not tuple or len(value) != 2 or value[0] not in ("passed", "failed", "error", "timeout", "gone")
            or type(value[1]) is not str):
        return None
    return value[0], value[1][:300]


def _candidate_ending(code: int | None, detail: str, limits: Limits, output: str) -> tuple[str, str]:
    """(status, detail) for a candidate that ended during a call. bubblewrap reports a
    signal as 128 + its number; a bare child as a negative code."""
    signum = -code if code is not None and code < 0 else (code - 128 if code is not None and code > 128 else None)
    if signum == signal.SIGXCPU:
        return "timeout", f"used more than {limits.cpu_s} s of CPU time"
    if signum == signal.SIGXFSZ:
        return "failed", f"wrote a file larger than {limits.file_bytes} bytes"
    if signum is not None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        verb = "killed" if signum == signal.SIGKILL else "crashed"
        return "failed", f"{verb} ({name}) before the tests finished"
    if "MemoryError" in output:
        return "failed", "ran out of memory (address-space limit)"
    if code is None:
        return "failed", detail
    return "failed", f"exited (code {code}) before the tests finished"


def _ending(code: int | None) -> str:
    return "still running" if code is None else f"exit code {code}"


def _environment(marker: str) -> dict[str, str]:
    # Nothing from the scorer's environment: no API keys, no proxies, no PYTHONPATH.
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": WORK_DIR,
        "TMPDIR": WORK_DIR,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        # One thread for numerical libraries: their pools would meet the process limit.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        MARKER_ENV: marker,
    }


def _feed(proc: subprocess.Popen, payload: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(payload)
    except (OSError, ValueError):
        pass  # the child died early: its missing verdict says so
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _end(proc: subprocess.Popen, *, namespaced: bool) -> None:
    """Kill what the process started and wait until it is gone.

    With bubblewrap, the outer bwrap waits for the sandbox's PID 1 (its child); when that one
    is killed the kernel kills every process of the PID namespace and PID 1 is reaped only
    once they are all gone. So: kill the child, wait for bwrap; then the session's group."""
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
    for stream in (proc.stdout, proc.stdin):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


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
