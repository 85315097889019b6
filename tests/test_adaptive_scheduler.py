"""BlockScheduler: a step's requests, one batch per model in the step's order; a server that
has finished its part of a step waits (empty batch) until every request of the step is
recorded; then the provider sees exactly that step's records and plans the next."""

from __future__ import annotations

from qatcmp.scheduler import BlockScheduler, Step, WorkUnit


def units(models_servers, items):
    return [WorkUnit(m, srv, "mmlu_pro", q, 0) for m, srv in models_servers for q in items]


class Provider:
    def __init__(self, steps):
        self.steps = list(steps)
        self.seen = []

    def __call__(self, finished):
        self.seen.append(sorted(r for r in finished))
        return self.steps.pop(0) if self.steps else None


def test_batches_follow_the_step_order_and_servers_wait_for_the_step_to_end():
    step1 = Step(units=units([("a", "s1"), ("b", "s1"), ("c", "s2")], ["q1", "q2"]), model_order=["b", "a", "c"])
    step2 = Step(units=units([("a", "s1"), ("c", "s2")], ["q3"]), model_order=["c", "a"])
    provider = Provider([step1, step2])
    sched = BlockScheduler(["s1", "s2"], provider)
    first = sched.next_batch("s1")
    assert [u.model for u in first] == ["b", "b"]
    second = sched.next_batch("s1")
    assert [u.model for u in second] == ["a", "a"]
    other = sched.next_batch("s2")
    assert [u.model for u in other] == ["c", "c"]
    for unit in first + second:
        sched.record(unit, unit.key)
    # s1 is done with step 1, s2's requests are still out: wait, do not plan ahead.
    assert sched.next_batch("s1") == []
    assert len(provider.seen) == 1
    for unit in other:
        sched.record(unit, unit.key)
    nxt = sched.next_batch("s1")
    assert [(u.model, u.item_id) for u in nxt] == [("a", "q3")]
    assert len(provider.seen[-1]) == 6  # exactly step 1's records
    batch = sched.next_batch("s2")
    assert [(u.model, u.item_id) for u in batch] == [("c", "q3")]
    sched.record(nxt[0], nxt[0].key)
    assert sched.next_batch("s2") == []  # its own request is still out
    sched.record(batch[0], batch[0].key)
    assert sched.next_batch("s2") is None and sched.next_batch("s1") is None
    assert provider.seen[-1] == sorted([nxt[0].key, batch[0].key])


def test_an_empty_first_step_ends_the_run_and_foreign_records_are_ignored():
    sched = BlockScheduler(["s1"], Provider([Step(units=[], model_order=[])]))
    assert sched.next_batch("s1") is None
    provider = Provider([Step(units=units([("a", "s1")], ["q1"]), model_order=["a"])])
    sched = BlockScheduler(["s1"], provider)
    (unit,) = sched.next_batch("s1")
    sched.record(WorkUnit("zz", "s1", "mmlu_pro", "q9", 0), "stray")  # not part of the step
    assert sched.next_batch("s1") == []
    sched.record(unit, unit.key)
    assert sched.next_batch("s1") is None
    assert provider.seen[-1] == [unit.key]
