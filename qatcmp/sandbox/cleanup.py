"""Leaving nothing behind where there is no PID or mount namespace to do it for us (macOS,
or an explicit run without isolation). Under bubblewrap the writable folder is a tmpfs that
exists only in the sandbox's mount namespace, and the PID namespace takes every process.
"""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

MARKER_ENV = "QATCMP_SANDBOX"


def remove_tree(root: Path) -> None:
    """Remove a folder the sandboxed code filled: any depth (no recursion: nested folders
    are moved up to the top one by one, so two file descriptors suffice), folders it made
    unreadable (chmod 000), any names, symlinks never followed. Errors are ignored."""
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    counter = 0
    try:
        while True:
            names = _names(top)
            if not names:
                break
            for name in names:
                if not _is_dir(top, name):
                    _ignore(os.unlink, name, dir_fd=top)
                    continue
                _ignore(os.chmod, name, 0o700, dir_fd=top)
                try:
                    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
                except OSError:
                    continue
                try:
                    for child in _names(sub):
                        if _is_dir(sub, child):
                            counter += 1
                            _ignore(os.rename, child, f".qatcmp-up-{counter}", src_dir_fd=sub, dst_dir_fd=top)
                        else:
                            _ignore(os.unlink, child, dir_fd=sub)
                finally:
                    os.close(sub)
                _ignore(os.rmdir, name, dir_fd=top)
            if names == _names(top):
                break  # nothing could be removed (not ours to remove): give up, do not spin
    finally:
        os.close(top)
    _ignore(os.rmdir, root)


def _names(fd: int) -> list[str]:
    try:
        return sorted(os.listdir(fd))
    except OSError:
        return []


def _is_dir(fd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _ignore(function, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
    try:
        function(*args, **kwargs)
    except OSError:
        pass


def kill_marked_processes(marker: str) -> int:
    """Kill any process still carrying a sample's marker in its environment (Linux /proc):
    a daemon that left the session. Returns how many."""
    killed = 0
    for pid in marked_processes(f"{MARKER_ENV}={marker}".encode()):
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
