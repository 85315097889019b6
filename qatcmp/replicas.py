"""Pull-based scheduling over several servers, some of which serve the same variant (replicas):
the one scheduling engine of the runner, for fixed runs (``ReplicaScheduler``) and, with block
gating, for adaptive runs (``BlockScheduler``).

Each server's loop asks for work whenever it has a free slot (``next_batch`` returns a few
requests, not a whole variant), so a slow replica simply asks less often, and a replica that
goes down hands its unanswered requests back (``server_down``) for the others: nothing is
asked twice (a request is out at one server at a time) and nothing is lost.

Placement, decided at each pull:
- affinity: a server keeps the variant it has loaded while that variant has work, then the
  weights it has loaded: variants with the same model id (thinking on and off, other sampling)
  are one model to the server, so moving between them is no switch (``weights``);
- balance by expected work: a server that needs a new variant takes the one with the most
  expected answer tokens left per server already on it (not the most questions: thinking
  answers range from hundreds to 32k tokens), so servers spread over variants before doubling
  up on one;
- tail: within a variant, the question with the longest expected answer starts first
  (longest-first), so the end of a variant is short answers, not one 32k-token straggler
  holding a nearly empty server. A question's expected length is what the variants already
  run answered to it (answer lengths of one question are strongly correlated across
  quantizations, and a resumed run knows them from its transcripts), at least what a request
  for it still in flight elsewhere has already produced (a long-running request is a long
  answer), else the benchmark's typical length;
- a server that holds several models at once (``resident``) starts the next variant while the
  previous one's last answers finish; a one-model server waits for them (switching under
  in-flight requests would make it evict and reload), unless the next variant shares its
  weights;
- with more variants than one-model servers, a server leaves its variant early for one nobody
  has started when that variant's longest answer would otherwise end the run alone; and a
  server whose request in flight will end the run long after everything else takes nothing
  new until it no longer would, so that request runs faster while the other servers take the
  rest (``qatcmp.replica_tail``; fixed runs only: an adaptive run's blocks end at a barrier
  anyway, and measured there it made blocks slower).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from qatcmp.records import TranscriptRecord
from qatcmp.replica_tail import EarlyLeaving
from qatcmp.scheduler import Step, WorkUnit

# Requests handed out per pull: one per free slot, so work stays in the shared pool (for the
# replicas) as long as possible. The samples of a question are next to each other in the pool,
# so a server mostly takes them one after another (they share a prompt: prefix caches hit).
DEFAULT_CHUNK = 1
# A server that would leave its variant for one another server is already running joins only
# if at least this many of its requests are still unstarted: joining costs a model switch.
DEFAULT_MIN_JOIN = 4
# Answer tokens expected before anything of a benchmark has come back (a thinking answer of a
# few thousand tokens). The same for every benchmark: no guess of ours orders them; the mean
# of what the run sees for each benchmark replaces it at its first answer.
DEFAULT_TYPICAL = 2500.0

Key = tuple[str, str, str, int]


@dataclass
class _ServerState:
    eligible: list[str]  # variants this server may serve, in the run's variant order
    current: str | None = None  # the variant it last started
    out: dict[Key, tuple[WorkUnit, float]] = field(default_factory=dict)  # handed out, not recorded: (unit, when)
    down: bool = False
    leaving_for: str | None = None  # leaving its variant early for this one (``qatcmp.replica_tail``)


class LengthBook:
    """What the run knows about answer lengths: per question, the lengths its variants'
    answers had; per benchmark, their mean; and a decode speed per request (tokens per second
    of latency), to turn a request still in flight into a lower bound on its answer's length."""

    def __init__(self) -> None:
        self.by_question: dict[tuple[str, str], list[int]] = {}
        self._sum: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._tokens_total = 0.0
        self._latency_total = 0.0

    def learn(self, record: TranscriptRecord) -> None:
        tokens = record.usage.completion_tokens if record.ok and record.usage is not None else None
        if not isinstance(tokens, int) or tokens <= 0:
            return
        self.by_question.setdefault((record.benchmark, record.item_id), []).append(tokens)
        self._sum[record.benchmark] = self._sum.get(record.benchmark, 0.0) + tokens
        self._count[record.benchmark] = self._count.get(record.benchmark, 0) + 1
        if record.latency_s and record.latency_s > 0:
            self._tokens_total += tokens
            self._latency_total += record.latency_s

    def typical(self, benchmark: str) -> float:
        if self._count.get(benchmark):
            return self._sum[benchmark] / self._count[benchmark]
        return DEFAULT_TYPICAL

    def produced(self, elapsed_s: float) -> float:
        """Tokens a request running for ``elapsed_s`` has produced at least (0 before any
        answer with a latency came back)."""
        if self._latency_total <= 0:
            return 0.0
        return elapsed_s * self._tokens_total / self._latency_total

    def expected(self, benchmark: str, item_id: str, running_for: float | None = None) -> float:
        seen = self.by_question.get((benchmark, item_id))
        guess = sum(seen) / len(seen) if seen else self.typical(benchmark)
        if running_for is not None:
            guess = max(guess, self.produced(running_for))
        return guess


class ReplicaScheduler(EarlyLeaving):
    """The runner's scheduler: see the module docstring.

    ``units`` carry their variant's first server; ``replicas`` maps a variant to every server
    that may answer it (default: the unit's own server); ``weights`` maps a variant to what a
    server loads for it, its model id (default: the variant's own name, every variant its own
    weights); ``resident`` how many models each server holds at once (default 1); ``lengths``
    what is known of answer lengths (the runner's, from the transcripts on disk), or
    ``history``, records to learn them from. A handed-out unit carries the server it was given
    to, so the transcript names the replica that answered. ``early_leave``: whether a one-model
    server may leave its variant early for one nobody has started, and a server holding the
    request that ends the run may hold back (``qatcmp.replica_tail``).
    ``surplus_first``: whether one-model servers, too, share the surplus variants first (see
    ``_surplus``; an adaptive run's blocks do).
    ``clock`` is the time source (a simulation passes its own).
    """

    pulls = True  # the runner keeps slots full by asking again as each request finishes

    def __init__(
        self,
        units: Iterable[WorkUnit],
        model_order: list[str],
        *,
        replicas: Mapping[str, list[str]] | None = None,
        resident: Mapping[str, int] | None = None,
        weights: Mapping[str, str] | None = None,
        history: Iterable[TranscriptRecord] = (),
        lengths: LengthBook | None = None,
        chunk: int = DEFAULT_CHUNK,
        min_join: int = DEFAULT_MIN_JOIN,
        early_leave: bool = True,
        surplus_first: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._order = list(model_order)
        self._pool: dict[str, list[WorkUnit]] = {}  # variant -> unstarted units, next first
        self._replicas = {m: list(s) for m, s in (replicas or {}).items()}
        self._servers: dict[str, _ServerState] = {}
        self._resident = dict(resident or {})
        self._weights = dict(weights or {})
        self._chunk = max(1, chunk)
        self._min_join = max(0, min_join)
        self._clock = clock
        self._early_leave = early_leave
        self._surplus_first = surplus_first
        self._started: set[str] = set()  # variants handed out in this session
        self._first_pull: float | None = None
        self._tokens_done = 0.0  # answer tokens recorded in this session, for its throughput
        self._answers_done = 0
        self._next_leave_check = -math.inf
        self._next_hold_check = -math.inf
        self._holding: set[str] = set()  # servers that take nothing new (``qatcmp.replica_tail``)
        self.lengths = lengths if lengths is not None else LengthBook()
        for record in history:
            self.lengths.learn(record)
        self.add(units, model_order)

    def add(self, units: Iterable[WorkUnit], model_order: list[str] | None = None) -> None:
        """More work (an adaptive run's next block), and the variant order for ties."""
        if model_order is not None:
            self._order = list(dict.fromkeys([*model_order, *self._order]))
        fresh: dict[str, list[WorkUnit]] = {}
        for unit in units:
            fresh.setdefault(unit.model, []).append(unit)
            self._replicas.setdefault(unit.model, [unit.server])
        for model in fresh:
            if model not in self._order:
                self._order.append(model)
        # Variants that start at the same time (on different servers) start at different
        # questions, so each learns the others' answer lengths early (see ``_take``).
        for index, model in enumerate(m for m in self._order if m in fresh):
            batch = fresh[model]
            shift = len(batch) * index // len(fresh)
            self._pool.setdefault(model, []).extend(batch[shift:] + batch[:shift])
        for model in self._order:
            for server in self._replicas.get(model, []):
                state = self._servers.setdefault(server, _ServerState(eligible=[]))
                if model not in state.eligible:
                    state.eligible.append(model)

    # ------------------------------------------------------------ the Scheduler protocol

    def servers(self) -> list[str]:
        return [name for name, state in self._servers.items() if any(self._pool.get(m) for m in state.eligible)]

    def all_servers(self) -> list[str]:
        return list(self._servers)

    def next_batch(self, server: str) -> list[WorkUnit] | None:
        """Up to ``chunk`` requests for one variant; [] when none now but some may come back
        (in flight elsewhere, or on this server before a switch); None when this server is done."""
        state = self._servers.get(server)
        if state is None or state.down:
            return None
        if self._early_leave and self._holds_back(server, state):
            return []  # its request that ends the run runs faster with fewer beside it
        leaving = self._leaving_choice(server, state) if self._early_leave else None
        model, at_most = leaving if leaving is not None else (self._choose(server, state), None)
        batch = [] if model is None else self._take(model, at_most)
        if not batch:
            return [] if self._may_get_more(server, state) else None
        state.current = model
        self._started.add(model)
        now = self._clock()
        if self._first_pull is None:
            self._first_pull = now
        handed = [dataclasses.replace(unit, server=server) for unit in batch]
        for unit in handed:
            state.out[unit.key] = (unit, now)
        return handed

    def record(self, unit: WorkUnit, record: TranscriptRecord) -> None:
        state = self._servers.get(unit.server)
        if state is not None:
            state.out.pop(unit.key, None)
        self.lengths.learn(record)
        tokens = record.usage.completion_tokens if record.ok and record.usage is not None else None
        if isinstance(tokens, int) and tokens > 0:
            self._tokens_done += tokens
            self._answers_done += 1

    def server_down(self, server: str) -> list[WorkUnit]:
        """This server answers no more: its unanswered requests go back to the front of their
        variants' pools (they were next) for the other replicas. Returns them."""
        state = self._servers.get(server)
        if state is None:
            return []
        state.down = True
        return self.give_back(server)

    def give_back(self, server: str) -> list[WorkUnit]:
        """This server's unanswered requests go back to the front of their pools (it is in an
        outage: the other replicas take them meanwhile; it may ask again when it is back)."""
        state = self._servers.get(server)
        if state is None:
            return []
        returned = [unit for unit, _ in state.out.values()]
        state.out.clear()
        state.current = None  # not running its variant now: others may join it without regard
        for unit in reversed(returned):
            self._pool.setdefault(unit.model, []).insert(0, unit)
        return returned

    def may_get_more(self, server: str) -> bool:
        """Whether this server may still get work (now or once a replica's work comes back)."""
        state = self._servers.get(server)
        return state is not None and not state.down and self._may_get_more(server, state)

    def is_down(self, server: str) -> bool:
        state = self._servers.get(server)
        return state is None or state.down

    def shared(self, server: str) -> bool:
        """Whether another live server may answer some of this server's variants (then its
        work is lent out during an outage; alone, its requests wait for it in its gate)."""
        state = self._servers.get(server)
        if state is None:
            return False
        return any(model in other.eligible for model in state.eligible
                   for name, other in self._servers.items() if name != server and not other.down)

    def in_flight(self) -> int:
        return sum(len(s.out) for s in self._servers.values())

    def live_models(self) -> set[str]:
        return {m for s in self._servers.values() if not s.down for m in s.eligible}

    def unanswerable(self) -> int:
        """Requests left in the pool with no live server that could answer them."""
        live = self.live_models()
        return sum(len(units) for model, units in self._pool.items() if model not in live)

    # ------------------------------------------------------------ placement

    def weights_of(self, model: str) -> str:
        """What a server loads for this variant (its model id): variants that share it are
        one model to the server."""
        return self._weights.get(model, model)

    def _choose(self, server: str, state: _ServerState) -> str | None:
        if state.current is not None and self._pool.get(state.current):
            return state.current  # affinity
        candidates = [m for m in state.eligible if self._pool.get(m)]
        held = {self.weights_of(u.model) for u, _ in state.out.values()}
        if held and self._resident.get(server, 1) < 2:
            # A one-model server finishes the last answers of the weights it holds before
            # loading others; a variant on the same weights needs no load and goes on now.
            candidates = [m for m in candidates if self.weights_of(m) in held]
        if not candidates:
            return None
        loaded = None if state.current is None else self.weights_of(state.current)
        same = [m for m in candidates if self.weights_of(m) == loaded]
        if same:
            candidates = same  # affinity to the loaded weights: no switch
        crowd = {m: sum(1 for s in self._servers.values() if not s.down and s.current == m and s is not state)
                 for m in candidates}
        # A variant nobody runs is always worth a switch; a server that would leave its own
        # weights joins a variant that others run only while enough of it is left to repay the
        # switch (a server with no variant yet, or on the same weights, loses nothing by joining).
        if loaded is not None and not same:
            candidates = [m for m in candidates if crowd[m] == 0 or len(self._pool[m]) >= self._min_join]
        if not candidates:
            return None
        if (self._resident.get(server, 1) >= 2 or self._surplus_first) and not same:
            surplus = self._surplus()
            candidates = [m for m in candidates if m in surplus] or candidates
        left = {m: self._work_left(m) for m in candidates}
        return max(candidates, key=lambda m: (left[m] / (1 + crowd[m]), -self._order.index(m)))

    def _surplus(self) -> set[str]:
        """With more variants left than live servers, the ones that cannot have a server of
        their own (the last V mod S in the run's order) are shared first: a shared variant's
        longest answer then starts early, instead of after every server's own variant, when
        it would run on past everything else. For servers that hold two models always; for
        one-model servers only with ``surplus_first`` (an adaptive run's blocks). A one-model
        server must wait, slots idle, for the shared variant's last answers before it can load
        its own, and at the start nothing says which of them are long: that wait costs about
        one long answer per server, the late start it saves costs about one long answer at the
        end of the run. So it pays when the run (or block) is short next to its longest answer
        and not otherwise. bench/bench_schedule.py, 4 variants on 3 one-model servers: a fixed
        run of 100 questions per variant goes from 1.13x to 1.10x the bound (20 seeds), one of
        300 from 1.00x to 1.04x (crossover 150-200 questions; the scheduler cannot tell at the
        start which it is, and the early leave of ``qatcmp.replica_tail`` takes care of a short
        run's tail), while an adaptive run's blocks, each a short run ending at a barrier, gain
        at every size (blocks of 25: 1.76x to 1.72x at 100 questions, 1.77x to 1.76x at 300)."""
        live = sum(1 for s in self._servers.values() if not s.down)
        with_work = [m for m in self._order if self._pool.get(m)]
        if live == 0 or len(with_work) <= live:
            return set()
        extra = len(with_work) % live
        return set(with_work[len(with_work) - extra:]) if extra else set()

    def _work_left(self, model: str) -> float:
        return sum(self.lengths.expected(u.benchmark, u.item_id) for u in self._pool[model])

    def _may_get_more(self, server: str, state: _ServerState) -> bool:
        """Whether to keep asking: this server still has work in flight or could get some -
        pooled work it waits to switch to, or work out at a replica that may go down."""
        if state.out:
            return True
        for model in state.eligible:
            if self._pool.get(model):
                return True
            if any(u.model == model for name, s in self._servers.items() if name != server and not s.down
                   for u, _ in s.out.values()):
                return True
        return False

    def _running_since(self) -> dict[tuple[str, str], float]:
        """Per question, when the earliest request for it still in flight was handed out."""
        since: dict[tuple[str, str], float] = {}
        for state in self._servers.values():
            for unit, when in state.out.values():
                key = (unit.benchmark, unit.item_id)
                since[key] = min(when, since.get(key, when))
        return since

    def _take(self, model: str, at_most: float | None = None) -> list[WorkUnit]:
        """The next ``chunk`` units of a variant: the question with the longest expected answer
        first, so long answers start early and the variant ends on short ones. Ties keep the
        pool's order, so the samples of a question go out together. With ``at_most``, only a
        question expected to answer in at most that many tokens (none: [])."""
        pool = self._pool[model]
        if len(pool) > self._chunk or at_most is not None:
            now = self._clock()
            since = self._running_since()

            def expected(unit: WorkUnit) -> float:
                started = since.get((unit.benchmark, unit.item_id))
                return self.lengths.expected(unit.benchmark, unit.item_id,
                                             None if started is None else now - started)

            fits = [i for i in range(len(pool)) if at_most is None or expected(pool[i]) <= at_most]
            if not fits:
                return []
            first = max(fits, key=lambda i: (expected(pool[i]), -i))
            pool.insert(0, pool.pop(first))
        batch, self._pool[model] = pool[: self._chunk], pool[self._chunk:]
        return batch


class BlockScheduler:
    """The same engine, gated in steps (an adaptive run's blocks) from a provider
    (`qatcmp.adaptive.AdaptiveController.next_step`): the units of one step go into the
    ``ReplicaScheduler``'s pool and are pulled by every server of their variant; when every
    unit of the step is recorded, the provider sees exactly those records and plans the next
    step (or ends the run with None). So every variant answers block k before any starts
    k + 1, and within a block the replicas share the work. A server with nothing left in the
    step gets an empty batch (wait) until the step is over; if what is left can be answered by
    no live server, the run ends (the runner reports the server that went down)."""

    pulls = True

    def __init__(self, next_step: Callable[[list[TranscriptRecord]], Step | None], model_order: list[str], *,
                 replicas: Mapping[str, list[str]], resident: Mapping[str, int] | None = None,
                 weights: Mapping[str, str] | None = None,
                 history: Iterable[TranscriptRecord] = (), lengths: LengthBook | None = None,
                 chunk: int = DEFAULT_CHUNK, min_join: int = DEFAULT_MIN_JOIN,
                 clock: Callable[[], float] = time.monotonic):
        self._next_step = next_step
        self._engine = ReplicaScheduler([], model_order, replicas=replicas, resident=resident, weights=weights,
                                        history=history, lengths=lengths, chunk=chunk,
                                        min_join=min_join, early_leave=False, surplus_first=True,
                                        clock=clock)
        self._outstanding: set[Key] = set()
        self._finished: list[TranscriptRecord] = []
        self._step_models: set[str] = set()
        self._started = False
        self._done = False

    def servers(self) -> list[str]:
        return self._engine.all_servers()

    def _plan(self) -> None:
        step = self._next_step(self._finished)
        self._finished = []
        self._started = True
        # A provider that returns an empty step would never be asked again: treat as done.
        if step is None or not step.units:
            self._done = True
            return
        self._outstanding = {unit.key for unit in step.units}
        self._step_models = {unit.model for unit in step.units}
        self._engine.add(step.units, step.model_order)

    def next_batch(self, server: str) -> list[WorkUnit] | None:
        if not self._started:
            self._plan()
        while not self._done:
            if self._engine.is_down(server):
                return None
            batch = self._engine.next_batch(server)
            if batch:
                return batch
            if not self._outstanding:
                self._plan()
                continue
            if self._engine.in_flight() == 0 and not self._answerable_left():
                self._done = True  # the rest of the step has no live server: nothing more can happen
                break
            return []  # other servers (or this one's requests in flight) are still on this step
        return None

    def _answerable_left(self) -> bool:
        # Nothing is in flight, so every unit of the step not yet recorded is in the pool.
        live = self._engine.live_models()
        return any(key[0] in live for key in self._outstanding)

    def record(self, unit: WorkUnit, record: TranscriptRecord) -> None:
        self._engine.record(unit, record)
        if unit.key in self._outstanding:
            self._outstanding.discard(unit.key)
            self._finished.append(record)

    def server_down(self, server: str) -> list[WorkUnit]:
        return self._engine.server_down(server)

    def give_back(self, server: str) -> list[WorkUnit]:
        return self._engine.give_back(server)

    def shared(self, server: str) -> bool:
        return self._engine.shared(server)

    def may_get_more(self, server: str) -> bool:
        return not self._done and not self._engine.is_down(server)

    def unanswerable(self) -> int:
        """Requests of this step with no live server, plus one per variant still being asked
        that has no live server left (its next blocks could not be answered)."""
        live = self._engine.live_models()
        return self._engine.unanswerable() + sum(1 for m in self._step_models if m not in live)
