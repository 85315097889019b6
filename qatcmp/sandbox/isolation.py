"""Which OS isolation wraps each sandboxed process: bubblewrap (Linux), sandbox-exec (macOS), or
none - detected once by trying it, never assumed.

bubblewrap is the sandbox under Flatpak, packaged by every Linux distribution, and works both
for root and for an ordinary user (through unprivileged user namespaces); it is used here
rather than namespace code of our own. Each process gets: its own user, PID, network, mount,
IPC and UTS namespaces (a fork bomb meets RLIMIT_NPROC, which Linux counts per user *per user
namespace*, so one sample cannot use up another's processes); no capabilities and no nested
user namespaces; a read-only view of /usr and of the interpreter's own folders only (no home
folder, no /etc, no project folder); a private, size-limited tmpfs as its only writable
folder; no environment but what we set; and it dies with the scorer.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

BWRAP_ENV = "QATCMP_BWRAP"  # path of bwrap to use; a missing path means "not installed" (tests)
SANDBOX_EXEC = "/usr/bin/sandbox-exec"
CHILD_DIR = Path(__file__).resolve().parent
CHILD_FILES = ("child.py", "codec.py")
INSIDE_DIR = "/qatcmp"  # where the two files appear inside a bubblewrap sandbox
WORK_DIR = "/tmp"  # the private tmpfs inside a bubblewrap sandbox
SANDBOX_UID = 1000  # the user the code runs as inside its user namespace (not root there)
_BWRAP_NAMES = [
    "bubblewrap", "user-namespace", "pid-namespace", "net-namespace", "mount-namespace",
    "ipc-namespace", "uts-namespace", "read-only-system", "no-home", "private-tmpfs",
    "cap-drop-all", "no-new-privileges", "no-nested-userns", "clear-env", "die-with-parent", "new-session",
]


@dataclass(frozen=True)
class Protections:
    """The isolation in use and, when there is none, what is missing and how to get it."""

    isolation: str = "none"  # bubblewrap | sandbox-exec | none
    bwrap: str | None = None
    missing: str = ""
    python: str = ""  # the interpreter the sandboxed processes run
    as_nobody: bool = False  # bubblewrap started as `nobody` (the scorer runs as root)

    def names(self) -> list[str]:
        names = ["judge-process", "plain-data-codec", "rlimits", "own-session", "clear-env"]
        if self.isolation == "bubblewrap":
            extra = ["as-nobody"] if self.as_nobody else []
            return names + [n for n in _BWRAP_NAMES if n not in names] + extra
        if self.isolation == "sandbox-exec":
            return names + ["sandbox-exec", "no-network", "writes-in-workdir-only", "reads-system-only"]
        return names + ["fresh-workdir"]

    def describe(self) -> str:
        text = f"{self.isolation}: " + ", ".join(self.names())
        if self.python:
            text += f" (python {self.python})"
        if self.isolation == "none":
            text += " (NO isolation: the code can read and write your files and use the network)"
        return text

    @property
    def isolated(self) -> bool:
        return self.isolation != "none"


# --------------------------------------------------------------------------- detection


@lru_cache(maxsize=1)
def detect_protections() -> Protections:
    """The isolation that works here: the real sandbox command is tried on `pass`."""
    if sys.platform.startswith("linux"):
        return _detect_bwrap()
    if sys.platform == "darwin":
        return _detect_sandbox_exec()
    return Protections(missing=f"no sandbox is known for {sys.platform}")


def _detect_bwrap() -> Protections:
    bwrap = os.environ.get(BWRAP_ENV) or shutil.which("bwrap") or "/usr/bin/bwrap"
    if not os.access(bwrap, os.X_OK):
        return Protections(missing=f"bubblewrap is not installed ({bwrap} not found): "
                                   "install it with `sudo apt-get install bubblewrap`")
    if sandbox_python() is None:
        return Protections(missing=f"the sandbox user cannot reach a Python interpreter ({python_executable()} is in "
                                   "a private folder and there is no /usr/bin/python3): install python3")
    plan = bwrap_plan(bwrap, 1 << 20)
    error = _try([*plan.command, sandbox_python(), "-I", "-S", "-c", "pass"], plan)  # type: ignore[list-item]
    if error is None:
        return Protections("bubblewrap", bwrap=bwrap, python=sandbox_python() or "", as_nobody=sandbox_user() is not None)
    hint = ("allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
            "user.max_user_namespaces > 0; on Ubuntu 24.04+ an AppArmor profile for bwrap)")
    if sandbox_user() is not None:
        hint = "as root, bubblewrap runs as nobody, who needs them too: " + hint
    return Protections(missing=f"bubblewrap cannot create its namespaces here ({error}): {hint}")


def _detect_sandbox_exec() -> Protections:
    if not os.path.exists(SANDBOX_EXEC):
        return Protections(missing=f"{SANDBOX_EXEC} is missing")
    workdir = Path(tempfile.mkdtemp(prefix="qatcmp-probe-"))
    try:
        error = _try([SANDBOX_EXEC, "-p", macos_profile(workdir), python_executable(), "-I", "-S", "-c", "pass"],
                     None, cwd=workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if error is None:
        return Protections("sandbox-exec", python=python_executable())
    return Protections(missing=f"sandbox-exec refused the sandbox profile ({error})")


def _try(cmd: list[str], plan: "BwrapPlan | None", cwd: Path | None = None) -> str | None:
    """None if the command works, else its last line of complaint."""
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=20, cwd=cwd or "/", env={"PATH": "/usr/bin:/bin"},
                              stdin=subprocess.DEVNULL, **(plan.popen_options() if plan else {}))
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        if plan is not None:
            plan.close()
    if done.returncode == 0:
        return None
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:200] if lines else f"exit code {done.returncode}"


# --------------------------------------------------------------------------- commands


@lru_cache(maxsize=1)
def python_executable() -> str:
    """The real interpreter (a venv's python is a symlink into the base installation)."""
    return os.path.realpath(sys.executable)


@lru_cache(maxsize=1)
def sandbox_user() -> tuple[int, int] | None:
    """Run as root, bubblewrap is started as `nobody`: Linux never applies RLIMIT_NPROC to
    real root (even mapped into a user namespace), so a fork bomb would take the machine's
    PIDs. As `nobody` in its own user namespace, each sandbox has its own process count."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _open_to_others(path: str) -> bool:
    """Every folder on the way can be entered by any user (what `nobody` needs)."""
    current = "/"
    for part in Path(path).parts[1:]:
        current = os.path.join(current, part)
        try:
            if os.path.isdir(current) and not os.stat(current).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


@lru_cache(maxsize=1)
def sandbox_python() -> str | None:
    """The interpreter the sandboxed processes run: the scorer's own, unless it lives where
    the sandbox user cannot enter (root's pyenv under /root, mode 0700): then the system's."""
    own = python_executable()
    if sandbox_user() is None or _open_to_others(own):
        return own
    system = os.path.realpath("/usr/bin/python3")
    return system if os.path.isfile(system) and _open_to_others(system) else None


@lru_cache(maxsize=1)
def package_paths() -> tuple[str, ...]:
    """site-packages folders on the path: code run without `site` may import numpy. Only
    for the scorer's own interpreter, and only where the sandbox user can reach them."""
    import site

    if sandbox_python() != python_executable():
        return ()
    found = [*site.getsitepackages(), site.getusersitepackages(), sysconfig.get_paths()["purelib"]]
    usable = (p for p in found if os.path.isdir(p) and p in sys.path)
    return tuple(dict.fromkeys(p for p in usable if sandbox_user() is None or _open_to_others(p)))


@lru_cache(maxsize=1)
def _readonly_folders() -> tuple[str, ...]:
    """What the interpreter needs outside /usr: its prefix (e.g. ~/.pyenv/versions/X) and
    the site-packages folders, each bound alone - never the home folder around them."""
    python = sandbox_python()
    if python is None:
        return ()
    prefixes = [sys.base_prefix, os.path.dirname(python)] if python == python_executable() else [os.path.dirname(python)]
    wanted = {os.path.realpath(p) for p in (*prefixes, *package_paths())}
    wanted = {p for p in wanted if os.path.isdir(p) and not (p == "/usr" or p.startswith("/usr/"))}
    ordered = sorted(wanted)
    # A folder inside another bound one comes with it.
    return tuple(p for p in ordered if not any(p != q and p.startswith(q + "/") for q in ordered))


@lru_cache(maxsize=1)
def child_sources() -> dict[str, bytes]:
    return {name: (CHILD_DIR / name).read_bytes() for name in CHILD_FILES}


@dataclass
class BwrapPlan:
    """A bubblewrap command and the pipes that carry the two child files into it (so the
    project folder is never bound, and a folder `nobody` cannot enter does not matter)."""

    command: list[str]
    pass_fds: list[int]

    def popen_options(self) -> dict:
        options: dict = {"pass_fds": tuple(self.pass_fds)}
        user = sandbox_user()
        if user is not None:
            options.update(user=user[0], group=user[1], extra_groups=[])
        return options

    def close(self) -> None:
        for fd in self.pass_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.pass_fds = []


def bwrap_plan(bwrap: str, tmpfs_bytes: int) -> BwrapPlan:
    """bubblewrap's options for one sandboxed process (the command follows)."""
    cmd = [
        bwrap,
        "--unshare-all", "--unshare-user", "--disable-userns",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        # The command is the namespace's PID 1: when it ends, the kernel kills the rest of
        # the namespace before bwrap returns, so "bwrap ended" means "all of it ended".
        "--as-pid-1",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--clearenv",
        "--ro-bind", "/usr", "/usr",
    ]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    if os.path.isfile("/etc/ld.so.cache"):  # the dynamic loader's index: no user data
        cmd += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for folder in _readonly_folders():
        cmd += ["--ro-bind", folder, folder]
    fds = []
    for name, data in child_sources().items():
        read_end, write_end = os.pipe()
        os.write(write_end, data)  # a few KB: fits in the pipe
        os.close(write_end)
        fds.append(read_end)
        cmd += ["--ro-bind-data", str(read_end), f"{INSIDE_DIR}/{name}"]
    cmd += [
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(tmpfs_bytes), "--tmpfs", WORK_DIR,
        # The sandbox's root is a tmpfs without a size limit: read-only once it is built,
        # like /dev, so the private tmpfs is the only place to write.
        "--remount-ro", "/dev", "--remount-ro", "/",
        "--chdir", WORK_DIR,
    ]
    return BwrapPlan(cmd, fds)


def macos_profile(workdir: Path) -> str:
    """Deny by default; read the interpreter and system libraries, write in workdir only,
    no network, no looking at or signalling other processes. UNTESTED: written from the SBPL
    documentation on Linux; detection tries it once and falls back to refusing."""
    def quoted(path: str) -> str:
        return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'

    reads = {"/usr/lib", "/usr/share", "/System", "/Library/Apple", "/private/var/db/dyld",
             "/Library/Frameworks/Python.framework", os.path.realpath(sys.base_prefix), str(CHILD_DIR),
             *(os.path.realpath(p) for p in package_paths())}
    read_rules = " ".join(f"(subpath {quoted(p)})" for p in sorted(reads))
    work = quoted(os.path.realpath(workdir))
    return "\n".join([
        "(version 1)",
        "(deny default)",
        "(allow process-fork)",
        # A framework build's bin/python3.x re-executes Python.app inside its prefix.
        f"(allow process-exec (literal {quoted(python_executable())}) (subpath {quoted(os.path.realpath(sys.base_prefix))}))",
        "(allow signal (target same-sandbox))",
        "(allow process-info* (target same-sandbox))",
        "(allow sysctl-read)",
        "(allow file-read-metadata)",  # stat() on the way to allowed files; not their contents
        f"(allow file-read* {read_rules} (literal \"/dev/null\") (literal \"/dev/urandom\") (literal \"/dev/random\"))",
        f"(allow file-read* file-write* (subpath {work}))",
        "(allow file-write-data (literal \"/dev/null\"))",
        "(deny network*)",
    ])
