"""The server gate on its own: the adaptive limit's arithmetic, the outage wait, and the mask."""

from __future__ import annotations

import asyncio

import pytest

from qatcmp import redact
from qatcmp.concurrency import ServerDown, ServerGate


def test_congestion_halves_once_per_round_and_answers_raise_it_back():
    async def scenario():
        gate = ServerGate("s", 16)
        tickets = [await gate.acquire() for _ in range(16)]
        for ticket in tickets[2:]:
            gate.congested(ticket)  # one burst of refusals: one decrease, not fourteen
        assert gate.limit == 8 and gate.congestion_events == 1
        for ticket in tickets[2:]:
            gate.release(ticket)
        ticket = await gate.acquire()
        gate.congested(ticket)  # sent under the new limit: counts
        gate.release(ticket)
        assert gate.limit == 4
        for _ in range(4):  # a round of answers at limit 4 raises it by one
            ticket = await gate.acquire()
            gate.answered(ticket)
            gate.release(ticket)
        assert gate.limit == 5
        return gate

    gate = asyncio.run(scenario())
    assert gate.lowest_limit == 4


def test_the_limit_never_drops_below_what_the_server_visibly_answers_nor_below_1():
    async def scenario():
        gate = ServerGate("s", 8)
        tickets = [await gate.acquire() for _ in range(8)]
        for ticket in tickets[:5]:
            gate.first_token(ticket)  # the server is answering five
        gate.congested(tickets[7])
        assert gate.limit == 5
        one = ServerGate("t", 1)
        ticket = await one.acquire()
        one.congested(ticket)
        assert one.limit == 1

    asyncio.run(scenario())


def test_waiters_are_admitted_in_order_as_slots_free():
    async def scenario():
        gate = ServerGate("s", 2)
        order = []

        async def worker(i):
            ticket = await gate.acquire()
            order.append(i)
            await asyncio.sleep(0.01)
            gate.release(ticket)

        await asyncio.gather(*(worker(i) for i in range(6)))
        assert order == list(range(6)) and gate.in_flight == 0

    asyncio.run(scenario())


def test_an_outage_holds_every_request_until_the_probe_sees_the_server_again():
    async def scenario():
        up = asyncio.Event()

        async def probe():
            return up.is_set()

        gate = ServerGate("s", 4, after_failures=2, outage_wait=30, probe=probe)
        assert gate.connection_failed("refused") is False
        assert gate.connection_failed("refused") is True and gate.down
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0.7)
        assert not waiter.done()  # held while down
        up.set()
        ticket = await asyncio.wait_for(waiter, 20)
        assert not gate.down
        gate.release(ticket)
        await gate.aclose()

    asyncio.run(scenario())


def test_a_server_that_does_not_come_back_fails_the_waiters_with_server_down():
    async def scenario():
        async def probe():
            return False

        gate = ServerGate("box", 2, after_failures=1, outage_wait=0.8, probe=probe)
        gate.connection_failed("refused")
        with pytest.raises(ServerDown, match="server 'box' stopped answering .refused. and did not come back within 1 s"):
            await asyncio.wait_for(gate.acquire(), 10)
        with pytest.raises(ServerDown):
            await gate.acquire()  # and every later request at once

    asyncio.run(scenario())


def test_mask_covers_known_values_their_json_forms_and_credential_shapes():
    redact.clear()
    redact.register(["sk-abc123456", 'we"ird\\key', "ab"])
    assert redact.mask("auth=Bearer sk-abc123456!") == "auth=Bearer ***!"
    assert redact.mask('{"k": "we\\"ird\\\\key"}') == '{"k": "***"}'
    assert redact.mask("see http://bob:hunter22@host:8000/v1") == "see http://***@host:8000/v1"
    assert redact.mask("Authorization: Basic Ym9iOmh1bnRlcjIy") == "Authorization: Basic ***"
    assert redact.mask("ab stays: too short to be a secret") == "ab stays: too short to be a secret"
    assert redact.mask_obj({"a": ["x sk-abc123456"], "sk-abc123456": 1}) == {"a": ["x ***"], "***": 1}
    redact.clear()
