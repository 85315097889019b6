"""The two programs a HumanEval sample runs as, each in its own sandboxed process.

    python -I -S -B child.py judge REQUEST_W RESPONSE_R VERDICT_W      (job on stdin)
    python -I -S -B child.py candidate REQUEST_R RESPONSE_W            (job on stdin)

The *judge* runs the dataset's code: the prompt (its helpers, such as `poly`, and a stub of
the entry point) and the test, then `check(proxy)`. `proxy(*args)` sends the arguments to the
*candidate*, which holds the model's code, and waits for the result. The verdict is written
on a pipe only the judge holds. Nothing the model's code does - patching builtins or
modules, walking frames, redefining helpers, returning objects with a lying `__eq__` - can
reach the judge's memory: only plain data crosses (codec.py), and the judge decodes it with
a decoder that can build nothing else. The processes do not share a PID, mount or IPC
namespace when the sandbox has them, so the candidate cannot signal, trace or read the judge.

Messages are framed: 4 bytes of length, then codec bytes. Standard library only.
"""

from __future__ import annotations

import os
import resource
import select
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import codec  # noqa: E402  (the read-only copy next to this file)

del sys.path[0]

_FRAME = struct.Struct(">I")
MAX_MESSAGE = 8 << 20  # a result larger than this is refused
MAX_DETAIL = 300


class Ended(Exception):
    """The other side closed its pipe (it exited or crashed)."""


class TimedOut(Exception):
    pass


class TooLarge(Exception):
    pass


# --------------------------------------------------------------------------- framing


def write_frame(fd: int, payload: bytes) -> None:
    data = _FRAME.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_frame(fd: int, deadline: float | None, max_bytes: int = MAX_MESSAGE) -> bytes:
    header = _read_exactly(fd, _FRAME.size, deadline)
    (length,) = _FRAME.unpack(header)
    if length > max_bytes:
        raise TooLarge(f"a message of {length} bytes (more than {max_bytes})")
    return _read_exactly(fd, length, deadline)


def _read_exactly(fd: int, count: int, deadline: float | None) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimedOut()
        chunk = os.read(fd, min(count - len(chunks), 1 << 20))
        if not chunk:
            raise Ended()
        chunks += chunk
    return bytes(chunks)


def read_stdin() -> dict:
    data = bytearray()
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        data += chunk
    job = codec.decode(bytes(data))
    if type(job) is not dict:
        raise SystemExit("the job is not a dict")
    return job


def set_limits(limits: dict) -> None:
    for name, value in limits.items():
        which = getattr(resource, name, None)
        if which is None:
            continue  # not on this OS
        # CPU: SIGXCPU at the soft limit, SIGKILL a second later if that is ignored.
        hard = value + 1 if name == "RLIMIT_CPU" else value
        try:
            resource.setrlimit(which, (value, hard))
        except (ValueError, OSError):
            pass  # macOS refuses some values (e.g. RLIMIT_AS); keep the others


def describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except BaseException:  # noqa: BLE001 - a __str__ that raises
        text = type(exc).__name__
    if isinstance(exc, AssertionError) and text == "AssertionError":
        text = "AssertionError (a test failed)"
    return text[:MAX_DETAIL]


# --------------------------------------------------------------------------- judge


class CandidateRaised(Exception):
    """The candidate's function raised: the test sees an exception, as in a one-process run."""


class Abort(BaseException):
    """The call could not be made or answered (crash, timeout, unsupported value): not
    something a test may catch, so it is a BaseException."""

    def __init__(self, status: str, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class Proxy:
    """What the test calls instead of the candidate function."""

    def __init__(self, request_fd: int, response_fd: int, call_s: float, deadline: float):
        self.request_fd, self.response_fd = request_fd, response_fd
        self.call_s, self.deadline = call_s, deadline
        self.calls = 0

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        try:
            request = codec.encode(("call", args, kwargs))
        except codec.CodecError as exc:
            raise Abort("error", f"the test passes {exc} to the function, which cannot cross to the sandbox") from None
        try:
            write_frame(self.request_fd, request)
        except OSError:
            raise Abort("gone", "the candidate process ended before a call") from None
        reply = self.receive(f"call {self.calls}")
        kind = reply[0]
        if kind == "ok" and len(reply) == 2:
            return reply[1]
        if kind == "raised" and len(reply) == 2 and type(reply[1]) is str:
            raise CandidateRaised(f"raised {reply[1][:MAX_DETAIL]}")
        if kind == "unsupported" and len(reply) == 2 and type(reply[1]) is str:
            raise Abort("failed", f"returned {reply[1][:MAX_DETAIL]}; only plain values (numbers, strings, "
                                  "bytes, None and lists, tuples, dicts, sets of them) are compared")
        raise Abort("failed", "the candidate process sent an answer that is not a result")

    def receive(self, what: str) -> tuple:
        now = time.monotonic()
        deadline = min(now + self.call_s, self.deadline)
        try:
            raw = read_frame(self.response_fd, deadline)
        except TimedOut:
            if deadline >= self.deadline:
                raise Abort("timeout", "the tests took longer than the time limit in total") from None
            raise Abort("timeout", f"{what} took longer than {self.call_s:g} s") from None
        except Ended:
            raise Abort("gone", f"the candidate process ended during {what}") from None
        except TooLarge as exc:
            raise Abort("failed", f"the candidate sent {exc}") from None
        try:
            reply = codec.decode(raw)
        except codec.CodecError as exc:
            raise Abort("failed", f"the candidate sent {exc}") from None
        if type(reply) is not tuple or not reply or type(reply[0]) is not str:
            raise Abort("failed", "the candidate process sent an answer that is not a result")
        return reply


def judge(request_fd: int, response_fd: int, verdict_fd: int) -> None:
    job = read_stdin()
    started = time.monotonic()
    set_limits(job["limits"])
    sys.path.extend(job["package_paths"])
    status, detail = _judge(job, request_fd, response_fd, started)
    try:
        write_frame(verdict_fd, codec.encode((status, detail[:MAX_DETAIL])))
    except OSError:
        pass
    os._exit(0)


def _judge(job: dict, request_fd: int, response_fd: int, started: float) -> tuple[str, str]:
    namespace: dict = {"__name__": "__qatcmp_judge__"}
    try:
        # The prompt defines the helpers the tests use (e.g. `poly`) and a docstring-only
        # stub of the entry point; the test defines check().
        exec(compile(job["prompt"], "prompt.py", "exec"), namespace)
        exec(compile(job["test"], "test.py", "exec"), namespace)
        check = namespace["check"]
    except BaseException as exc:  # noqa: BLE001 - the dataset's code is not ours either
        return "error", "the test code does not run: " + describe(exc)
    proxy = Proxy(request_fd, response_fd, job["call_s"], started + job["total_s"])
    # A test may name the entry point instead of `candidate` (HumanEval/33 compares
    # candidate(x) with sort_third(x)): in a one-process harness that name is the answer's
    # function, so here it is the proxy too.
    namespace[job["entry_point"]] = proxy
    try:
        hello = proxy.receive("loading the code")
        if hello[0] != "ready":
            if hello[0] == "load_failed" and len(hello) == 2 and type(hello[1]) is str:
                return "failed", hello[1][:MAX_DETAIL]
            return "failed", "the candidate process sent an answer that is not a result"
        check(proxy)
    except Abort as exc:
        return exc.status, exc.detail
    except CandidateRaised as exc:
        return "failed", str(exc)
    except BaseException as exc:  # noqa: BLE001 - a failed test, in any form
        return "failed", describe(exc)
    return "passed", ""


# --------------------------------------------------------------------------- candidate


def candidate(request_fd: int, response_fd: int) -> None:
    job = read_stdin()
    set_limits(job["limits"])
    sys.path.extend(job["package_paths"])
    sys.setrecursionlimit(job["recursion_limit"])
    write, encode, Unsupported = os.write, codec.encode, codec.Unsupported  # kept before the code runs
    send = _sender(write, response_fd)
    function = _load(job, send)
    if function is None:
        os._exit(0)
    while True:
        try:
            raw = read_frame(request_fd, None)
            message = codec.decode(raw)
            _, args, kwargs = message  # type: ignore[misc]
        except BaseException:  # noqa: BLE001 - the judge ended, or the code broke our pipe
            os._exit(0)
        try:
            result = function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from the function included
            send(encode(("raised", describe(exc))))
            continue
        try:
            payload = encode(("ok", result), convert=_to_plain)
        except Unsupported as exc:
            payload = encode(("unsupported", str(exc)))
        except BaseException as exc:  # noqa: BLE001 - e.g. a numpy conversion that raises
            payload = encode(("unsupported", f"a value that cannot be converted ({describe(exc)})"))
        send(payload)


def _sender(write, fd: int):  # type: ignore[no-untyped-def]
    pack = _FRAME.pack

    def send(payload: bytes) -> None:
        data = pack(len(payload)) + payload
        try:
            while data:
                data = data[write(fd, data):]
        except OSError:
            os._exit(0)

    return send


def _load(job: dict, send):  # type: ignore[no-untyped-def]
    namespace: dict = {"__name__": "__qatcmp_solution__"}
    try:
        exec(compile(job["program"], "solution.py", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - any failure of the model's code is a verdict
        send(codec.encode(("load_failed", "the code does not run: " + describe(exc))))
        return None
    function = namespace.get(job["entry_point"])
    if not callable(function):
        send(codec.encode(("load_failed", f"no function {job['entry_point']} defined")))
        return None
    send(codec.encode(("ready",)))
    return function


def _to_plain(value: object) -> object:
    """numpy scalars and arrays as Python values (the judge still decodes plain data only)."""
    module = getattr(type(value), "__module__", "") or ""
    if module == "numpy" or module.startswith("numpy."):
        converter = getattr(value, "tolist", None)
        if callable(converter):
            converted = converter()
            if type(converted) is not type(value):
                return converted
    return value  # the encoder refuses it, naming its type


def close_other_fds(keep: list[int]) -> None:
    """Only stdio and the pipes of the role stay open (nothing the sandbox tool may leave)."""
    low = 3
    for fd in sorted(set(keep)):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 16)


def exit_on_cpu_limit() -> None:
    """As its PID namespace's first process the interpreter would ignore SIGXCPU by default:
    exit with the code a shell gives a SIGXCPU death, so the scorer can name it."""
    import signal

    signal.signal(signal.SIGXCPU, lambda *_: os._exit(128 + signal.SIGXCPU))


if __name__ == "__main__":
    role, fds = sys.argv[1], [int(a) for a in sys.argv[2:]]
    close_other_fds(fds)
    exit_on_cpu_limit()
    if role == "judge":
        judge(*fds)
    elif role == "candidate":
        candidate(*fds)
    else:
        raise SystemExit(f"unknown role {role!r}")
