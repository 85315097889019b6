"""Running model-written code: a trusted judge process and a sandboxed candidate process per
HumanEval sample, plain data between them, each under bubblewrap (Linux) or sandbox-exec
(macOS), and a refusal when there is no isolation unless running without it was asked for.

Standard library only (an ordinary user's system Python can import it, and the children
copy two of its files)."""

from qatcmp.sandbox.cleanup import MARKER_ENV, kill_marked_processes, marked_processes, remove_tree
from qatcmp.sandbox.isolation import BWRAP_ENV, Protections, detect_protections
from qatcmp.sandbox.runner import IsolationUnavailable, Job, Limits, Outcome, Sandbox

__all__ = [
    "BWRAP_ENV", "MARKER_ENV", "IsolationUnavailable", "Job", "Limits", "Outcome", "Protections", "Sandbox",
    "detect_protections", "kill_marked_processes", "marked_processes", "remove_tree",
]
