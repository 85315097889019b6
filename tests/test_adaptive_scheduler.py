"""BlockScheduler (the pull engine gated in blocks), pure: a step's requests are pulled by every
replica of their variant, the next step is planned only when every request of the step is
recorded (the provider sees exactly that step's records), nothing is handed out twice, a replica
that goes down hands its part of the block to the others, and a block left with no live server
ends the run instead of waiting forever."""

from __future__ import annotations

import random

from qatcmp.records import TranscriptRecord, Usage, utcnow
from qatcmp.replicas import BlockScheduler
from qatcmp.scheduler import Step, WorkUnit


def units(models_servers, items):
    return [WorkUnit(m, srv, "mmlu_pro", q, 0) for m, srv in models_servers for q in items]


def answered(unit: WorkUnit, tokens: int = 10) -> TranscriptRecord:
    now = utcnow()
    return TranscriptRecord(model=unit.model, benchmark=unit.benchmark, item_id=unit.item_id, sample=unit.sample,
                            server=unit.server, messages=[{"role": "user", "content": "q"}], request={}, content="a",
                            usage=Usage(completion_tokens=tokens), started_at=now, finished_at=now)


class Provider:
    """Steps given in advance; records what the scheduler handed back after each."""

    def __init__(self, steps):
        self.steps = list(steps)
        self.seen: list[list[tuple]] = []

    def __call__(self, finished):
        self.seen.append(sorted(r.key for r in finished))
        return self.steps.pop(0) if self.steps else None


def blocks(models, servers_of, n_blocks, size, order=None):
    return [Step(units=units([(m, servers_of[m][0]) for m in models], [f"q{k * size + i}" for i in range(size)]),
                 model_order=order or list(models)) for k in range(n_blocks)]


def drain(sched: BlockScheduler, rng: random.Random, down_after: dict[str, int] | None = None):
    """Random interleaving of pulls and completions over the servers; a server in down_after
    goes down after that many pulls (its in-flight units unanswered). Returns the answered
    units in completion order."""
    done: list[WorkUnit] = []
    flying = {s: [] for s in sched.servers()}
    finished: set[str] = set()
    pulls = dict.fromkeys(flying, 0)
    for _ in range(200_000):
        live = [s for s in flying if s not in finished]
        if not live:
            return done
        server = rng.choice(live)
        if down_after and pulls[server] >= down_after.get(server, 1 << 30):
            sched.server_down(server)
            flying[server].clear()
            finished.add(server)
            continue
        if flying[server] and rng.random() < 0.5:
            unit = flying[server].pop(rng.randrange(len(flying[server])))
            sched.record(unit, answered(unit))
            done.append(unit)
            continue
        batch = sched.next_batch(server)
        pulls[server] += 1
        if batch is None:
            assert not flying[server]
            finished.add(server)
        else:
            assert all(u.model in replicas_of(sched, server) for u in batch)
            flying[server].extend(batch)
    raise AssertionError("did not finish")


def replicas_of(sched: BlockScheduler, server: str) -> list[str]:
    return sched._engine._servers[server].eligible


def block_of(unit: WorkUnit, size: int) -> int:
    return int(unit.item_id[1:]) // size


def test_one_variant_on_two_replicas_each_block_once_over_both_and_blocks_in_order():
    servers_of = {"a": ["s1", "s2"]}
    for seed in range(10):
        steps = blocks(["a"], servers_of, 4, 6)
        provider = Provider(steps)
        sched = BlockScheduler(provider, ["a"], replicas=servers_of)
        done = drain(sched, random.Random(seed))
        assert sorted(u.key for u in done) == sorted(u.key for s in blocks(["a"], servers_of, 4, 6) for u in s.units)
        assert {u.server for u in done} == {"s1", "s2"}, seed
        assert [block_of(u, 6) for u in done] == sorted(block_of(u, 6) for u in done)  # k before k + 1
        # The provider saw each block's six records, then the end.
        assert [len(seen) for seen in provider.seen] == [0, 6, 6, 6, 6]


def test_every_variant_answers_block_k_before_any_starts_k_plus_one_over_shared_servers():
    servers_of = {"a": ["s1", "s2"], "b": ["s2", "s3"], "c": ["s3"]}
    for seed in range(10):
        sched = BlockScheduler(Provider(blocks(["a", "b", "c"], servers_of, 3, 5)), ["a", "b", "c"], replicas=servers_of)
        done = drain(sched, random.Random(seed))
        assert len(done) == len({u.key for u in done}) == 3 * 3 * 5
        assert [block_of(u, 5) for u in done] == sorted(block_of(u, 5) for u in done)
        assert all(u.server in servers_of[u.model] for u in done)


def test_a_replica_that_goes_down_mid_block_hands_its_part_to_the_other():
    servers_of = {"a": ["s1", "s2"], "b": ["s1", "s2"]}
    for seed in range(20):
        sched = BlockScheduler(Provider(blocks(["a", "b"], servers_of, 3, 8)), ["a", "b"], replicas=servers_of)
        done = drain(sched, random.Random(seed), down_after={"s1": 6})
        assert sorted(u.key for u in done) == sorted(u.key for s in blocks(["a", "b"], servers_of, 3, 8) for u in s.units)
        assert sched.unanswerable() == 0


def test_a_block_with_no_live_server_left_ends_the_run_and_is_reported():
    servers_of = {"a": ["s1"], "b": ["s2"]}
    provider = Provider(blocks(["a", "b"], servers_of, 2, 3))
    sched = BlockScheduler(provider, ["a", "b"], replicas=servers_of)
    first = sched.next_batch("s1")
    assert first and first[0].model == "a"
    sched.server_down("s1")
    assert sched.unanswerable() >= 1
    # s2 answers its part of block 1; then nothing can complete the block: None, not [] forever.
    for _ in range(3):
        (unit,) = sched.next_batch("s2")
        sched.record(unit, answered(unit))
    assert sched.next_batch("s2") is None
    assert len(provider.seen) == 1  # block 2 was never planned


def test_a_server_done_with_its_part_waits_and_the_next_block_keeps_its_model():
    # One server, two variants: A then B in block 1; block 2 in the reversed order starts
    # with B, the model it holds (one switch per block, not two).
    servers_of = {"a": ["s1"], "b": ["s1"]}
    steps = [Step(units=units([("a", "s1"), ("b", "s1")], ["q0", "q1"]), model_order=["a", "b"]),
             Step(units=units([("a", "s1"), ("b", "s1")], ["q2", "q3"]), model_order=["b", "a"])]
    provider = Provider(steps)
    sched = BlockScheduler(provider, ["a", "b"], replicas=servers_of)
    order = []
    while (batch := sched.next_batch("s1")) is not None:
        assert batch, "one server alone never waits on others"
        for unit in batch:
            order.append(unit.model)
            sched.record(unit, answered(unit))
    assert order == ["a", "a", "b", "b", "b", "b", "a", "a"]
    assert provider.seen[1] == sorted(u.key for u in steps[0].units)


def test_foreign_records_are_ignored_and_an_empty_first_step_ends_the_run():
    sched = BlockScheduler(Provider([Step(units=[], model_order=[])]), ["a"], replicas={"a": ["s1"]})
    assert sched.next_batch("s1") is None
    provider = Provider([Step(units=units([("a", "s1")], ["q1"]), model_order=["a"])])
    sched = BlockScheduler(provider, ["a"], replicas={"a": ["s1"]})
    (unit,) = sched.next_batch("s1")
    stray = WorkUnit("zz", "s1", "mmlu_pro", "q9", 0)
    sched.record(stray, answered(stray))  # not part of the step
    assert sched.next_batch("s1") == []
    sched.record(unit, answered(unit))
    assert sched.next_batch("s1") is None
    assert provider.seen[-1] == [unit.key]
