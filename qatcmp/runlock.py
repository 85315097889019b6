"""One `qatcmp run` per run folder at a time.

Two runs on the same folder would both send every request and append every record twice.
The lock is an ``fcntl.flock`` on ``RUN/.lock``, held for the whole run. The operating
system drops it when the process ends in any way (``kill -9``, a crash, a reboot), so there
is no stale lock to guess about: a lock file left by a dead run is simply taken over. The
holder writes who it is (pid, host, start, command) into the same file, so a refused second
run can name it.

Why not the ``filelock`` package: it locks with the same ``flock`` call, but has no place for
the holder's identity (and a timeout, not an immediate refusal, is its model). The lock is
advisory, like every lock on POSIX: it keeps qatcmp runs apart, not other programs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType

from qatcmp.errors import DataError, QatcmpError
from qatcmp.records import utcnow

LOCK_NAME = ".lock"
# Run folders do not belong on the kernel's virtual file systems.
VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")


class RunFolderBusy(QatcmpError):
    """Another qatcmp run holds the folder."""


class RunLock:
    """``with RunLock(folder, command):`` - the folder is created if needed; when the run
    made the folder and left nothing in it but the lock, the folder is removed again."""

    def __init__(self, folder: Path, command: list[str]):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command
        self._fd: int | None = None
        self._created = False  # the folder
        self._created_file = False  # the lock file

    def __enter__(self) -> RunLock:
        check_out_folder(self.folder)
        self._created = not self.folder.exists()
        self._created_file = not self.path.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DataError(f"--out {self.folder}: cannot write there ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderBusy(f"{self.folder} is in use by another qatcmp run ({holder}); "
                                "wait for it to end, or stop it first") from None
        self._fd = fd
        try:
            self._write_holder()
        except OSError as exc:
            self._release()
            raise DataError(f"--out {self.folder}: cannot write there ({exc.strerror})") from None
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._release()

    def _write_holder(self) -> None:
        assert self._fd is not None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": utcnow().isoformat(timespec="seconds"),
            "command": self.command,
        }
        data = (json.dumps(info) + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    def _release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # the holder is gone
            # A run refused before it wrote anything (say, --out is someone else's folder)
            # leaves nothing behind: neither its lock file nor a folder it made.
            if self._created_file and not (self.folder / "manifest.json").exists():
                self.path.unlink()
                if self._created and not any(self.folder.iterdir()):
                    self.folder.rmdir()
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None


def check_out_folder(folder: Path) -> None:
    """A run folder must be a folder (or not exist yet) on a real file system."""
    if folder.exists() and not folder.is_dir():
        raise DataError(f"--out {folder} is a file, not a folder; choose a folder for the run")
    real = os.path.realpath(folder)
    for root in VIRTUAL_ROOTS:
        if real == root or real.startswith(root + "/"):
            raise DataError(f"--out {folder}: {root} is a virtual file system, not a place for a run folder")


def _read_holder(fd: int) -> str:
    """'pid 123 on host, started 2026-…' from the lock file, as far as it can be read."""
    try:
        info = json.loads(os.pread(fd, 65536, 0) or b"{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "its details are not written yet"
    return f"pid {info.get('pid')} on {info.get('host', '?')}, started {info.get('started_at', '?')}"
