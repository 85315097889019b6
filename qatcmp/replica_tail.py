"""The tail of a run (a mixin of ``ReplicaScheduler``): on one-model servers with more variants
than servers, when a server should leave its variant early for a variant nobody has started;
and on any servers, when one should hold back beside a request that ends the run.

With 4 variants on 3 servers that hold one model each, the fourth variant can only start once
some server has finished its first one - unless a server leaves its first variant early. Left
alone, the fourth starts at about 3/4 of the run and its longest answer (a 32k-token thinking
answer takes most of a run of 100 questions per variant) runs on alone long after everything
else. Leaving early costs little: within a variant the longest answers start first, so what a
server leaves behind is short answers, which the other servers take at their ends (one more
model load) and which fill their last slots.

So every few seconds, while a variant has work that no server has started yet, the server that
could switch soonest (the least expected work still in flight: it must finish that before
loading, one model at a time) leaves its variant once (1) the time the run has left, if every
server stays full, is no more than the time the unstarted variant's longest expected answer
takes plus that server's wait for its own requests in flight, and (2) waiting instead for the
first server to run out of its own variant would leave a tail longer than a model load (else
leaving would only add a load). Until its requests in flight have finished it takes only
questions expected to end before them (a free slot is used without delaying the switch); then
it loads the new variant. In the simulation (bench/bench_schedule.py) this takes 4 variants x
100 questions on 3 one-model servers from 1.18x to 1.14x the lower bound (2 seeds; 1.14x to
1.13x over 20); most of what is left is that wait: in the first pass over the questions nothing
says which answers will be long, so every server has started one of its own by then.

Holding back: a request that will still run long after everything else is done ends the run
whatever the others do, and on a continuous-batching server it runs faster with fewer requests
beside it (per-request speed falls with the number in flight). So a server whose requests in
flight need more than HOLD_MARGIN times the time the whole run has left (at its throughput so
far) takes nothing new, as long as another live server can answer its variants (they take the
rest), until that is no longer so. In the simulation: 1.13x to 1.11x the bound at 3 one-model
servers, 100 questions, 20 seeds; no change at 300 questions or elsewhere.

Everything is measured by the run itself: the answer tokens recorded per second by all servers
together since the first pull (total throughput), tokens per second of a request's latency
(per-request speed) and expected answer lengths from the ``LengthBook``. Nothing happens before
answers have come back; no early leave on servers that hold several models (they start the
next variant while the previous one finishes anyway) or when every variant has a server of its
own.
"""

from __future__ import annotations

# Answers this run must have recorded before its throughput is trusted, per server.
MIN_ANSWERS_PER_SERVER = 4
# What leaving costs: one more model load (of the variant left behind, by whoever takes its
# rest). Tens of seconds for a model of tens of GB; a tail shorter than this is not worth it.
SWITCH_COST_S = 60.0
# How often the leave is weighed (it looks at every request left: not at every pull).
LEAVE_CHECK_EVERY_S = 5.0
# A server holds back when its requests in flight need more than this many times the time the
# run has left at its whole throughput: with two or more servers the others have at least half
# of it, so they finish everything else before that request ends even if the holding server
# took nothing more (in the simulation 1 and 2 measured the same; 2 leaves room for errors in
# the expected lengths and the throughput).
HOLD_MARGIN = 2.0


class EarlyLeaving:
    """Needs from the scheduler: ``_servers`` (name -> state with ``current``, ``out``, ``down``,
    ``eligible``, ``leaving_for``), ``_pool``, ``_resident``, ``_clock``, ``lengths``,
    ``weights_of``, ``_started`` (variants handed out this session), ``_first_pull`` and
    ``_tokens_done``/``_answers_done`` (this session's records), ``_next_leave_check``,
    ``_next_hold_check`` and ``_holding``, and ``shared``."""

    def _holds_back(self, server: str, state) -> bool:
        """Whether this server takes nothing new now: its requests in flight end the run long
        after everything else (weighed every LEAVE_CHECK_EVERY_S for every server), and other
        servers can take its work. A server with nothing in flight never holds back."""
        now = self._clock()
        if now >= self._next_hold_check:
            self._next_hold_check = now + LEAVE_CHECK_EVERY_S
            self._holding = set()
            speed = self.lengths.produced(1.0)
            time_left = self._time_left(now, speed) if speed > 0 else None
            if time_left is not None:
                self._holding = {name for name, other in self._servers.items()
                                 if not other.down and other.out
                                 and self._drain_s(other, now, speed) > HOLD_MARGIN * time_left}
        return bool(state.out) and server in self._holding and self.shared(server)

    def _leaving_choice(self, server: str, state) -> tuple[str | None, float | None] | None:
        """None: not leaving (the usual placement decides). Else (variant, at most tokens):
        (the new variant, None) once nothing of other weights is in flight; (its own variant,
        n) while its last requests finish - a question expected to answer in at most n tokens
        finishes before they do, so it fills a slot without delaying the switch; (None, None):
        wait."""
        target = self._leave_for(server, state)
        if target is None:
            return None
        held = {self.weights_of(u.model) for u, _ in state.out.values()}
        if not held or self.weights_of(target) in held:
            state.leaving_for = None
            return target, None
        speed = self.lengths.produced(1.0)
        if state.current is None or not self._pool.get(state.current) or speed <= 0:
            return None, None
        return state.current, self._drain_s(state, self._clock(), speed) * speed

    def _leave_for(self, server: str, state) -> str | None:
        """The variant this server is leaving its own for (then it takes nothing else until
        its requests in flight are done), or None: carry on."""
        if state.leaving_for is None:
            self._plan_leave()
        target = state.leaving_for
        if target is not None and not (self._pool.get(target) and not self._taken_by_another(target, state)):
            state.leaving_for = target = None  # another server took it meanwhile, or it has no work left
        return target

    def _plan_leave(self) -> None:
        """Whether some server should leave its variant now, and which: the one that can switch
        soonest, for the unstarted variant with the longest expected answer. Weighed at most
        every LEAVE_CHECK_EVERY_S (it sums over every request left), whichever server pulls."""
        now = self._clock()
        if now < self._next_leave_check:
            return
        self._next_leave_check = now + LEAVE_CHECK_EVERY_S
        speed = self.lengths.produced(1.0)  # tokens per second of one request
        leavers = {name: other for name, other in self._servers.items() if self._may_leave(name, other)}
        targets = {name: [m for m in other.eligible if self._pool.get(m) and m not in self._started
                          and self.weights_of(m) != self.weights_of(other.current)
                          and not self._taken_by_another(m, other)]
                   for name, other in leavers.items()}
        leavers = {name: other for name, other in leavers.items() if targets[name]}
        if not leavers or speed <= 0 or (time_left := self._time_left(now, speed)) is None:
            return
        drains = {name: self._drain_s(other, now, speed) for name, other in leavers.items()}
        server = min(drains, key=lambda n: (drains[n], n))
        since = self._running_since()
        target = max(targets[server], key=lambda m: (self._longest_left(m, now, since), -self._order.index(m)))
        need = self._longest_left(target, now, since) / speed
        if time_left > need + drains[server]:
            return  # its longest answer still fits after the others' ends
        if self._first_free_s(now, speed) + need - time_left < SWITCH_COST_S:
            return  # waiting for a server to finish its variant leaves no tail worth a load
        leavers[server].leaving_for = target

    def _first_free_s(self, now: float, speed: float) -> float:
        """When the first server runs out of work for its variant (its share of the variant's
        pool at one server's share of the throughput), and its last requests have finished."""
        live = [s for s in self._servers.values() if not s.down]
        per_server = self._tokens_done / max(1e-9, now - self._first_pull) / max(1, len(live))
        times = []
        for state in live:
            if state.current is None or not self._pool.get(state.current):
                return 0.0  # one is free already
            crowd = sum(1 for s in live if s.current == state.current)
            work = sum(self.lengths.expected(u.benchmark, u.item_id) for u in self._pool[state.current]) / crowd
            times.append(work / per_server + self._drain_s(state, now, speed))
        return min(times, default=0.0)

    def _may_leave(self, name: str, state) -> bool:
        return (not state.down and state.leaving_for is None and state.current is not None
                and bool(self._pool.get(state.current)) and self._resident.get(name, 1) < 2)

    def _taken_by_another(self, model: str, state) -> bool:
        return any(other is not state and not other.down and (other.current == model or other.leaving_for == model)
                   for other in self._servers.values())

    def _time_left(self, now: float, speed: float) -> float | None:
        """Seconds of work left at the run's throughput so far (every server full to the end),
        or None while too little has come back to tell."""
        live = sum(1 for s in self._servers.values() if not s.down)
        if self._first_pull is None or self._answers_done < MIN_ANSWERS_PER_SERVER * max(1, live):
            return None
        elapsed = now - self._first_pull
        if elapsed <= 0 or self._tokens_done <= 0:
            return None
        since = self._running_since()
        left = sum(self.lengths.expected(u.benchmark, u.item_id) for pool in self._pool.values() for u in pool)
        for state in self._servers.values():
            for unit, when in state.out.values():
                left += max(0.0, self.lengths.expected(unit.benchmark, unit.item_id, now - when) - speed * (now - when))
        return left / (self._tokens_done / elapsed)

    def _drain_s(self, state, now: float, speed: float) -> float:
        """How long this server's requests in flight still take, by their expected lengths."""
        return max((max(0.0, self.lengths.expected(u.benchmark, u.item_id, now - when) - speed * (now - when)) / speed
                    for u, when in state.out.values()), default=0.0)

    def _longest_left(self, model: str, now: float, since: dict) -> float:
        def expected(unit) -> float:
            started = since.get((unit.benchmark, unit.item_id))
            return self.lengths.expected(unit.benchmark, unit.item_id, None if started is None else now - started)

        return max((expected(u) for u in self._pool.get(model, [])), default=0.0)
