"""The poll gate and first-poll pacer of the trigger's event loop (pure asyncio, no I/O)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

from airflow_provider_tfy.triggers.pacing import FirstPollPacer, PollGate


async def _through_gate(gate: PollGate, n: int) -> tuple[list[int], Counter[int]]:
    """n polls due in one iteration: the order they pass and how many pass per iteration."""
    loop = asyncio.get_running_loop()
    iteration = [0]

    def count() -> None:
        iteration[0] += 1
        loop.call_soon(count)

    count()
    order: list[int] = []
    per_iteration: Counter[int] = Counter()

    async def poll(index: int) -> None:
        await gate.turn()
        order.append(index)
        per_iteration[iteration[0]] += 1

    await asyncio.gather(*(poll(i) for i in range(n)))
    return order, per_iteration


def test_polls_due_together_pass_a_tick_s_share_per_iteration_in_order() -> None:
    gate = PollGate()
    order, per_iteration = asyncio.run(_through_gate(gate, 200))
    assert order == list(range(200))
    assert max(per_iteration.values()) == PollGate.per_tick
    assert len(per_iteration) >= 200 / PollGate.per_tick


def test_a_lone_poll_passes_at_once() -> None:
    async def lone() -> bool:
        turn = asyncio.ensure_future(PollGate().turn())
        await asyncio.sleep(0)
        return turn.done()

    assert asyncio.run(lone())


def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    async def scenario() -> list[int]:
        gate = PollGate()
        passed: list[int] = []

        async def poll(index: int) -> None:
            await gate.turn()
            passed.append(index)

        tasks = [asyncio.ensure_future(poll(i)) for i in range(PollGate.per_tick + 2)]
        await asyncio.sleep(0)  # the first tick's share passed; two wait in the queue
        tasks[PollGate.per_tick].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return passed

    passed = asyncio.run(scenario())
    assert passed == [*range(PollGate.per_tick), PollGate.per_tick + 1]


def test_first_polls_of_a_batch_are_paced_and_never_past_the_interval() -> None:
    async def delays(n: int, interval: float) -> tuple[list[float], list[float]]:
        """The delays, and the loop times they end at (the slots)."""
        loop = asyncio.get_running_loop()
        pacer = FirstPollPacer()
        delays, slots = [], []
        for _ in range(n):
            now = loop.time()
            delays.append(pacer.delay(interval, deadline=float("inf")))
            slots.append(now + delays[-1])
        return delays, slots

    paced, slots = asyncio.run(delays(100, 5.0))
    assert paced[0] == 0.0  # a lone trigger, or the first of a batch, polls at once
    # One slot each, 1 ms apart.
    assert all(b - a >= FirstPollPacer.pace * 0.9 for a, b in itertools.pairwise(slots))
    spread, _ = asyncio.run(delays(3000, 1.0))  # more than fits one interval at 1 ms apart
    assert max(spread) <= 1.0
