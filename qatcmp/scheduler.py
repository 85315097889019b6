"""Which request goes next. A separate, replaceable piece of the runner.

The runner asks a scheduler, per server, for the next *batch*: requests for one model
variant that may run concurrently. It reports every finished request back, so a scheduler can
change its mind (an adaptive scheduler that interleaves variants in blocks and stops once the
comparison is decided will plug in here).
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


class BlockScheduler:
    """Work in steps from a provider (`qatcmp.adaptive.AdaptiveController.next_step`): the
    units of one step, one batch per model and server in the step's model order; when every
    unit of the step is recorded, the provider sees those records and plans the next step
    (or ends the run with None). A server that has finished its part of a step gets an empty
    batch (wait) until the other servers have finished theirs."""

    def __init__(self, servers: list[str], next_step):
        self._servers = list(servers)
        self._next_step = next_step
        self._queues: dict[str, list[list[WorkUnit]]] = {}
        self._outstanding: set[tuple[str, str, str, int]] = set()
        self._finished: list[TranscriptRecord] = []
        self._started = False
        self._done = False

    def servers(self) -> list[str]:
        return list(self._servers)

    def _plan(self) -> None:
        # A provider that returns an empty step would never be asked again: treat as done.
        step = self._next_step(self._finished)
        self._finished = []
        self._started = True
        if step is None or not step.units:
            self._done = True
            self._queues = {}
            return
        rank = {name: i for i, name in enumerate(step.model_order)}
        per_server: dict[str, OrderedDict[str, list[WorkUnit]]] = {}
        for unit in step.units:
            per_server.setdefault(unit.server, OrderedDict()).setdefault(unit.model, []).append(unit)
            self._outstanding.add(unit.key)
        self._queues = {
            server: [batch for _, batch in sorted(per_model.items(), key=lambda kv: rank.get(kv[0], len(rank)))]
            for server, per_model in per_server.items()
        }

    def next_batch(self, server: str) -> list[WorkUnit] | None:
        if not self._started:
            self._plan()
        while not self._done:
            queue = self._queues.get(server)
            if queue:
                return queue.pop(0)
            if self._outstanding or any(self._queues.values()):
                return []  # other servers (or this one's requests in flight) still on this step
            self._plan()
        return None

    def record(self, unit: WorkUnit, record: TranscriptRecord) -> None:
        if unit.key in self._outstanding:
            self._outstanding.discard(unit.key)
            self._finished.append(record)
