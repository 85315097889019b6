"""ReplicaScheduler, pure: every unit handed out once, a downed replica's work goes back,
affinity and balance across variants, longest-first from other variants' answer lengths."""

from __future__ import annotations

import random

from qatcmp.records import TranscriptRecord, Usage, utcnow
from qatcmp.replicas import ReplicaScheduler
from qatcmp.scheduler import WorkUnit


def units(model: str, server: str, n: int) -> list[WorkUnit]:
    return [WorkUnit(model, server, "mmlu_pro", f"q{i}", 0) for i in range(n)]


def answered(unit: WorkUnit, tokens: int = 10) -> TranscriptRecord:
    now = utcnow()
    return TranscriptRecord(model=unit.model, benchmark=unit.benchmark, item_id=unit.item_id, sample=unit.sample,
                            server=unit.server, messages=[{"role": "user", "content": "q"}], request={}, content="a",
                            usage=Usage(completion_tokens=tokens), started_at=now, finished_at=now)


def drain(scheduler: ReplicaScheduler, rng: random.Random, down_after: dict[str, int] | None = None) -> list[WorkUnit]:
    """Random interleaving of pulls and completions; a server in down_after goes down after
    that many pulls (its in-flight units unanswered)."""
    done: list[WorkUnit] = []
    flying: dict[str, list[WorkUnit]] = {s: [] for s in scheduler.servers()}
    finished: set[str] = set()
    pulls = {s: 0 for s in flying}
    for _ in range(100_000):
        live = [s for s in flying if s not in finished]
        if not live:
            return done
        server = rng.choice(live)
        if down_after and pulls[server] >= down_after.get(server, 1 << 30):
            scheduler.server_down(server)
            flying[server].clear()
            finished.add(server)
            continue
        if flying[server] and rng.random() < 0.5:
            unit = flying[server].pop(rng.randrange(len(flying[server])))
            scheduler.record(unit, answered(unit))
            done.append(unit)
            continue
        batch = scheduler.next_batch(server)
        pulls[server] += 1
        if batch is None:
            assert not flying[server]
            finished.add(server)
        else:
            flying[server].extend(batch)
    raise AssertionError("did not finish")


def test_one_variant_on_two_replicas_every_unit_once_and_both_replicas_answer():
    work = units("a", "s1", 50)
    scheduler = ReplicaScheduler(work, ["a"], replicas={"a": ["s1", "s2"]})
    done = drain(scheduler, random.Random(1))
    assert sorted(u.key for u in done) == sorted(u.key for u in work)
    assert {u.server for u in done} == {"s1", "s2"}


def test_a_replica_that_goes_down_hands_its_work_to_the_other():
    for seed in range(20):
        work = units("a", "s1", 40)
        scheduler = ReplicaScheduler(work, ["a"], replicas={"a": ["s1", "s2"]})
        done = drain(scheduler, random.Random(seed), down_after={"s1": 5})
        assert sorted(u.key for u in done) == sorted(u.key for u in work), seed
        assert scheduler.unanswerable() == 0


def test_work_of_a_variant_with_no_live_server_left_is_reported_not_lost():
    scheduler = ReplicaScheduler(units("a", "s1", 5), ["a"])
    batch = scheduler.next_batch("s1")
    assert batch and len(batch) == 1
    assert scheduler.server_down("s1") == batch
    assert scheduler.next_batch("s1") is None
    assert scheduler.unanswerable() == 5


def test_servers_spread_over_variants_and_stay_on_theirs():
    work = units("a", "s1", 20) + units("b", "s1", 20)
    scheduler = ReplicaScheduler(work, ["a", "b"], replicas={"a": ["s1", "s2"], "b": ["s1", "s2"]})
    first = scheduler.next_batch("s1")
    second = scheduler.next_batch("s2")
    assert first and second and first[0].model != second[0].model  # balance
    assert all(scheduler.next_batch("s1")[0].model == first[0].model for _ in range(5))  # affinity


def test_a_one_model_server_finishes_a_variant_before_switching_unless_it_holds_two():
    work = units("a", "s1", 2) + units("b", "s1", 2)
    for resident, expect_switch in ((1, False), (2, True)):
        scheduler = ReplicaScheduler(work, ["a", "b"], resident={"s1": resident})
        scheduler.next_batch("s1"), scheduler.next_batch("s1")  # all of a, in flight
        third = scheduler.next_batch("s1")
        assert (bool(third) and third[0].model == "b") is expect_switch


def test_later_variants_start_with_the_questions_that_were_long_before():
    work = units("a", "s1", 6) + units("b", "s1", 6)
    scheduler = ReplicaScheduler(work, ["a", "b"])
    lengths = {"q0": 5, "q1": 50, "q2": 7, "q3": 900, "q4": 3, "q5": 60}
    for _ in range(6):
        (unit,) = scheduler.next_batch("s1")
        scheduler.record(unit, answered(unit, lengths[unit.item_id]))
    order = []
    while batch := scheduler.next_batch("s1"):
        order.append(batch[0].item_id)
        scheduler.record(batch[0], answered(batch[0], lengths[batch[0].item_id]))
    assert order == sorted(lengths, key=lengths.get, reverse=True)


def test_a_replica_in_an_outage_lends_its_work_and_may_ask_again_when_back():
    scheduler = ReplicaScheduler(units("a", "s1", 3), ["a"], replicas={"a": ["s1", "s2"]})
    lent = scheduler.next_batch("s1") + scheduler.next_batch("s1")
    assert [u.server for u in lent] == ["s1", "s1"]
    assert scheduler.give_back("s1") == lent
    taken = [scheduler.next_batch("s2")[0] for _ in range(3)]
    assert sorted(u.key for u in taken) == sorted(u.key for u in units("a", "s1", 3))
    assert all(u.server == "s2" for u in taken)
    assert scheduler.may_get_more("s1")  # s2 may still go down: s1 stays ready
    for unit in taken:
        scheduler.record(unit, answered(unit))
    assert not scheduler.may_get_more("s1") and scheduler.next_batch("s1") is None


def test_variants_on_the_same_weights_are_no_switch_for_a_one_model_server():
    # a and b share a model id (thinking on/off, other sampling): with a's last request still
    # in flight, a one-model server goes on with b at once; with their own weights it waits.
    work = units("a", "s1", 2) + units("b", "s1", 2)
    for weights, expect_now in (({"a": "m", "b": "m"}, True), ({"a": "m", "b": "n"}, False), (None, False)):
        scheduler = ReplicaScheduler(work, ["a", "b"], resident={"s1": 1}, weights=weights)
        scheduler.next_batch("s1"), scheduler.next_batch("s1")  # all of a, in flight
        third = scheduler.next_batch("s1")
        assert (bool(third) and third[0].model == "b") is expect_now, weights


def test_a_server_done_with_its_variant_stays_on_the_weights_it_holds():
    # s1 starts on a (the most work) and finishes it; c (other weights, more work left than b)
    # would win on balance alone, but b shares a's weights: s1 takes b, no load.
    work = units("a", "s1", 10) + units("b", "s1", 3) + units("c", "s1", 8)
    for weights, expect in (({"a": "m", "b": "m", "c": "n"}, "b"), (None, "c")):
        scheduler = ReplicaScheduler(work, ["a", "b", "c"], weights=weights)
        mine = [scheduler.next_batch("s1")[0] for _ in range(10)]
        assert {u.model for u in mine} == {"a"}
        for unit in mine:
            scheduler.record(unit, answered(unit))
        assert scheduler.next_batch("s1")[0].model == expect, weights


def test_joining_a_variant_others_run_costs_no_switch_on_the_same_weights():
    # b (2 left, s2 on it) is below the join threshold for a server switching weights, not for
    # one that already holds b's weights.
    work = units("a", "s1", 5) + units("b", "s2", 5)
    for weights, expect_join in (({"a": "m", "b": "m"}, True), (None, False)):
        scheduler = ReplicaScheduler(work, ["a", "b"], replicas={"a": ["s1"], "b": ["s1", "s2"]}, weights=weights)
        for _ in range(3):
            assert scheduler.next_batch("s2")[0].model == "b"
        mine = [scheduler.next_batch("s1")[0] for _ in range(5)]
        assert {u.model for u in mine} == {"a"}
        for unit in mine:
            scheduler.record(unit, answered(unit))
        batch = scheduler.next_batch("s1")
        assert (bool(batch) and batch[0].model == "b") is expect_join, weights


def test_shared_weights_still_hand_out_every_unit_once_through_outages():
    for seed in range(20):
        work = units("a", "s1", 15) + units("b", "s1", 15) + units("c", "s2", 15)
        scheduler = ReplicaScheduler(work, ["a", "b", "c"], replicas={m: ["s1", "s2"] for m in "abc"},
                                     weights={"a": "m", "b": "m", "c": "n"}, resident={"s1": 1, "s2": 1})
        done = drain(scheduler, random.Random(seed), down_after={"s1": 7} if seed % 2 else None)
        assert sorted(u.key for u in done) == sorted(u.key for u in work), seed
