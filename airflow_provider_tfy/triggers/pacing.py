"""Paces the triggers' polls in one event loop, so a batch never lands in one loop iteration.

A takeover or a pause of the loop (a full collection) leaves many polls due at once: unpaced, they
would block the loop for the whole batch (``benchmarks/density.py``, start burst).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from asyncio import AbstractEventLoop
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary


class FirstPollPacer:
    """Spaces the first polls of triggers starting together in one loop ``pace`` seconds apart.

    A lone trigger polls at once; a batch too large for one poll interval is spread at random
    over it, so no first poll comes later than an interval after the start.
    """

    pace = 0.001

    def __init__(self) -> None:
        self._next: WeakKeyDictionary[AbstractEventLoop, float] = WeakKeyDictionary()

    def delay(self, poll_interval: float, deadline: float) -> float:
        """Seconds this trigger waits before its first poll (never past the deadline)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = max(now, self._next.get(loop, now))
        if slot - now <= poll_interval:
            self._next[loop] = slot + self.pace
            wait = slot - now
        else:
            wait = random.uniform(0, poll_interval)
        return max(0.0, min(wait, deadline - time.time()))


@dataclass
class _Gate:
    queue: deque[asyncio.Future[None]] = field(default_factory=deque)
    started: int = 0  # polls started in the current tick
    timer: asyncio.TimerHandle | None = None


class PollGate:
    """Lets at most ``per_tick`` polls of one loop start per ``tick``; the rest go next, in order.

    A steady load never queues; a queue drains far faster than an interval fills it.
    """

    tick = 0.001
    per_tick = 16

    def __init__(self) -> None:
        self._gates: WeakKeyDictionary[AbstractEventLoop, _Gate] = WeakKeyDictionary()

    async def turn(self) -> None:
        """Wait until this poll may start."""
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop) or self._gates.setdefault(loop, _Gate())
        if gate.timer is None:  # the first poll after a quiet spell starts a tick
            gate.started = 0
            gate.timer = loop.call_later(self.tick, self._on_tick, loop, gate)
        if not gate.queue and gate.started < self.per_tick:
            gate.started += 1
            return
        future: asyncio.Future[None] = loop.create_future()
        gate.queue.append(future)
        await future  # a cancelled waiter's future stays queued: the tick skips it

    def _on_tick(self, loop: AbstractEventLoop, gate: _Gate) -> None:
        gate.started = 0
        while gate.queue and gate.started < self.per_tick:
            future = gate.queue.popleft()
            if not future.done():
                future.set_result(None)
                gate.started += 1
        # Tick on while polls keep coming; a tick that started none ends the run.
        gate.timer = loop.call_later(self.tick, self._on_tick, loop, gate) if gate.started else None


@dataclass(slots=True)
class _Timer:
    heap: list[tuple[float, int, asyncio.Future[None]]] = field(default_factory=list)
    order: Iterator[int] = field(default_factory=itertools.count)  # ties wake in the order they slept
    handle: asyncio.TimerHandle | None = None
    due: float = 0.0


class Wakeups:
    """Sleeps thousands of waits on one timer per loop: ``await wakeups.after(seconds)``.

    ``asyncio.sleep`` keeps a coroutine, a timer and a context copy per sleeper; here a sleeper
    keeps its future and one heap entry (a full collection traverses every object of every wait).
    """

    def __init__(self) -> None:
        self._timers: WeakKeyDictionary[AbstractEventLoop, _Timer] = WeakKeyDictionary()

    def after(self, seconds: float) -> asyncio.Future[None]:
        """A future that completes ``seconds`` from now (at once if ``seconds <= 0``)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if seconds <= 0:
            future.set_result(None)
            return future
        timer = self._timers.get(loop) or self._timers.setdefault(loop, _Timer())
        due = loop.time() + seconds
        heapq.heappush(timer.heap, (due, next(timer.order), future))
        if timer.handle is None or due < timer.due:
            self._arm(loop, timer, due)
        return future

    def _arm(self, loop: AbstractEventLoop, timer: _Timer, due: float) -> None:
        if timer.handle is not None:
            timer.handle.cancel()
        timer.due = due
        timer.handle = loop.call_at(due, self._fire, loop, timer)

    def _fire(self, loop: AbstractEventLoop, timer: _Timer) -> None:
        timer.handle = None
        now = max(loop.time(), timer.due)  # the loop may run a timer a hair early (clock resolution)
        heap = timer.heap
        while heap and heap[0][0] <= now:
            future = heapq.heappop(heap)[2]
            if not future.done():
                future.set_result(None)
        if heap:
            self._arm(loop, timer, heap[0][0])


first_poll_pacer = FirstPollPacer()
poll_gate = PollGate()
wakeups = Wakeups()
