"""Leaving a variant early for one nobody has started (qatcmp/replica_tail.py), pure: when a
one-model server leaves, what it takes while its last requests finish, when it does not leave,
and, through bench/bench_schedule.py's simulated servers, that a run with more variants than
one-model servers still asks everything exactly once and ends sooner."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from qatcmp.records import TranscriptRecord, Usage, utcnow
from qatcmp.replicas import ReplicaScheduler
from qatcmp.scheduler import WorkUnit

SERVERS = ["s0", "s1", "s2"]


def answered(model: str, item: str, tokens: int, latency: float = 10.0, server: str = "s0") -> TranscriptRecord:
    now = utcnow()
    return TranscriptRecord(model=model, benchmark="mmlu_pro", item_id=item, sample=0, server=server,
                            messages=[{"role": "user", "content": "q"}], request={}, content="a",
                            usage=Usage(completion_tokens=tokens), latency_s=latency, started_at=now, finished_at=now)


def setting(*, resident: int = 1, variants: str = "abcd", early_leave: bool = True):
    """Variants a, b, c: 250 short questions each (100 tokens); d: one question known to be long
    (20,000 tokens, answered so by a variant of another run) and three short ones. Answers come
    at 10 tokens/s per request. Three one-model servers start a, b and c; each finishes 4."""
    now = [0.0]
    history = [answered("old", f"x{i}", 100) for i in range(250)] + [answered("old", "d0", 20_000, 2000.0)]
    history += [answered("old", f"d{i}", 100) for i in range(1, 4)]
    work = [WorkUnit(m, "s0", "mmlu_pro", f"x{i}", 0) for m in variants if m != "d" for i in range(250)]
    if "d" in variants:
        work += [WorkUnit("d", "s0", "mmlu_pro", f"d{i}", 0) for i in range(4)]
    sched = ReplicaScheduler(work, list(variants), replicas={m: SERVERS for m in variants},
                             resident={s: resident for s in SERVERS}, history=history, clock=lambda: now[0],
                             early_leave=early_leave)
    for server in SERVERS:
        batch = [sched.next_batch(server)[0] for _ in range(4)]
        if resident == 1:
            assert {u.model for u in batch} == {"abc"[SERVERS.index(server)]}
        now[0] = 10.0
        for unit in batch:
            sched.record(unit, answered(unit.model, unit.item_id, 100, server=server))
    now[0] = 20.0  # the leave is weighed every few seconds, not at every pull
    return sched, now


def test_a_one_model_server_leaves_its_variant_early_for_one_nobody_started():
    # 3 x 246 questions x 100 tokens and d at the 60 tokens/s seen: under 1600 s of work left, but
    # d's long question takes 2000 s: if d waited for a server to finish, it would end the run
    # alone. The server that can switch soonest (none has anything in flight: the first) goes
    # to d now, leaving the rest of its variant to the others, longest question first.
    sched, _ = setting()
    first = sched.next_batch("s0")
    assert [(u.model, u.item_id) for u in first] == [("d", "d0")]
    assert sched.next_batch("s1")[0].model == "b" and sched.next_batch("s2")[0].model == "c"
    assert len(sched._pool["a"]) == 246  # a's rest stays in the pool for whoever is free first
    # Without the early leave, s0 stays on a.
    plain, _ = setting(early_leave=False)
    assert plain.next_batch("s0")[0].model == "a"


def test_a_leaving_server_fills_slots_only_with_questions_that_end_before_its_last_request():
    sched, now = setting()
    sched._early_leave = False  # each server takes one more question before the leave is weighed
    flying = {server: sched.next_batch(server)[0] for server in SERVERS}
    # s0's question turns out to be 1100 tokens long (110 s), s1's and s2's 5000: s0 can
    # switch soonest.
    for server, tokens in (("s0", 1100), ("s1", 5000), ("s2", 5000)):
        sched.lengths.learn(answered("old", flying[server].item_id, tokens, tokens / 10))
    sched._early_leave = True
    batch = sched.next_batch("s0")
    assert sched._servers["s0"].leaving_for == "d"
    assert [u.model for u in batch] == ["a"]  # a 100-token question ends before its 1100-token one
    for unit in sched._pool["a"]:  # now every question left of a is longer than what s0 waits for
        sched.lengths.learn(answered("old", unit.item_id, 5000, 500.0))
    assert sched.next_batch("s0") == []  # it waits for its last requests (one model at a time)
    for unit, _ in list(sched._servers["s0"].out.values()):
        sched.record(unit, answered(unit.model, unit.item_id, 100))
    assert [u.item_id for u in sched.next_batch("s0")] == ["d0"]  # then loads d: its long one first


def test_no_early_leave_on_two_model_servers_or_when_every_variant_has_a_server():
    # Two-model servers start the next variant while the last answers finish anyway (and
    # share the surplus variant first); with three variants each has a server of its own.
    for sched, _ in (setting(resident=2), setting(variants="abc")):
        for _ in range(20):
            for server in SERVERS:
                sched.next_batch(server)
        assert all(state.leaving_for is None for state in sched._servers.values())
    sched, _ = setting(variants="abc")
    assert sched.next_batch("s0")[0].model == "a"


def _bench():
    path = Path(__file__).resolve().parent.parent / "bench" / "bench_schedule.py"
    spec = importlib.util.spec_from_file_location("bench_schedule", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_schedule"] = module
    spec.loader.exec_module(module)
    return module


def test_four_variants_on_three_one_model_servers_every_request_once_and_sooner():
    # The bench's simulated continuous-batching servers (loads only with nothing in flight,
    # one model at a time) driving the runner's scheduler, over eight workloads: every request
    # is answered exactly once, and in all the runs end sooner than without the early leave.
    bench = _bench()
    model = bench.ServerModel(resident=1)
    servers, order = ["s0", "s1", "s2"], [f"v{v}" for v in range(4)]
    total = {True: 0.0, False: 0.0}
    for seed in range(1, 9):
        for early in (True, False):
            bench.LENGTHS = lengths = bench.make_workload(4, 100, seed)
            clock = bench.SimClock()
            sched = ReplicaScheduler(bench.units_for(lengths, 4, servers), order,
                                     replicas={m: servers for m in order}, resident={s: 1 for s in servers},
                                     clock=clock, early_leave=early)
            seen = []
            record = sched.record
            sched.record = lambda unit, rec, record=record, seen=seen: (seen.append(unit.key), record(unit, rec))
            span, _ = bench.simulate(sched, lengths, model, clock)
            total[early] += span
            assert sorted(seen) == sorted((m, "mmlu_pro", q, 0) for m, q in lengths), (seed, early)
    assert total[True] < 0.99 * total[False]


def holding_setting(replicas: dict[str, list[str]]):
    """Question "long" known to take 20,000 tokens (10 tokens/s per request), 40 short ones of
    100 tokens; s0 takes the long one first, then both servers answer 8 short ones in 10 s."""
    now = [0.0]
    history = [answered("old", "long", 20_000, 2000.0)] + [answered("old", f"x{i}", 100) for i in range(40)]
    work = [WorkUnit(m, servers[0], "mmlu_pro", q, 0) for m, servers in replicas.items()
            for q in ["long"] + [f"x{i}" for i in range(40)]]
    sched = ReplicaScheduler(work, list(replicas), replicas=replicas, resident={"s0": 1, "s1": 1},
                             history=history, clock=lambda: now[0])
    long_one = sched.next_batch("s0")[0]
    assert long_one.item_id == "long"
    shorts = [unit for _ in range(4) for server in ("s0", "s1") for unit in sched.next_batch(server)]
    now[0] = 10.0
    for unit in shorts:
        sched.record(unit, answered(unit.model, unit.item_id, 100, server=unit.server))
    now[0] = 20.0
    return sched, long_one, now


def test_a_server_whose_request_ends_the_run_takes_nothing_new_while_another_can():
    # About 3,000 tokens of short questions are left at 80 tokens/s: some 40 s; the long
    # question still needs some 2,000 s. s0 takes nothing beside it, so it runs faster; s1
    # takes the short ones. Once the long one is answered, s0 takes work again.
    sched, long_one, now = holding_setting({"a": ["s0", "s1"]})
    assert sched.next_batch("s0") == []
    assert sched.next_batch("s1")[0].model == "a"
    assert len(sched._servers["s0"].out) == 1  # only the long one
    sched.record(long_one, answered("a", "long", 20_000, 2000.0, server="s0"))
    now[0] = 30.0
    assert sched.next_batch("s0")[0].model == "a"


def test_no_holding_back_when_no_other_server_can_take_the_work_or_in_adaptive_blocks():
    # a only on s0 (b on s1): holding back would only idle s0's slots.
    sched, _, _ = holding_setting({"a": ["s0"], "b": ["s1"]})
    assert sched.next_batch("s0")[0].model == "a"
    sched, _, _ = holding_setting({"a": ["s0", "s1"]})
    sched._early_leave = False  # what an adaptive run's blocks use (measured: slower blocks)
    assert sched.next_batch("s0")[0].model == "a"
