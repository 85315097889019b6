"""Which request goes next. A separate, replaceable piece of the runner.

The runner asks a scheduler, per server, for the next *batch*: requests for one model
variant that may run concurrently. It reports every finished request back, so a scheduler can
change its mind. The runner's engine is `qatcmp.replicas` (pull a request per free slot, over
every replica of a variant; gated in blocks for adaptive runs); ``ModelByModelScheduler`` is
the plain variant-by-variant order, kept as the reference `bench/bench_schedule.py` compares
against.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from qatcmp.records import TranscriptRecord


@dataclass(frozen=True)
class WorkUnit:
    """One request to make: a model's answer to one sample of one question."""

    model: str
    server: str
    benchmark: str
    item_id: str
    sample: int

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.model, self.benchmark, self.item_id, self.sample)


class Scheduler(Protocol):
    def servers(self) -> list[str]: ...

    def next_batch(self, server: str) -> list[WorkUnit] | None:
        """The next requests for this server, all for one model; None when done."""

    def record(self, unit: WorkUnit, record: TranscriptRecord) -> None:
        """A request finished (successfully or not)."""


class ModelByModelScheduler:
    """All pending work of one variant, then the next: a server that holds one model at a
    time (mlx-lm) or evicts under memory pressure (oMLX) then swaps models once per variant,
    not once per question. Within a variant, the order is the run's question order, with the
    samples of a question next to each other (they share a prompt: prefix caches hit)."""

    def __init__(self, units: Iterable[WorkUnit], model_order: list[str]):
        rank = {name: i for i, name in enumerate(model_order)}
        self._queues: dict[str, OrderedDict[str, list[WorkUnit]]] = {}
        for unit in units:
            per_model = self._queues.setdefault(unit.server, OrderedDict())
            per_model.setdefault(unit.model, []).append(unit)
        for server, per_model in self._queues.items():
            ordered = sorted(per_model.items(), key=lambda kv: rank.get(kv[0], len(rank)))
            self._queues[server] = OrderedDict(ordered)

    def servers(self) -> list[str]:
        return list(self._queues)

    def next_batch(self, server: str) -> list[WorkUnit] | None:
        per_model = self._queues.get(server)
        if not per_model:
            return None
        _, batch = per_model.popitem(last=False)
        return batch

    def record(self, unit: WorkUnit, record: TranscriptRecord) -> None:
        pass  # a fixed plan: nothing to adapt


@dataclass(frozen=True)
class Step:
    """One block of an adaptive run: requests that must all be answered before the next
    step is planned, and the order in which the variants take their turn."""

    units: list[WorkUnit]
    model_order: list[str]
