"""Progress of a run per model x benchmark: done/total, ETA, tokens/s, errors.

A live table on a terminal (rich); plain lines when the output is a file or a pipe.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from qatcmp.redact import mask


@dataclass
class _Counter:
    total: int
    done: int = 0
    errors: int = 0
    truncated: int = 0
    tokens: int = 0
    started: float | None = None  # when this model x benchmark began answering
    last_print: float = 0.0

    def tokens_per_s(self) -> float:
        if self.started is None:
            return 0.0
        elapsed = time.monotonic() - self.started
        return self.tokens / elapsed if elapsed > 0 else 0.0


class RunProgress:
    def __init__(self, *, live: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.console = Console(file=self.stream)
        self.live = self.console.is_terminal if live is None else live
        self._counters: dict[tuple[str, str], _Counter] = {}
        self._tasks: dict[tuple[str, str], TaskID] = {}
        self._progress: Progress | None = None
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[tps]:>7.1f} tok/s"),
                TextColumn("[red]{task.fields[errors]} err"),
                TextColumn("[yellow]{task.fields[truncated]} cut"),
                console=self.console,
            )

    def __enter__(self) -> RunProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add(self, model: str, benchmark: str, total: int, done: int) -> None:
        key = (model, benchmark)
        self._counters[key] = _Counter(total=total, done=done)
        if self._progress is not None:
            self._tasks[key] = self._progress.add_task(
                f"{model} · {benchmark}", total=total, completed=done, tps=0.0, errors=0, truncated=0
            )

    def advance(self, model: str, benchmark: str, *, error: bool, truncated: bool, tokens: int, latency_s: float = 0.0) -> None:
        counter = self._counters[(model, benchmark)]
        if counter.started is None:
            # Variants sharing a server run one after another: count each one's rate from
            # its own first request, not from the start of the run.
            counter.started = time.monotonic() - latency_s
        counter.done += 1
        counter.errors += int(error)
        counter.truncated += int(truncated)
        counter.tokens += tokens
        if self._progress is not None:
            self._progress.update(
                self._tasks[(model, benchmark)],
                completed=counter.done,
                tps=counter.tokens_per_s(),
                errors=counter.errors,
                truncated=counter.truncated,
            )
            return
        now = time.monotonic()
        if counter.done == counter.total or now - counter.last_print >= 10.0:
            counter.last_print = now
            self.log(
                f"{model} · {benchmark}: {counter.done}/{counter.total} done, "
                f"{counter.errors} errors, {counter.truncated} truncated, "
                f"{counter.tokens_per_s():.1f} tok/s"
            )

    def log(self, message: str) -> None:
        message = mask(message)
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)
