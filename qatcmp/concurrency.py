"""How many requests one server gets at once, and whether it gets any: the server's gate.

Every attempt of every request takes a slot from its server's gate and gives it back when
the attempt ends, so a retry waits for a free slot like everyone else instead of hammering
a full queue.

Adaptive limit (AIMD, as TCP does): a congestion signal (oMLX's "waiting queue full", 429,
503, 507, a connection cut after the 200 before any token) lowers the limit - to half, but
never below the number of requests the server was visibly working on at that moment (those
that had streamed a token: that many it does admit) - and at most once per round of
requests (signals from attempts sent before the last decrease are about the old limit).
While answers flow, the limit grows by one per ``limit`` answers, never above
``max_concurrency``.

Outage: after ``after_failures`` connection failures in a row with no answer in between, the
gate closes (nothing more is sent), a probe asks the server with backoff, and the gate opens
again when it answers - or, after ``wait`` seconds, fails every waiting request with
:class:`ServerDown`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, retry_if_result, stop_before_delay, wait_exponential

PROBE_FIRST_DELAY = 0.5
PROBE_MAX_DELAY = 15.0


class ServerDown(Exception):
    """The server did not come back within its outage wait."""

    def __init__(self, server: str, waited: float, reason: str):
        super().__init__(f"server '{server}' stopped answering ({reason}) and did not come back within {waited:.0f} s")
        self.server = server


@dataclass
class Ticket:
    """One attempt holding a slot: what the gate looked like when it was sent."""

    epoch: int
    answers_before: int
    started: float = 0.0
    streaming: bool = False
    first_token_at: float | None = None


class ServerGate:
    def __init__(
        self,
        name: str,
        max_concurrency: int,
        *,
        after_failures: int = 3,
        outage_wait: float = 600.0,
        probe: Callable[[], Awaitable[bool]] | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.name = name
        self.maximum = max_concurrency
        self.limit = max_concurrency
        self.after_failures = after_failures
        self.outage_wait = outage_wait
        self._probe = probe
        self._log = log or (lambda message: None)
        self.in_flight = 0
        self.streaming = 0  # attempts that have received a token: the server is working on them
        self.answers = 0
        self.congestion_events = 0
        self.lowest_limit = max_concurrency
        # Time spent with n requests being answered (streaming: n that have a token; else n
        # in flight): the level held longest is what the server works on at once.
        self._held: dict[str, dict[int, float]] = {"streaming": {}, "in_flight": {}}
        self._level = {"streaming": 0, "in_flight": 0}
        self._level_since = {"streaming": time.monotonic(), "in_flight": time.monotonic()}
        self.outages = 0
        self._epoch = 0
        self._since_increase = 0
        self._connection_failures = 0
        self._down_since: float | None = None
        self._down_reason = ""
        self._failed: ServerDown | None = None
        self._probe_task: asyncio.Task | None = None
        self._waiters: deque[asyncio.Future] = deque()

    # ------------------------------------------------------------ slots

    @property
    def down(self) -> bool:
        return self._down_since is not None

    async def acquire(self) -> Ticket:
        if self._failed is not None:
            raise self._failed
        if not self._waiters and self._can_admit():
            self.in_flight += 1
            self._track()
        else:
            future = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            try:
                await future  # raises ServerDown when the gate gives up
            except asyncio.CancelledError:
                if future.done() and not future.cancelled() and future.exception() is None:
                    self._release_slot()  # granted just as we were cancelled
                else:
                    try:
                        self._waiters.remove(future)
                    except ValueError:
                        pass
                raise
        return Ticket(epoch=self._epoch, answers_before=self.answers, started=time.monotonic())

    def renew(self, ticket: Ticket) -> None:
        """The slot is kept for another attempt: date it now."""
        if ticket.streaming:
            self.streaming -= 1
            self._track()
            ticket.streaming = False
        ticket.epoch = self._epoch
        ticket.answers_before = self.answers
        ticket.started = time.monotonic()
        ticket.first_token_at = None

    def release(self, ticket: Ticket) -> None:
        if ticket.streaming:
            self.streaming -= 1
            self._track()
            ticket.streaming = False
        self._release_slot()

    def _release_slot(self) -> None:
        self.in_flight -= 1
        self._track()
        self._wake()

    def _can_admit(self) -> bool:
        return self._down_since is None and self._failed is None and self.in_flight < self.limit

    def _wake(self) -> None:
        while self._waiters and self._can_admit():
            future = self._waiters.popleft()
            if future.done():
                continue
            self.in_flight += 1
            self._track()
            future.set_result(None)

    # ------------------------------------------------------------ signals

    def first_token(self, ticket: Ticket) -> None:
        if not ticket.streaming:
            ticket.streaming = True
            ticket.first_token_at = time.monotonic()
            self.streaming += 1
            self._track()

    def answered(self, ticket: Ticket) -> None:
        """The server answered (an answer or an error it meant to give): it is up and not full."""
        self.answers += 1
        self._connection_failures = 0

        self._since_increase += 1
        if self.limit < self.maximum and self._since_increase >= self.limit:
            self.limit += 1
            self._since_increase = 0
            self._wake()

    def served_at_once(self) -> int | None:
        """How many requests the server worked on at once for the longest time."""
        self._track()
        held = {n: t for n, t in (self._held["streaming"] or self._held["in_flight"]).items() if n > 0}
        return max(held, key=held.get) if held else None

    def _track(self) -> None:
        now = time.monotonic()
        for name, value in (("streaming", self.streaming), ("in_flight", self.in_flight)):
            level = self._level[name]
            if level > 0:
                held = self._held[name]
                held[level] = held.get(level, 0.0) + now - self._level_since[name]
            self._level[name] = value
            self._level_since[name] = now

    def heard_from(self) -> None:
        """The server answered with an error of its own: it is there."""
        self._connection_failures = 0

    def congested(self, ticket: Ticket) -> None:
        self._connection_failures = 0  # it answered, if only to say no
        if ticket.epoch != self._epoch:
            return  # sent under an older, higher limit: already accounted for
        admitted = self.streaming - (1 if ticket.streaming else 0)
        new = max(1, self.limit // 2, min(admitted, self.limit - 1))
        self.congestion_events += 1
        if new < self.limit:
            self.limit = new
            self.lowest_limit = min(self.lowest_limit, new)
        self._epoch += 1
        self._since_increase = 0

    def busy_with_others(self, ticket: Ticket) -> bool:
        """Was the server working on our other requests, or did it answer one while this
        attempt was out? Then a refusal of this one is our own overload, not a broken
        server: the attempt does not count."""
        return self.in_flight > 1 or self.answers > ticket.answers_before

    def connection_failed(self, reason: str) -> bool:
        """A request got no answer at all. Returns True when the gate is (now) closed for an
        outage: the failure then does not count against the request."""
        if self._failed is not None or self.down:
            return True
        self._connection_failures += 1
        if self._connection_failures < self.after_failures:
            return False
        self._down_since = time.monotonic()
        self._down_reason = reason
        self.outages += 1
        self._log(f"server '{self.name}' stopped answering ({reason}); waiting up to {self.outage_wait:.0f} s for it to come back")
        self._probe_task = asyncio.get_running_loop().create_task(self._probe_until_up())
        return True

    async def _probe_until_up(self) -> None:
        """Ask the server with exponential backoff (tenacity) until it answers, or give up
        after the outage wait: then every waiting request gets ServerDown."""
        assert self._down_since is not None
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=PROBE_FIRST_DELAY, max=PROBE_MAX_DELAY),
            # Never sleep past the deadline (counted from the first pause below).
            stop=stop_before_delay(max(0.0, self.outage_wait - PROBE_FIRST_DELAY)),
            retry=retry_if_result(lambda up: not up),
            retry_error_callback=lambda state: False,
        )
        # The first probe after the first pause: the failures that closed the gate are fresh.
        await asyncio.sleep(min(PROBE_FIRST_DELAY, self.outage_wait))
        if await retrying(self._probe_once):
            self._log(f"server '{self.name}' is back after {time.monotonic() - self._down_since:.0f} s; resuming")
            self._down_since = None
            self._connection_failures = 0
            self._wake()
            return
        self._failed = ServerDown(self.name, self.outage_wait, self._down_reason)
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_exception(self._failed)

    async def _probe_once(self) -> bool:
        try:
            return await self._probe() if self._probe is not None else True
        except Exception:  # a probe that cannot tell counts as "not yet"
            return False

    def check_failed(self) -> None:
        if self._failed is not None:
            raise self._failed

    async def aclose(self) -> None:
        if self._probe_task is not None and not self._probe_task.done():
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)


def congestion_pause(retry_after: float | None) -> float:
    """How long a refused attempt waits before queueing for a slot again: what the server
    asked for (capped), else a short jittered pause - the gate's limit does the pacing."""
    if retry_after is not None:
        return min(retry_after, 60.0) + random.uniform(0, 0.1)
    return random.uniform(0.02, 0.1)
