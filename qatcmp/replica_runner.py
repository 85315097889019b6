"""The runner's part that drives the pull engine (``qatcmp.replicas``): a loop per server that
pulls a request per free slot, hands a downed replica's work to the others, and skips a
replica that does not answer at the start when its variants have another server; and the
placement the engine gets (each variant's servers, how many models each server holds, the
answer lengths on disk).

A mixin of ``Runner`` (it uses the runner's ``_run_unit``, summary and warnings), kept apart so
that runner.py stays about the run itself.
"""

from __future__ import annotations

import asyncio

from qatcmp.client import ChatClient
from qatcmp.concurrency import ServerDown, ServerGate
from qatcmp.preflight import RunAborted, check_reachable, resident_models
from qatcmp.records import ServerInfo
from qatcmp.replicas import ReplicaScheduler
from qatcmp.scheduler import ModelByModelScheduler, Scheduler, WorkUnit

# A pulling server with nothing to do now, but work that may come back (in flight at a replica
# that may go down): how long to wait before asking again.
PULL_IDLE_WAIT = 0.2
OUTAGE_CHECK_EVERY = 0.5


class ReplicaRunning:
    def _make_scheduler(self, pending: list[WorkUnit]) -> Scheduler:
        """The pull engine over every server of each variant (an adaptive run's factory gets
        the same placement: replicas, models each server holds, answer lengths on disk)."""
        order = [m.name for m in self.models]
        if self.scheduler_factory is ModelByModelScheduler:
            if any(m.replicas for m in self.models):
                self._warn("this scheduler sends each variant to its first server only; its other servers are not used")
            return ModelByModelScheduler(pending, order)
        # Only variants with work left: their servers are the ones the run has clients for.
        variants = {u.model for u in pending}
        # A variant's weights are its model id: variants that share one are no switch apart.
        placement = {"replicas": {m.name: m.servers for m in self.models if m.name in variants},
                     "weights": {m.name: m.model for m in self.models if m.name in variants},
                     "resident": self.resident, "lengths": self.lengths}
        return (self.scheduler_factory or ReplicaScheduler)(pending, order, **placement)

    def _resident_models(self, servers: list[str], infos: list[ServerInfo]) -> dict[str, int]:
        """How many models each server holds at once (servers.yaml, else what it reports)."""
        resident = {}
        for name, info in zip(servers, infos):
            ids = [m.model for m in self.models if name in m.servers]
            resident[name] = resident_models(self.config.server(name).max_loaded_models, info, ids)
            if resident[name] > 1 and len(set(ids)) > 1:
                self.progress.log(f"server '{name}' holds {resident[name]} models at once: "
                                  "the next variant starts while the last answers of the previous one finish")
        return resident

    def _unreachable_replicas(self, servers: list[str], infos: list[ServerInfo], pending: list[WorkUnit]) -> set[str]:
        """Replicas that do not answer at the start but whose variants have another server that
        does: the run goes on without them (with a warning). Any other unreachable server is
        left to ``check_reachable``, which stops the run."""
        if self.scheduler_factory is ModelByModelScheduler or not any(m.replicas for m in self.models):
            return set()  # only the pulling engine uses the other replicas
        down = {name for name, info in zip(servers, infos) if _unreachable(name, info)}
        variants = {u.model for u in pending}
        skipped = set()
        for name in down:
            users = [m for m in self.models if m.name in variants and name in m.servers]
            if users and all(any(s not in down for s in m.servers) for m in users):
                skipped.add(name)
                info = infos[servers.index(name)]
                self._warn(f"server '{name}' at {info.base_url} does not answer ({info.error}); "
                           "its variants run on their other servers")
        return skipped

    async def _pull_server(self, server: str, scheduler: Scheduler, client: ChatClient, gate: ServerGate) -> None:
        """Keep this server's slots full, asking the scheduler for a request per free slot;
        if it goes down, its unanswered requests go back to the scheduler for its replicas."""
        running: set[asyncio.Task] = set()
        loaded: str | None = None  # the model id this server last ran: a switch is a change of it
        try:
            while True:
                if gate.down and scheduler.shared(server):  # type: ignore[attr-defined]
                    await self._lend_out_while_down(server, scheduler, gate, running)
                    if gate.down:
                        break  # nothing left that this server could get
                    continue
                if _room_for_more(len(running), gate):
                    batch = scheduler.next_batch(server)
                    if batch is None:
                        break
                    if batch:
                        weights = self._model_by_name[batch[0].model].model
                        if loaded is not None and weights != loaded:
                            self.summary.model_switches += 1
                        loaded = weights
                        running.update(asyncio.create_task(self._run_unit(u, client, gate, scheduler)) for u in batch)
                        await asyncio.sleep(0)  # let them take their slots before counting again
                        continue
                if running:
                    # Woken now and then to notice an outage (its requests wait in the gate).
                    done, running = await asyncio.wait(running, timeout=OUTAGE_CHECK_EVERY,
                                                       return_when=asyncio.FIRST_COMPLETED)
                    # A ServerDown or an abort stops this server (every failure is retrieved,
                    # the first is raised).
                    failures = [task.exception() for task in done if not task.cancelled() and task.exception()]
                    if failures:
                        raise failures[0]
                else:
                    await asyncio.sleep(PULL_IDLE_WAIT)
        except ServerDown as exc:
            await _cancel_all(running)
            scheduler.server_down(server)  # type: ignore[attr-defined]
            if scheduler.unanswerable() == 0:  # type: ignore[attr-defined]
                self._warn(f"{exc}; its unanswered requests went to the other servers of its variants")
            else:
                self.summary.down[server] = str(exc)
                self.progress.log(f"WARNING: {exc}; its remaining requests were not sent")
        finally:
            await _cancel_all(running)

    async def _lend_out_while_down(self, server: str, scheduler, gate: ServerGate, running: set[asyncio.Task]) -> None:
        """The server stopped answering and its gate waits for it (``outage.wait``): its requests
        go back to the pool meanwhile, for its replicas (the waiting ones were not sent; the
        ones cut off were not answered), instead of waiting with it. Returns when it is back,
        or when there is nothing left it could get; raises ServerDown when its gate gives up."""
        await _cancel_all(running)
        returned = scheduler.give_back(server)
        if returned:
            self.progress.log(f"server '{server}' is not answering: {len(returned)} requests go to its replicas meanwhile")
        while gate.down and scheduler.may_get_more(server):
            gate.check_failed()
            await asyncio.sleep(PULL_IDLE_WAIT)
        gate.check_failed()


async def _cancel_all(tasks: set[asyncio.Task]) -> None:
    # Requests still in flight are stopped: nothing is written for them, so they stay pending.
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    tasks.clear()


def _room_for_more(running: int, gate: ServerGate) -> bool:
    """Whether to pull another request: one per slot of the adaptive limit, and more while a
    slot stands free (a request pausing after "server full" has given its slot back; without
    another one waiting, the server would work on fewer than it takes), up to twice the limit."""
    limit = max(1, gate.limit)
    if running < limit:
        return True
    return running < 2 * limit and not gate.down and gate.in_flight < gate.limit


def _unreachable(name: str, info: ServerInfo) -> bool:
    try:
        check_reachable(name, info)
    except RunAborted:
        return True
    return False
