"""The command line: a thin layer that parses options and calls the stages.

Every user-facing problem is a QatcmpError, printed as one line with a non-zero exit code;
a traceback is shown only with QATCMP_DEBUG=1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import NoReturn

from qatcmp import __version__
from qatcmp.errors import QatcmpError, describe_os_error
from qatcmp.redact import mask

# Each module in qatcmp/commands/ defines register(subparsers), which adds its sub-command
# and sets `func(args) -> int` as the handler.
COMMAND_MODULES = [
    "run",
    "check",
    "demo",
    "score",
    "import_",
    "export",
    "stats",
    "plan",
    "view",

]


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line like every other error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"qatcmp: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="qatcmp",
        description="Is this quantized model variant really worse than that one, or is it noise? "
        "Paired benchmark comparisons over OpenAI-compatible servers.",
    )
    parser.add_argument("--version", action="version", version=f"qatcmp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"qatcmp.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _terminate_like_ctrl_c()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # recorded in run manifests: how the run was made
    try:
        return int(args.func(args) or 0)
    except QatcmpError as exc:
        _debug_traceback()
        print(mask(f"qatcmp: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("qatcmp: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the machine, not qatcmp: a full disk, a read-only folder...
        _debug_traceback()
        print(f"qatcmp: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line, with a way to see more
        _debug_traceback()
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            mask(f"qatcmp: internal error: {type(exc).__name__}: {first} "
                 "(run with QATCMP_DEBUG=1 for the traceback, and please report it)"),
            file=sys.stderr,
        )
        return 70


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (kill, timeout, a closing terminal) unwinds like Ctrl-C, so files are closed
    and child servers (the demo's) are stopped instead of being orphaned."""

    def handler(signum: int, frame: object) -> None:
        # Delivered as SIGINT, so that a running asyncio loop cancels its tasks in order
        # (its own SIGINT handler) instead of being unwound from an arbitrary frame.
        signal.raise_signal(signal.SIGINT)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:
        pass  # not the main thread (embedded use): leave signals alone


def _debug_traceback() -> None:
    if os.environ.get("QATCMP_DEBUG"):
        import traceback

        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
