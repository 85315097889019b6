"""Placement, pure: how many models a server holds at once (servers.yaml, else what the server
reports), balance by expected answer tokens rather than question counts, and the expected
length of a question from answers on disk and from requests still in flight, and which variant
each server takes first when variants outnumber servers."""

from __future__ import annotations

import pytest

from qatcmp.config import parse_config
from qatcmp.errors import ConfigError
from qatcmp.preflight import resident_models
from qatcmp.records import ServerInfo, TranscriptRecord, Usage, utcnow
from qatcmp.replicas import BlockScheduler, ReplicaScheduler
from qatcmp.scheduler import Step, WorkUnit


def units(model: str, server: str, items) -> list[WorkUnit]:
    return [WorkUnit(model, server, "mmlu_pro", q, 0) for q in items]


def answered(model: str, item: str, tokens: int, latency: float | None = None) -> TranscriptRecord:
    now = utcnow()
    return TranscriptRecord(model=model, benchmark="mmlu_pro", item_id=item, sample=0, server="s1",
                            messages=[{"role": "user", "content": "q"}], request={}, content="a",
                            usage=Usage(completion_tokens=tokens), latency_s=latency, started_at=now, finished_at=now)


OMLX_STATUS = {"models": [
    {"id": "gemma-4bit", "loaded": True, "estimated_size": 15_000_000_000},
    {"id": "gemma-8bit", "loaded": True, "estimated_size": 28_000_000_000},
    {"id": "gemma-6bit", "loaded": False},
    {"id": "other", "loaded": True},
]}


def test_models_held_at_once_come_from_servers_yaml_else_from_what_the_server_reports():
    info = ServerInfo(base_url="http://x", model_status=OMLX_STATUS)
    run_ids = ["gemma-4bit", "gemma-8bit", "gemma-6bit"]
    assert resident_models(None, info, run_ids) == 2  # two of the run's models loaded together
    assert resident_models(1, info, run_ids) == 1  # servers.yaml wins (a user who knows better)
    assert resident_models(3, ServerInfo(base_url="http://x"), run_ids) == 3
    assert resident_models(None, ServerInfo(base_url="http://x"), run_ids) == 1  # mlx-lm says nothing: one
    assert resident_models(None, info, ["gemma-6bit"]) == 1  # a model of another run is not ours
    hostile = ServerInfo(base_url="http://x", model_status={"models": [{"id": "gemma-4bit", "loaded": "yes"},
                                                                      {"id": "gemma-8bit", "loaded": 1}, "junk"]})
    assert resident_models(None, hostile, run_ids) == 1  # only a literal true counts


def test_max_loaded_models_in_servers_yaml_is_read_and_checked():
    text = ("servers:\n  - {name: mac1, base_url: 'http://mac1:8000/v1', max_loaded_models: 2}\n"
            "models:\n  - {name: a, server: mac1, model: m}\n")
    assert parse_config(text).server("mac1").max_loaded_models == 2
    assert parse_config(text.replace(", max_loaded_models: 2", "")).server("mac1").max_loaded_models is None
    with pytest.raises(ConfigError):
        parse_config(text.replace("max_loaded_models: 2", "max_loaded_models: 0"))


def test_a_server_choosing_a_variant_weighs_expected_tokens_not_question_counts():
    # a: ten questions whose answers were short; b: four whose answers were long. A server
    # picking a variant takes b (more work left), and so does the second (3 x 5000 tokens
    # shared by two servers is still more than 10 x 100).
    history = ([answered("x", f"a{i}", 100) for i in range(10)] + [answered("x", f"b{i}", 5000) for i in range(4)])
    work = units("a", "s1", [f"a{i}" for i in range(10)]) + units("b", "s1", [f"b{i}" for i in range(4)])
    sched = ReplicaScheduler(work, ["a", "b"], replicas={"a": ["s1", "s2"], "b": ["s1", "s2"]}, history=history)
    assert sched.next_batch("s1")[0].model == "b"
    assert sched.next_batch("s2")[0].model == "b"
    # By question count alone, a (10) would have come first.
    plain = ReplicaScheduler(work, ["a", "b"], replicas={"a": ["s1", "s2"], "b": ["s1", "s2"]})
    assert plain.next_batch("s1")[0].model == "a"


def test_a_resumed_run_starts_with_the_questions_that_were_long_on_disk():
    history = [answered("other", "q0", 50), answered("other", "q1", 9000), answered("other", "q2", 400)]
    sched = ReplicaScheduler(units("a", "s1", ["q0", "q1", "q2"]), ["a"], history=history)
    taken = []
    while batch := sched.next_batch("s1"):
        taken.append(batch[0].item_id)
    assert taken == ["q1", "q2", "q0"]


def test_a_question_nobody_answered_yet_counts_as_its_benchmarks_typical_length():
    # HumanEval answers ran long in this run, MMLU-Pro ones short: of two unseen questions,
    # the HumanEval one starts first.
    history = [answered("x", f"m{i}", 200) for i in range(5)]
    history += [answered("x", f"h{i}", 4000).model_copy(update={"benchmark": "humaneval"}) for i in range(2)]
    work = [WorkUnit("a", "s1", "mmlu_pro", "m9", 0), WorkUnit("a", "s1", "humaneval", "h9", 0)]
    sched = ReplicaScheduler(work, ["a"], history=history)
    assert [sched.next_batch("s1")[0].benchmark for _ in range(2)] == ["humaneval", "mmlu_pro"]
    assert [ReplicaScheduler(work, ["a"]).next_batch("s1")[0].benchmark] == ["mmlu_pro"]  # nothing known: run order


def test_a_request_running_long_elsewhere_counts_as_a_long_answer():
    # Variant a runs q0..q3 on s1; q2 is still running after 100 s while the others came back
    # (300-500 tokens in 30 s each): b, on s2, starts with q2 rather than q1 (the longest known).
    lengths = {"q0": 300, "q1": 500, "q3": 400}
    work = units("a", "s1", ["q0", "q1", "q2", "q3"]) + units("b", "s2", ["q0", "q1", "q2", "q3"])

    def first_for_b(elapsed: float) -> str:
        now = [0.0]
        sched = ReplicaScheduler(work, ["a", "b"], clock=lambda: now[0], chunk=4)
        out = sched.next_batch("s1")
        assert [u.item_id for u in out] == ["q0", "q1", "q2", "q3"]
        for unit in out:
            if unit.item_id in lengths:
                sched.record(unit, answered("a", unit.item_id, lengths[unit.item_id], latency=30.0))
        now[0] = elapsed
        sched._chunk = 1
        return sched.next_batch("s2")[0].item_id

    assert first_for_b(100.0) == "q2"  # 100 s at ~13 tokens/s: over 1000 tokens so far
    assert first_for_b(1.0) == "q1"  # just started: the average guess (400) is below q1's 500


def test_a_one_model_server_joins_a_shared_variant_at_the_start_but_not_a_small_rest_when_leaving_its_own():
    # Two replicas of one variant with only 3 questions: both take part from the start (no
    # switch is saved by staying idle) ...
    sched = ReplicaScheduler(units("a", "s1", ["q0", "q1", "q2"]), ["a"], replicas={"a": ["s1", "s2"]})
    assert sched.next_batch("s1") and sched.next_batch("s2")
    # ... but a server leaving its own variant does not switch for a small rest of another's.
    work = units("a", "s1", [f"q{i}" for i in range(5)]) + units("b", "s2", [f"q{i}" for i in range(5)])
    sched = ReplicaScheduler(work, ["a", "b"], replicas={"a": ["s1"], "b": ["s1", "s2"]})
    for _ in range(3):
        assert sched.next_batch("s2")[0].model == "b"
    mine = [sched.next_batch("s1")[0] for _ in range(5)]
    assert {u.model for u in mine} == {"a"}
    for unit in mine:
        sched.record(unit, answered("a", unit.item_id, 10))
    assert sched.next_batch("s1") == []  # b has 2 left and s2 on it: not worth s1's switch
    assert len(sched.next_batch("s2")) == 1


@pytest.mark.parametrize("held", [1, 2])
def test_a_server_holding_two_models_starts_the_next_variant_while_the_last_answers_finish(tmp_path, held):
    # Against a real local HTTP server: with max_loaded_models 2 the runner's scheduler starts
    # variant b while a's last requests are still out; with 1, b waits for all of a.
    from misbehaving_server import MisbehavingServer
    from overlap_run import second_variant_starts_early

    with MisbehavingServer(models=["m1", "m2"], delay=0.15) as server:
        assert second_variant_starts_early(tmp_path, server.base_url, f"    max_loaded_models: {held}\n") is (held == 2)


@pytest.mark.parametrize("same_weights", [True, False])
def test_variants_on_the_same_weights_need_no_switch_on_a_one_model_server(tmp_path, same_weights):
    # Against a real local HTTP server holding one model: a and b with the same model id (other
    # sampling) run back to back without a switch, b starting while a's last answers finish,
    # and the manifest counts no switch; with their own model ids, b waits and one is counted.
    from misbehaving_server import MisbehavingServer
    from overlap_run import second_variant_starts_early
    from qatcmp.rundir import RunDir

    second_id = "m1" if same_weights else "m2"
    with MisbehavingServer(models=["m1", "m2"], delay=0.15) as server:
        early = second_variant_starts_early(
            tmp_path, server.base_url, "    max_loaded_models: 1\n",
            second_model=f"{{name: b, server: one, model: {second_id}, sampling: {{temperature: 0.7}}}}")
        sent = [(r["body"].get("model"), r["body"].get("temperature")) for r in server.requests]
    assert sorted(sent).count(("m1", 0.7)) == (9 if same_weights else 0)  # b's own sampling went out
    assert early is same_weights
    assert RunDir(tmp_path / "run").read_manifest().model_switches == (0 if same_weights else 1)


def first_variants(sched, servers: list[str], pulls: int = 2) -> dict[str, set[str]]:
    """The variants each server takes in its first pulls (each pull is one free slot)."""
    taken: dict[str, set[str]] = {s: set() for s in servers}
    for _ in range(pulls):
        for server in servers:
            taken[server].update(u.model for u in sched.next_batch(server) or [])
    return taken


@pytest.mark.parametrize("resident, surplus_first, shared_first", [
    (1, False, False),  # a fixed run on one-model servers: each server starts on a variant of its own
    (1, True, True),    # what an adaptive run's blocks ask for
    (2, False, True),   # a server holding two models always shares the surplus first
])
def test_the_variant_that_cannot_have_a_server_of_its_own_goes_first_on_every_server(resident, surplus_first,
                                                                                      shared_first):
    servers = ["s0", "s1", "s2"]
    order = ["a", "b", "c", "d"]  # four variants, three servers: the last one must share
    work = [u for i, m in enumerate(order) for u in units(m, servers[i % 3], [f"q{k}" for k in range(12)])]
    sched = ReplicaScheduler(work, order, replicas={m: servers for m in order},
                             resident={s: resident for s in servers}, surplus_first=surplus_first)
    taken = first_variants(sched, servers)
    if shared_first:
        assert taken == {s: {"d"} for s in servers}
    else:
        assert "d" not in set().union(*taken.values())
        assert sorted(next(iter(t)) for t in taken.values()) == ["a", "b", "c"]
        assert all(len(t) == 1 for t in taken.values())


def test_an_adaptive_block_on_one_model_servers_shares_the_surplus_first_then_each_server_takes_its_own():
    servers = ["s0", "s1", "s2"]
    order = ["a", "b", "c", "d"]
    step = Step(units=[WorkUnit(m, servers[i % 3], "mmlu_pro", f"q{k}", 0) for i, m in enumerate(order)
                       for k in range(12)], model_order=order)
    steps = iter([step])
    sched = BlockScheduler(lambda finished: next(steps, None), order, replicas={m: servers for m in order},
                           resident={s: 1 for s in servers})
    handed: list[WorkUnit] = []
    next_own: dict[str, str] = {}
    while len(next_own) < len(servers):
        for server in servers:
            for unit in sched.next_batch(server) or []:
                handed.append(unit)
                if unit.model != "d":
                    next_own.setdefault(server, unit.model)
                sched.record(unit, answered(unit.model, unit.item_id, 100))
    # Every server started on the shared variant, all of it went out before any other, and
    # then each server went to a variant of its own (no two on one).
    assert {u.server for u in handed[:3]} == set(servers) and {u.model for u in handed[:3]} == {"d"}
    first_other = next(i for i, u in enumerate(handed) if u.model != "d")
    assert [u.model for u in handed[:first_other]] == ["d"] * 12
    assert sorted(next_own.values()) == ["a", "b", "c"]
    assert len({u.key for u in handed}) == len(handed)  # nothing asked twice
