"""Progress of a run per model x benchmark: done/total, ETA, tokens/s, errors; and, in an
adaptive run, every pair's state after the latest block (decision, questions, difference,
anytime interval, e-value, anytime p).

A live table on a terminal (rich); plain lines when the output is a file or a pipe (there the
adaptive run prints one line per block with every pair's state, see qatcmp.adaptive).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from qatcmp.redact import mask

if TYPE_CHECKING:
    from qatcmp.adaptive_state import AdaptiveState

# The report's columns (pair_cells), with headers short enough for a terminal.
_PAIR_COLUMNS = [("bench", "left"), ("pair", "left"), ("state", "left"), ("n", "right"), ("diff", "right"),
                 ("anytime interval", "left"), ("e-value", "right"), ("p (any)", "right"), ("more", "right")]
_DECISION_STYLE = {"different": "bold red", "equivalent": "bold green", "below-plan": "cyan", "undecided": "yellow"}


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


def pairs_table(state: AdaptiveState) -> Table:
    """Every pair's state after the latest block, with the report's cells (one formatting for
    report.md, report.html and this table). Names come from a config: Text, never markup."""
    # Loaded here, not at the top: only adaptive runs draw this, and they have loaded the
    # statistics the report package needs already.
    from qatcmp.report.render.adaptive import as_is, pair_cells

    s = state.settings
    title = (f"Anytime-valid decisions: {state.family}, α {s.alpha:g}, margin ±{100 * s.margin:g} points, "
             f"blocks of {s.block} (diff and interval in points, n = questions used)")
    table = Table(title=Text(title), title_justify="left", expand=False)
    for label, justify in _PAIR_COLUMNS:
        table.add_column(label, justify=justify, no_wrap=label != "pair")  # only the names may wrap
    for pair in state.pairs:
        cells = [Text(cell) for cell in pair_cells(pair, as_is)]
        cells[2].stylize(_DECISION_STYLE.get(pair.decision, ""))
        table.add_row(*cells)
    asking = [f"{name}: still asking {', '.join(bench.active)}"
              for name, bench in state.benchmarks.items() if not bench.finished and bench.active]
    if asking:
        table.caption = Text("; ".join(asking))
    return table


class _LiveDisplay(Progress):
    """rich's Progress with one more renderable under its bars: extending get_renderables is
    the way rich's author gives for this (Textualize/rich discussion #482). `below` is set from
    the run's thread and drawn by the refresh thread (one attribute swap, no lock needed)."""

    below: RenderableType | None = None

    def get_renderables(self):
        yield from super().get_renderables()
        if self.below is not None:
            yield self.below


class RunProgress:
    def __init__(self, *, live: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.console = Console(file=self.stream)
        self.live = self.console.is_terminal if live is None else live
        self._counters: dict[tuple[str, str], _Counter] = {}
        self._tasks: dict[tuple[str, str], TaskID] = {}
        self._progress: _LiveDisplay | None = None
        self.pairs: AdaptiveState | None = None  # an adaptive run's latest decisions
        if self.live:
            self._progress = _LiveDisplay(
                TextColumn("{task.description:<28}", markup=False),  # names from a config: not markup
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

    def show_pairs(self, state: AdaptiveState) -> None:
        """An adaptive run's decisions after a block: a table under the bars, and the bars of
        variants no longer asked on a benchmark say so. Plain output has its per-block lines."""
        self.pairs = state
        if self._progress is None:
            return
        for (model, benchmark), task in self._tasks.items():
            bench = state.benchmarks.get(benchmark)
            if bench is None or model not in state.models:
                continue
            if bench.finished:
                self._progress.update(task, description=f"{model} · {benchmark} (finished)")
            elif model not in bench.active:
                self._progress.update(task, description=f"{model} · {benchmark} (decided: not asked further)")
        self._progress.below = pairs_table(state) if state.pairs else Text(
            f"Anytime-valid decisions: none yet (the first look is after {state.settings.block} questions)")

    def log(self, message: str) -> None:
        message = mask(message)
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)
