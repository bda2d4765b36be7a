"""The poll gate and first-poll pacer of the trigger's event loop (pure asyncio, no I/O)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

from airflow_provider_tfy.triggers.pacing import FirstPollPacer, PollGate, Wakeups


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


def test_sleepers_wake_in_due_order_never_early_on_one_loop_timer() -> None:
    async def scenario() -> tuple[list[tuple[int, float, float]], int]:
        wakeups = Wakeups()
        loop = asyncio.get_running_loop()
        woke: list[tuple[int, float, float]] = []

        async def sleeper(index: int, seconds: float) -> None:
            due = loop.time() + seconds
            await wakeups.after(seconds)
            woke.append((index, due, loop.time()))

        # Longer sleeps first: each shorter one must re-arm the single timer earlier.
        delays = [0.30, 0.20, 0.10, 0.10, 0.05] + [0.25] * 500
        tasks = [asyncio.ensure_future(sleeper(i, d)) for i, d in enumerate(delays)]
        await asyncio.sleep(0)
        # asyncio.sleep would hold one loop timer per sleeper; these hold one between them.
        timers = sum(1 for handle in loop._scheduled if not handle.cancelled())  # type: ignore[attr-defined]
        await asyncio.gather(*tasks)
        return woke, timers

    woke, timers = asyncio.run(scenario())
    assert timers == 1
    # Due order; ties in the order they slept.
    assert [index for index, _, _ in woke] == [4, 2, 3, 1, *range(5, 505), 0]
    # Never woken before its time (less the loop's clock resolution, as asyncio.sleep allows).
    assert all(at >= due - 0.002 for _, due, at in woke), woke[:5]


def test_a_cancelled_sleeper_leaves_the_others_on_time_and_nothing_behind() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        wakeups = Wakeups()
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(wakeups.after(0.05))
        second = asyncio.ensure_future(wakeups.after(0.1))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0.15)
        timers = sum(1 for handle in loop._scheduled if not handle.cancelled())  # type: ignore[attr-defined]
        return first.cancelled(), second.done() and not second.cancelled(), timers

    cancelled, second_woke, timers_left = asyncio.run(scenario())
    assert cancelled
    assert second_woke
    assert timers_left == 0  # no sleeper left, no timer left


def test_a_sleep_of_zero_or_less_is_over_at_once() -> None:
    async def scenario() -> bool:
        wakeups = Wakeups()
        return wakeups.after(0).done() and wakeups.after(-1).done()

    assert asyncio.run(scenario())
