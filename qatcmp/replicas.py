"""Pull-based scheduling over several servers, some of which serve the same variant (replicas).

Each server's loop asks for work whenever it has a free slot (``next_batch`` returns a few
requests, not a whole variant), so a slow replica simply asks less often, and a replica that
goes down hands its unanswered requests back (``server_down``) for the others: nothing is
asked twice (a request is out at one server at a time) and nothing is lost.

Placement, decided at each pull:
- affinity: a server keeps the variant it has loaded while that variant has work;
- balance: a server that needs a new variant takes the one with the most pending requests per
  server already on it, so servers spread over variants before doubling up on one;
- tail: within a variant, questions whose answers were long for the variants already run start
  first (longest-first; answer lengths of one question are strongly correlated across
  quantizations), so the end of a variant is short answers, not one 32k-token straggler
  holding a nearly empty server;
- a server that holds several models at once (``resident``) starts the next variant while the
  previous one's last answers finish; a one-model server waits for them (switching under
  in-flight requests would make it evict and reload).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from qatcmp.records import TranscriptRecord
from qatcmp.scheduler import WorkUnit

# Requests handed out per pull: one per free slot, so work stays in the shared pool (for the
# replicas) as long as possible. The samples of a question are next to each other in the pool,
# so a server mostly takes them one after another (they share a prompt: prefix caches hit).
DEFAULT_CHUNK = 1
# A server joins a variant another server is already running only if at least this many of its
# requests are still unstarted: joining costs a model switch.
DEFAULT_MIN_JOIN = 4


@dataclass
class _ServerState:
    eligible: list[str]  # variants this server may serve, in the run's variant order
    current: str | None = None  # the variant it last started
    out: dict[tuple, WorkUnit] = field(default_factory=dict)  # handed out, not yet recorded
    down: bool = False


class ReplicaScheduler:
    """The runner's scheduler when pulling: see the module docstring.

    ``units`` carry their variant's first server; ``replicas`` maps a variant to every server
    that may answer it (default: the unit's own server). A handed-out unit carries the server
    it was given to, so the transcript names the replica that answered.
    """

    pulls = True  # the runner keeps slots full by asking again as each request finishes

    def __init__(
        self,
        units: Iterable[WorkUnit],
        model_order: list[str],
        *,
        replicas: Mapping[str, list[str]] | None = None,
        resident: Mapping[str, int] | None = None,
        chunk: int = DEFAULT_CHUNK,
        min_join: int = DEFAULT_MIN_JOIN,
    ):
        self._order = list(model_order)
        self._pool: dict[str, list[WorkUnit]] = {}  # variant -> unstarted units, next first
        for unit in units:
            self._pool.setdefault(unit.model, []).append(unit)
        for model in self._pool:
            if model not in self._order:
                self._order.append(model)
        # Variants that start at the same time (on different servers) start at different
        # questions, so each learns the others' answer lengths early (see ``_take``).
        for index, model in enumerate(m for m in self._order if m in self._pool):
            pool = self._pool[model]
            shift = len(pool) * index // len(self._pool)
            self._pool[model] = pool[shift:] + pool[:shift]
        replicas = dict(replicas or {})
        for model, units_of in self._pool.items():
            replicas.setdefault(model, [units_of[0].server])
        self._servers: dict[str, _ServerState] = {}
        for model in self._order:
            for server in replicas.get(model, []):
                self._servers.setdefault(server, _ServerState(eligible=[])).eligible.append(model)
        self._resident = dict(resident or {})
        self._chunk = max(1, chunk)
        self._min_join = max(0, min_join)
        self._tokens: dict[tuple[str, str], list[int]] = {}  # (benchmark, item) -> answer lengths seen

    # ------------------------------------------------------------ the Scheduler protocol

    def servers(self) -> list[str]:
        return [name for name, state in self._servers.items() if any(self._pool.get(m) for m in state.eligible)]

    def next_batch(self, server: str) -> list[WorkUnit] | None:
        """Up to ``chunk`` requests for one variant; [] when none now but some may come back
        (in flight elsewhere, or on this server before a switch); None when this server is done."""
        state = self._servers.get(server)
        if state is None or state.down:
            return None
        model = self._choose(server, state)
        if model is None:
            return [] if self._may_get_more(server, state) else None
        state.current = model
        batch = self._take(model)
        handed = [dataclasses.replace(unit, server=server) for unit in batch]
        for unit in handed:
            state.out[unit.key] = unit
        return handed

    def record(self, unit: WorkUnit, record: TranscriptRecord) -> None:
        state = self._servers.get(unit.server)
        if state is not None:
            state.out.pop(unit.key, None)
        if record.ok and record.usage is not None and record.usage.completion_tokens:
            self._tokens.setdefault((unit.benchmark, unit.item_id), []).append(record.usage.completion_tokens)

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
        returned = list(state.out.values())
        state.out.clear()
        state.current = None  # not running its variant now: others may join it without regard
        for unit in reversed(returned):
            self._pool.setdefault(unit.model, []).insert(0, unit)
        return returned

    def may_get_more(self, server: str) -> bool:
        """Whether this server may still get work (now or once a replica's work comes back)."""
        state = self._servers.get(server)
        return state is not None and not state.down and self._may_get_more(server, state)

    def unanswerable(self) -> int:
        """Requests left in the pool with no live server that could answer them."""
        live = {m for s in self._servers.values() if not s.down for m in s.eligible}
        return sum(len(units) for model, units in self._pool.items() if model not in live)

    # ------------------------------------------------------------ placement

    def _choose(self, server: str, state: _ServerState) -> str | None:
        if state.current is not None and self._pool.get(state.current):
            return state.current  # affinity
        busy_with_current = state.current is not None and any(u.model == state.current for u in state.out.values())
        if busy_with_current and self._resident.get(server, 1) < 2:
            return None  # a one-model server finishes the variant's last answers before switching
        candidates = [m for m in state.eligible if self._pool.get(m)]
        if not candidates:
            return None
        crowd = {m: sum(1 for s in self._servers.values() if not s.down and s.current == m and s is not state)
                 for m in candidates}
        # A variant nobody runs is always worth a switch; joining one that others run only
        # while enough of it is left to repay the switch.
        candidates = [m for m in candidates if crowd[m] == 0 or len(self._pool[m]) >= self._min_join]
        if not candidates:
            return None
        return max(candidates, key=lambda m: (len(self._pool[m]) / (1 + crowd[m]), -self._order.index(m)))

    def _may_get_more(self, server: str, state: _ServerState) -> bool:
        """Whether to keep asking: this server still has work in flight or could get some -
        pooled work it waits to switch to, or work out at a replica that may go down."""
        if state.out:
            return True
        for model in state.eligible:
            if self._pool.get(model):
                return True
            if any(u.model == model for name, s in self._servers.items() if name != server and not s.down for u in s.out.values()):
                return True
        return False

    def _take(self, model: str) -> list[WorkUnit]:
        """The next ``chunk`` units of a variant: the question with the longest expected answer
        (by what the variants already run answered to it), so long answers start early and
        the variant ends on short ones. A question nobody answered yet counts as average; ties
        keep the pool's order, so the samples of a question go out together."""
        pool = self._pool[model]
        if self._tokens and len(pool) > self._chunk:
            known = [sum(v) / len(v) for v in self._tokens.values()]
            prior = sum(known) / len(known)

            def expected(unit: WorkUnit) -> float:
                seen = self._tokens.get((unit.benchmark, unit.item_id))
                return sum(seen) / len(seen) if seen else prior

            first = max(range(len(pool)), key=lambda i: (expected(pool[i]), -i))
            pool.insert(0, pool.pop(first))
        batch, self._pool[model] = pool[: self._chunk], pool[self._chunk:]
        return batch
