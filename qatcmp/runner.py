"""The run stage: send every (model, question, sample) request once and append its
transcript record; resume from what is on disk.

A run folder is an experiment with a fixed spec (questions, samples, seed, request bodies).
Running the same command again sends only what is missing - nothing at all when the run is
complete - and a changed spec is refused rather than mixed into the same folder.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from qatcmp import __version__
from qatcmp.benchmarks import module_for
from qatcmp.client import ChatClient, Completion
from qatcmp.concurrency import ServerDown, ServerGate
from qatcmp.config import Config, ModelConfig
from qatcmp.errors import ConfigError, QatcmpError
from qatcmp.extend import extend_run, is_extension
from qatcmp.preflight import RunAborted, capacity_warning, check_reachable, describe_server, preflight
from qatcmp.progress import RunProgress
from qatcmp.records import (
    BenchmarkSelection,
    Item,
    RunManifest,
    RunSpec,
    ServerInfo,
    TranscriptRecord,
    Usage,
    utcnow,
)
from qatcmp.replica_check import replica_differences
from qatcmp.replica_runner import ReplicaRunning
from qatcmp.replicas import LengthBook
from qatcmp.request import build_request, request_template
from qatcmp.rundir import JsonlAppender, RunDir, item_hashes, start_session
from qatcmp.runlock import LOCK_NAME
from qatcmp.scheduler import Scheduler, WorkUnit

# After this many answers with no reasoning from a model set to think, say so.
NO_REASONING_WARN_AFTER = 3
# Statuses that stop a run when a model's first request gets them (nothing can succeed),
# and how many other rejections (400/422) in a row, before any success, do the same.
ABORT_AT_ONCE = {401, 403, 404}
ABORT_AFTER_REJECTIONS = 3
# A server stopped answering and did not come back: distinct from "some error records" (1).
EXIT_SERVER_DOWN = 3


@dataclass
class BenchmarkPlan:
    selection: BenchmarkSelection
    items: list[Item]


@dataclass
class RunSummary:
    run_dir: Path
    sent: int = 0
    errors: int = 0
    truncated: int = 0
    skipped_done: int = 0
    model_switches: int = 0
    warnings: list[str] = field(default_factory=list)
    per_model: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    interrupted: bool = False
    down: dict[str, str] = field(default_factory=dict)  # server -> why its work stopped
    pending_left: int = 0  # requests not sent because their server was down
    retries: int = 0  # attempts beyond the first, over all requests written

    @property
    def answers(self) -> int:
        return self.sent - self.errors

    @property
    def exit_code(self) -> int:
        if self.down:
            return EXIT_SERVER_DOWN
        return 1 if self.errors else 0


# --------------------------------------------------------------------------- spec


def build_spec(config: Config, models: list[ModelConfig], plans: list[BenchmarkPlan], seed: int, samples: int) -> RunSpec:
    return RunSpec(
        benchmarks=[plan.selection for plan in plans],
        seed=seed,
        samples=samples,
        models={
            # The server's address is left out: moving a server to another port does not
            # change the experiment (the manifest records where each server was).
            m.name: {"server": m.server, "body": request_template(config, m, seed)}
            for m in models
        },
    )


def spec_difference(old: RunSpec, new: RunSpec) -> str | None:
    """A short description of the first difference between two specs, or None."""
    return _first_difference(old.model_dump(mode="json"), new.model_dump(mode="json"), "")


def _first_difference(a: Any, b: Any, path: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(dict.fromkeys([*a, *b])):
            if key not in a:
                return f"{path}.{key} added".lstrip(".")
            if key not in b:
                return f"{path}.{key} removed".lstrip(".")
            found = _first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path.lstrip('.')}: {len(a)} entries before, {len(b)} now"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    if a != b:
        return f"{path.lstrip('.')}: {json.dumps(a)[:60]} before, {json.dumps(b)[:60]} now"
    return None


def prepare_run_dir(run: RunDir, config: Config, spec: RunSpec, plans: list[BenchmarkPlan], command: list[str]) -> RunManifest:
    """Create the run folder, or check that an existing one holds the same experiment (and
    unchanged questions); either way, start a new session in its manifest."""
    if run.manifest.exists():
        manifest = run.read_manifest()
        difference = spec_difference(manifest.spec, spec)
        if difference and is_extension(manifest.spec, spec):
            manifest = extend_run(run, manifest, spec, plans)  # more of the nested sample: allowed
        elif difference:
            raise ConfigError(
                f"{run.path} already holds a run with a different set-up ({difference}); "
                "resume it with its original settings, or choose a new --out"
            )
        else:
            run.read_items(manifest)  # every question there and unchanged, or a one-line refusal
        start_session(manifest, command=command, config=config.redacted(), version=__version__)
        run.write_manifest(manifest)
        return manifest
    if run.path.exists() and any(p.name != LOCK_NAME for p in run.path.iterdir()):
        raise ConfigError(f"{run.path} exists and is not a qatcmp run folder; choose a new --out")
    run.path.mkdir(parents=True, exist_ok=True)
    items: list[Item] = [item for plan in plans for item in plan.items]
    run.write_items(items)
    now = utcnow()
    manifest = RunManifest(
        qatcmp_version=__version__,
        created_at=now,
        updated_at=now,
        config={},  # start_session fills in the command and config
        spec=spec,
        item_hashes=item_hashes(items),
    )
    start_session(manifest, command=command, config=config.redacted(), version=__version__)
    run.write_manifest(manifest)
    return manifest


# --------------------------------------------------------------------------- the run


class Runner(ReplicaRunning):
    def __init__(
        self,
        config: Config,
        models: list[ModelConfig],
        plans: list[BenchmarkPlan],
        *,
        run_dir: Path,
        seed: int,
        samples: int,
        command: list[str] | None = None,
        retry_errors: bool = True,
        progress: RunProgress | None = None,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        scheduler_factory=None,
    ):
        self.config = config
        self.models = models
        self.plans = plans
        self.run = RunDir(run_dir)
        self.seed = seed
        self.samples = samples
        self.command = command or []
        self.retry_errors = retry_errors
        self.progress = progress or RunProgress(live=False)
        self.transports = transports or {}
        # None: the pull engine (qatcmp.replicas); an adaptive run passes its block scheduler's.
        self.scheduler_factory = scheduler_factory
        self.lengths = LengthBook()  # answer lengths on disk when the run started (for the scheduler)
        self.resident: dict[str, int] = {}  # server -> models it holds at once
        self.summary = RunSummary(run_dir=Path(run_dir))
        self._items = {(p.selection.name, item.item_id): item for p in plans for item in p.items}
        self._templates = {m.name: request_template(config, m, seed) for m in models}
        self._model_by_name = {m.name: m for m in models}
        self._writers: dict[tuple[str, str], JsonlAppender] = {}
        self._no_reasoning: dict[str, int] = defaultdict(int)
        self._saw_reasoning: set[str] = set()
        self._succeeded: set[str] = set()
        self._fatal_before_success: dict[str, int] = defaultdict(int)
        self._abort: RunAborted | None = None

    # ------------------------------------------------------------ planning

    def pending_units(self) -> list[WorkUnit]:
        records = self.run.read_transcripts()
        self.lengths = LengthBook()
        for record in records:
            self.lengths.learn(record)
        done = {r.key for r in records if r.ok or not self.retry_errors}
        units: list[WorkUnit] = []
        for model in self.models:
            for plan in self.plans:
                for item in plan.items:
                    for sample in range(self.samples):
                        unit = WorkUnit(model.name, model.server, plan.selection.name, item.item_id, sample)
                        if unit.key in done:
                            self.summary.skipped_done += 1
                        else:
                            units.append(unit)
        return units

    # ------------------------------------------------------------ execution

    async def execute(self) -> RunSummary:
        spec = build_spec(self.config, self.models, self.plans, self.seed, self.samples)
        manifest = prepare_run_dir(self.run, self.config, spec, self.plans, self.command)
        pending = self.pending_units()
        if not pending:
            return self.summary
        servers_needed = list(dict.fromkeys(s for u in pending for s in self._model_by_name[u.model].servers))
        clients = {
            name: ChatClient(
                self.config.server(name),
                api_key=self.config.server(name).api_key(),
                transport=self.transports.get(name),
            )
            for name in servers_needed
        }
        gates = {name: self._gate(name, clients[name]) for name in servers_needed}
        try:
            infos = await asyncio.gather(*(describe_server(clients[n]) for n in servers_needed))
            for name, info in zip(servers_needed, infos):
                manifest.servers[name] = info
            unreachable = self._unreachable_replicas(servers_needed, infos, pending)
            for name, info in zip(servers_needed, infos):
                if name not in unreachable:
                    check_reachable(name, info)
            manifest.updated_at = utcnow()
            self.run.write_manifest(manifest)
            self._warn_unreproducible_seeds(infos, servers_needed)
            for model in self.models:
                if model.replicas:
                    for warning in replica_differences(model.name, model.model, {s: manifest.servers[s] for s in model.servers if s in manifest.servers}):
                        self._warn(warning)
            for name, info in zip(servers_needed, infos):
                if (warning := capacity_warning(name, self.config.server(name).max_concurrency, info)) is not None:
                    self._warn(warning)
            needed = [m for m in self.models if m.name in {u.model for u in pending}]
            # Each variant is checked on each of its servers (a replica without the model
            # would fail its share of the questions).
            needed = [m.model_copy(update={"server": s}) for m in needed for s in m.servers if s not in unreachable]
            for warning in await preflight(self.config, needed, clients, dict(zip(servers_needed, infos))):
                self._warn(warning)
            self._register_progress(pending)
            self.resident = self._resident_models(servers_needed, infos)
            scheduler = self._make_scheduler(pending)
            for name in unreachable:
                scheduler.server_down(name)  # type: ignore[attr-defined]
            await self._run_all(scheduler, clients, gates)
        finally:
            for writer in self._writers.values():
                writer.close()
            for name, gate in gates.items():
                await gate.aclose()
                self._warn_learned_capacity(name, gate)
            await asyncio.gather(*(c.aclose() for c in clients.values()), return_exceptions=True)
            manifest.model_switches += self.summary.model_switches
            manifest.updated_at = utcnow()
            if self.summary.warnings:
                manifest.warnings = list(dict.fromkeys([*manifest.warnings, *self.summary.warnings]))
            self.run.write_manifest(manifest)
            if self.summary.down:
                self.summary.pending_left = len(self.pending_units())
        if self._abort is not None:
            raise self._abort
        return self.summary

    def _gate(self, name: str, client: ChatClient) -> ServerGate:
        server = self.config.server(name)
        return ServerGate(name, server.max_concurrency, after_failures=server.outage.after_failures,
                          outage_wait=server.outage.wait, probe=client.is_up, log=self.progress.log)

    def _warn_learned_capacity(self, name: str, gate: ServerGate) -> None:
        served = gate.served_at_once()
        if gate.congestion_events == 0 or served is None:
            return
        admitted = served
        if admitted >= gate.maximum:
            return
        self._warn(
            f"server '{name}' said it was full {gate.congestion_events} times and worked on about {admitted} "
            f"requests at once; qatcmp lowered its own limit (lowest {gate.lowest_limit}), "
            f"but max_concurrency: {gate.maximum} is more than the server takes - set max_concurrency: {admitted}"
        )

    def _warn_unreproducible_seeds(self, infos: list[ServerInfo], servers: list[str]) -> None:
        for name, info in zip(servers, infos):
            # oMLX (the server that reports a version on /api/status) re-seeds one global
            # generator as each request is admitted: concurrent seeded requests disturb each
            # other's draws.
            if info.version is not None and self.config.server(name).max_concurrency > 1:
                self._warn(
                    f"server '{name}' (oMLX {info.version}) re-seeds one shared random generator per request: "
                    "with max_concurrency > 1 a rerun will not reproduce the same answers (the statistics stay valid); "
                    "set max_concurrency: 1 for exactly reproducible runs"
                )

    def _register_progress(self, pending: list[WorkUnit]) -> None:
        remaining: dict[tuple[str, str], int] = defaultdict(int)
        for unit in pending:
            remaining[(unit.model, unit.benchmark)] += 1
        for model in self.models:
            for plan in self.plans:
                total = len(plan.items) * self.samples
                todo = remaining.get((model.name, plan.selection.name), 0)
                self.progress.add(model.name, plan.selection.name, total, total - todo)

    async def _run_all(self, scheduler: Scheduler, clients: dict[str, ChatClient], gates: dict[str, ServerGate]) -> None:
        tasks = [asyncio.create_task(self._run_server(name, scheduler, clients[name], gates[name])) for name in scheduler.servers()]
        try:
            await asyncio.gather(*tasks)
        except RunAborted:
            pass  # recorded in self._abort; the other servers' tasks are cancelled below
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_server(self, server: str, scheduler: Scheduler, client: ChatClient, gate: ServerGate) -> None:
        if getattr(scheduler, "pulls", False):
            return await self._pull_server(server, scheduler, client, gate)
        loaded: str | None = None  # the model id this server last ran (variants may share one)
        try:
            while (batch := scheduler.next_batch(server)) is not None:
                if not batch:
                    await asyncio.sleep(0.05)  # the scheduler waits for other servers (adaptive blocks)
                    continue
                weights = self._model_by_name[batch[0].model].model
                if loaded is not None and weights != loaded:
                    self.summary.model_switches += 1
                loaded = weights
                await self._run_batch(batch, client, gate, scheduler)
        except ServerDown as exc:
            # Its requests stay pending (nothing written for them); the other servers go on.
            self.summary.down[server] = str(exc)
            self.progress.log(f"WARNING: {exc}; its remaining requests were not sent")

    async def _run_batch(self, batch: list[WorkUnit], client: ChatClient, gate: ServerGate, scheduler: Scheduler) -> None:
        tasks = [asyncio.create_task(self._run_unit(unit, client, gate, scheduler)) for unit in batch]
        try:
            await asyncio.gather(*tasks)
        finally:
            # On abort, outage or Ctrl-C, stop the requests still in flight: their answers
            # are not written, and the same command asks them again.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_unit(self, unit: WorkUnit, client: ChatClient, gate: ServerGate, scheduler: Scheduler) -> None:
        if self._abort is not None:
            return
        item = self._items[(unit.benchmark, unit.item_id)]
        messages = module_for(unit.benchmark).build_messages(item)
        body = build_request(self._templates[unit.model], messages, unit.benchmark, unit.item_id, unit.sample)
        started_at = utcnow()
        completion = await client.complete(body, thinking=self._model_by_name[unit.model].thinking, gate=gate)
        if self._abort is not None:
            return
        try:
            record = self._record(unit, body, completion, started_at)
        except ValueError as exc:  # a shape the client let through but the record refuses
            failed = Completion(error=f"answer could not be recorded: {str(exc).splitlines()[0][:200]}", error_kind="bad_shape",
                                attempts=completion.attempts, latency_s=completion.latency_s)
            record = self._record(unit, body, failed, started_at)
        self._write(record)
        scheduler.record(unit, record)
        self._observe(unit, completion)

    def _record(self, unit: WorkUnit, body: dict[str, Any], completion: Completion, started_at) -> TranscriptRecord:
        request = {k: v for k, v in body.items() if k != "messages"}
        return TranscriptRecord(
            model=unit.model,
            benchmark=unit.benchmark,
            item_id=unit.item_id,
            sample=unit.sample,
            server=unit.server,
            messages=body["messages"],
            request=request,
            content=completion.content,
            reasoning=completion.reasoning,
            reasoning_source=completion.reasoning_source,
            finish_reason=completion.finish_reason,
            usage=Usage.model_validate(completion.usage) if completion.usage else None,
            latency_s=completion.latency_s,
            ttft_s=completion.ttft_s,
            attempts=completion.attempts,
            error=completion.error,
            error_kind=completion.error_kind,
            started_at=started_at,
            finished_at=utcnow(),
            **({"notes": completion.notes} if completion.notes else {}),
        )

    def _write(self, record: TranscriptRecord) -> None:
        key = (record.model, record.benchmark)
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = JsonlAppender(self.run.transcript_file(*key))
        writer.append(record)
        self.summary.sent += 1
        self.summary.retries += max(0, record.attempts - 1)
        stats = self.summary.per_model.setdefault(key, {"done": 0, "errors": 0, "truncated": 0})
        stats["done"] += 1
        if record.error:
            self.summary.errors += 1
            stats["errors"] += 1
        if record.truncated:
            self.summary.truncated += 1
            stats["truncated"] += 1
        tokens = (record.usage.completion_tokens or 0) if record.usage else 0
        self.progress.advance(record.model, record.benchmark, error=bool(record.error), truncated=record.truncated,
                              tokens=tokens, latency_s=record.latency_s or 0.0)

    def _observe(self, unit: WorkUnit, completion: Completion) -> None:
        model = self._model_by_name[unit.model]
        if completion.error is not None:
            if completion.fatal and model.name not in self._succeeded:
                self._fatal_before_success[model.name] += 1
                if completion.error_status in ABORT_AT_ONCE or self._fatal_before_success[model.name] >= ABORT_AFTER_REJECTIONS:
                    # Nothing has worked for this model and the server says the request
                    # itself is wrong (unknown model, bad key, a rejected parameter): every
                    # other request would fail the same way. One rejected question (a prompt
                    # over the context window) is not enough to stop.
                    self._abort = RunAborted(f"model '{model.name}' ({model.model} on server '{model.server}'): {completion.error}")
                    raise self._abort
            if completion.fatal:
                self.progress.log(f"{unit.model} {unit.benchmark} {unit.item_id}: {completion.error}")
            return
        self._succeeded.add(model.name)
        if not model.thinking or model.name in self._saw_reasoning or completion.finish_reason == "length":
            return
        if completion.reasoning:
            self._saw_reasoning.add(model.name)
            return
        self._no_reasoning[model.name] += 1
        if self._no_reasoning[model.name] == NO_REASONING_WARN_AFTER:
            self._warn(
                f"model '{model.name}' is set to think, but its first {NO_REASONING_WARN_AFTER} answers "
                "came back with no reasoning: the server may ignore or misspell the thinking switch "
                f"({json.dumps((model.thinking_switch or self.config.server(model.server).thinking_switch).on)}); "
                "check with `qatcmp check`"
            )

    def _warn(self, message: str) -> None:
        self.summary.warnings.append(message)
        self.progress.log(f"WARNING: {message}")
