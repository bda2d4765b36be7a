"""Many triggers starting at once in one loop (a triggerer's takeover): one connection read, paced
polls, and nothing cached past the read (a rotated key reaches the next trigger)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections import Counter
from typing import Any

import pytest

from airflow_provider_tfy.testing import GatewaySimulator
from airflow_provider_tfy.triggers import fine_tuning, transport
from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger
from airflow_provider_tfy.triggers.pacing import FirstPollPacer, PollGate

from .conftest import CONN_ID, collect_events, run_trigger


def only_event(events: list[Any]) -> dict[str, Any]:
    assert len(events) == 1, events
    payload = events[0].payload
    assert isinstance(payload, dict)
    return payload


def trigger(job_id: str, poll_interval: float = 5.0) -> TrueFoundryFineTuningJobTrigger:
    return TrueFoundryFineTuningJobTrigger(
        job_id=job_id, truefoundry_conn_id=CONN_ID, poll_interval=poll_interval, deadline=time.time() + 60
    )


@pytest.fixture
def connection_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The connection reads that really happen (Airflow's accessor is still what answers them)."""
    reads: list[str] = []
    real = transport._read_connection

    async def counted(conn_id: str) -> Any:
        reads.append(conn_id)
        return await real(conn_id)

    monkeypatch.setattr(transport, "_read_connection", counted)
    return reads


def test_triggers_starting_together_read_the_connection_once_and_never_poll_in_a_herd(
    connected_gateway: GatewaySimulator, connection_reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 200
    jobs = [connected_gateway.add_job(statuses=("succeeded",)) for _ in range(n)]
    iteration = [0]
    sends_per_iteration: Counter[int] = Counter()
    real_send = transport.send

    real_delay = fine_tuning.first_poll_pacer.delay
    due_at: list[float] = []  # the loop time each first poll was scheduled for

    async def counted_send(session: Any, request: Any) -> Any:
        sends_per_iteration[iteration[0]] += 1
        return await real_send(session, request)

    def recorded_delay(poll_interval: float, deadline: float) -> float:
        wait = real_delay(poll_interval, deadline)
        due_at.append(asyncio.get_running_loop().time() + wait)
        return wait

    monkeypatch.setattr(transport, "send", counted_send)
    monkeypatch.setattr(fine_tuning.first_poll_pacer, "delay", recorded_delay)

    async def all_at_once() -> tuple[float, list[list[Any]]]:
        loop = asyncio.get_running_loop()

        def count_iterations() -> None:  # call_soon runs it once per loop iteration
            iteration[0] += 1
            loop.call_soon(count_iterations)

        count_iterations()
        started = time.time()
        waits = asyncio.gather(*(collect_events(trigger(job.id)) for job in jobs))
        await asyncio.sleep(0.02)
        # A pause of the loop, as a full garbage collection makes: every paced first poll whose
        # slot passed meanwhile is due at once when it ends.
        time.sleep(0.3)
        return started, await waits

    started, results = asyncio.run(asyncio.wait_for(all_at_once(), 60))

    assert [only_event(events)["status"] for events in results] == ["succeeded"] * n
    assert connection_reads == [CONN_ID]
    assert sum(sends_per_iteration.values()) == n
    # Most were due together after the pause: still never more than a tick's share in one iteration.
    assert max(sends_per_iteration.values()) <= PollGate.per_tick, sends_per_iteration
    # Scheduled about 1 ms apart: the batch spreads over ~n ms (the gate alone would give n / 16
    # ms), never over a poll interval (5 s). Judged on when the pacer scheduled each first poll,
    # not on when it was sent: a loop starved by a loaded machine wakes late sleepers together,
    # and then the gate (asserted above) is what keeps them from a herd.
    due = sorted(due_at)
    assert len(due) == n
    assert due[-1] - due[0] >= (n - 1) * FirstPollPacer.pace * 0.9, due[-1] - due[0]
    assert min(b - a for a, b in itertools.pairwise(due)) >= FirstPollPacer.pace * 0.5
    firsts = sorted(r.time for r in connected_gateway.requests)
    assert firsts[-1] - started < 5.0


def test_a_lone_trigger_polls_at_once(connected_gateway: GatewaySimulator) -> None:
    job = connected_gateway.add_job(statuses=("succeeded",))
    run_trigger(trigger(job.id))  # warm: imports and the first connection read
    job = connected_gateway.add_job(statuses=("succeeded",))
    started = time.time()
    assert only_event(run_trigger(trigger(job.id)))["status"] == "succeeded"
    [record] = [r for r in connected_gateway.requests if r.job_id == job.id]
    # Not paced: well before its 5 s poll interval (room for a busy machine).
    assert record.time - started < 2.5


def test_a_read_after_the_last_one_finished_sees_an_edited_connection(
    gateway: GatewaySimulator, set_connection: Any, connection_reads: list[str]
) -> None:
    job = gateway.add_job(statuses=("succeeded",))
    set_connection(gateway, password="a-revoked-key")
    assert only_event(run_trigger(trigger(job.id)))["status"] == "error"
    set_connection(gateway)  # the key rotated: the next trigger must use the new one
    assert only_event(run_trigger(trigger(job.id)))["status"] == "succeeded"
    assert connection_reads == [CONN_ID, CONN_ID]
    assert [r.has_valid_auth for r in gateway.requests] == [False, True]


def test_a_cancelled_waiter_does_not_cancel_the_shared_read(
    connected_gateway: GatewaySimulator, connection_reads: list[str]
) -> None:
    jobs = [connected_gateway.add_job(statuses=("succeeded",)) for _ in range(3)]

    async def scenario() -> list[Any]:
        doomed = asyncio.ensure_future(collect_events(trigger(jobs[0].id)))
        others = [asyncio.ensure_future(collect_events(trigger(job.id))) for job in jobs[1:]]
        await asyncio.sleep(0)  # every trigger is now waiting for the one read
        doomed.cancel()
        return await asyncio.gather(*others)

    results = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert [only_event(events)["status"] for events in results] == ["succeeded", "succeeded"]
    assert connection_reads == [CONN_ID]


def test_a_waiting_trigger_keeps_few_objects_and_shares_its_logger(
    connected_gateway: GatewaySimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A triggerer's full garbage collection traverses every object of every wait it holds, and
    # comes sooner the more objects the waits keep (benchmarks/density.py, start burst): a wait
    # between polls keeps its trigger, its generator, one future and the request it repeats.
    monkeypatch.setattr(transport.SharedClients, "max_connections", 4)  # the pool's share is fixed
    n = 150
    job = connected_gateway.add_job(statuses=("succeeded",))
    run_trigger(trigger(job.id))  # warm: imports, the first connection read, the logger
    jobs = [connected_gateway.add_job(statuses=("running",)) for _ in range(n)]

    async def scenario() -> tuple[float, set[int]]:
        anchor = asyncio.ensure_future(collect_events(trigger(jobs[0].id, poll_interval=60)))
        while connected_gateway.request_count(jobs[0].id) < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        gc.collect()
        before = len(gc.get_objects())
        waits = [trigger(job.id, poll_interval=60) for job in jobs[1:]]
        tasks = [asyncio.ensure_future(collect_events(wait)) for wait in waits]
        while any(connected_gateway.request_count(job.id) < 1 for job in jobs[1:]):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # every answer read, every wait asleep
        gc.collect()
        per_wait = (len(gc.get_objects()) - before) / len(tasks)
        loggers = {id(wait.log) for wait in waits}
        for task in [anchor, *tasks]:
            task.cancel()
        await asyncio.gather(anchor, *tasks, return_exceptions=True)
        return per_wait, loggers

    per_wait, loggers = asyncio.run(asyncio.wait_for(scenario(), 60))
    # Measured 24 here, 8 of them this test's (its task, coroutines and list, the simulator's
    # record); 42 before the waits lost their nested generators and context manager, their
    # per-wait loggers and asyncio.sleep's timer, coroutine and context copy. (Few waits, so
    # that this test does not load the machine the timing tests share.)
    assert per_wait <= 30, per_wait
    # One logger for the class, the one Airflow's LoggingMixin names after it, not one per wait.
    assert loggers == {id(TrueFoundryFineTuningJobTrigger.logger())}
