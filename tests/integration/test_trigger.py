"""TrueFoundryFineTuningJobTrigger over real HTTP against the gateway simulator.

pytest-asyncio is not a dependency of this project: each test drives its coroutines with
``asyncio.run`` (through ``run_trigger`` or a scenario coroutine of its own).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
import traceback
import uuid
from typing import Any

import pytest

from airflow_provider_tfy import protocol
from airflow_provider_tfy.testing import Fault, GatewaySimulator
from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger
from airflow_provider_tfy.triggers.transport import SharedClients, shared_clients

from .conftest import (
    CONN_ID,
    FAST_HOOK_PARAMS,
    assert_secret_free,
    collect_events,
    new_api_key,
    run_trigger,
)

CLASSPATH = "airflow_provider_tfy.triggers.fine_tuning.TrueFoundryFineTuningJobTrigger"
PRIMITIVES = (str, int, float, bool, type(None))


def make_trigger(job_id: str, *, seconds: float = 10.0, poll_interval: float = 0.05, **kwargs: Any):
    kwargs.setdefault("hook_params", dict(FAST_HOOK_PARAMS))
    kwargs.setdefault("truefoundry_conn_id", CONN_ID)
    return TrueFoundryFineTuningJobTrigger(
        job_id=job_id,
        poll_interval=poll_interval,
        deadline=time.time() + seconds,
        **kwargs,
    )


def is_closed(client: Any) -> bool:
    """Whether a pooled HTTP client is closed (httpx calls it ``is_closed``, aiohttp ``closed``)."""
    for name in ("is_closed", "closed"):
        if hasattr(client, name):
            return bool(getattr(client, name))
    raise AssertionError(f"cannot tell whether {client!r} is closed")


def only_event(events: list[Any]) -> dict[str, Any]:
    assert len(events) == 1, events
    payload = events[0].payload
    assert isinstance(payload, dict)
    json.dumps(payload)  # crosses the metadata DB: JSON-safe
    return payload


def assert_primitive(value: Any, path: str = "kwargs") -> None:
    """Only JSON primitives, lists and string-keyed dicts, all the way down."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{path} has a non-string key {key!r}"
            assert_primitive(item, f"{path}[{key!r}]")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_primitive(item, f"{path}[{index}]")
    else:
        assert isinstance(value, PRIMITIVES), f"{path} is a {type(value).__name__}"


# ------------------------------------------------------------------------------------------
# Outcomes: exactly one event, then the generator ends
# ------------------------------------------------------------------------------------------


def test_a_succeeded_job_yields_one_event_with_the_job(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("queued", "running", "succeeded"))

    payload = only_event(run_trigger(make_trigger(scripted.id)))

    assert payload["status"] == "succeeded"
    assert payload["job_id"] == scripted.id
    job = payload["job"]
    assert job["id"] == scripted.id
    assert job["status"] == "succeeded"
    assert job["fine_tuned_model"] == scripted.fine_tuned_model
    assert job["result_files"] == [scripted.result_file]
    assert job["trained_tokens"] == scripted.trained_tokens
    assert connected_gateway.request_count(scripted.id) == 3


def test_a_failed_job_yields_one_event_carrying_the_error(connected_gateway):
    error = {
        "code": "invalid_training_file",
        "message": "Line 3 is not valid JSON.",
        "param": "training_file",
    }
    scripted = connected_gateway.add_job(statuses=("queued", "failed"), error=error)

    payload = only_event(run_trigger(make_trigger(scripted.id)))

    assert payload["status"] == "failed"
    assert payload["job"]["status"] == "failed"
    assert payload["job"]["error"] == error
    assert payload["job"]["fine_tuned_model"] is None


def test_a_cancelled_job_yields_one_cancelled_event(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("running", "cancelled"))

    payload = only_event(run_trigger(make_trigger(scripted.id)))

    assert payload["status"] == "cancelled"
    assert payload["job"]["status"] == "cancelled"
    assert connected_gateway.request_count(scripted.id) == 2


def test_an_unknown_status_keeps_waiting_and_is_warned_about_once(connected_gateway, caplog):
    new_status = f"brand_new_{uuid.uuid4().hex[:8]}"  # the warning is once per process and status
    scripted = connected_gateway.add_job(
        statuses=("validating_files", "paused", new_status, "succeeded"), polls_per_status=2
    )

    with caplog.at_level(logging.WARNING, logger="airflow_provider_tfy"):
        payload = only_event(run_trigger(make_trigger(scripted.id)))

    assert payload["status"] == "succeeded"
    assert connected_gateway.request_count(scripted.id) == 7
    warnings = [r for r in caplog.records if new_status in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "treating it as in progress" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("case", "kind", "status_code"),
    [("unknown-job", "not_found", 404), ("wrong-key", "auth", 401), ("forbidden", "auth", 403)],
)
def test_fatal_answers_fail_fast_with_one_request(gateway, set_connection, api_key, case, kind, status_code):
    wrong_key = new_api_key()
    set_connection(gateway, password=wrong_key if case == "wrong-key" else api_key)
    job_id = "ftjob-nope" if case == "unknown-job" else gateway.add_job(statuses=("running",)).id
    if case == "forbidden":
        gateway.add_fault(job_id, Fault.status(403))

    started = time.monotonic()
    payload = only_event(run_trigger(make_trigger(job_id, hook_params={"max_retries": 5, "retry_delay": 1})))

    assert time.monotonic() - started < 5.0
    assert gateway.request_count(job_id) == 1
    assert payload["status"] == "error"
    assert payload["kind"] == kind
    assert payload["status_code"] == status_code
    assert payload["job_id"] == job_id
    assert f"HTTP {status_code}" in payload["message"]
    assert_secret_free(api_key, payload)
    assert_secret_free(wrong_key, payload)


def test_a_bad_connection_yields_a_config_error_event(set_connection, api_key):
    set_connection(host="ftp://gateway.example.com", password=api_key)

    payload = only_event(run_trigger(make_trigger("ftjob-1")))

    assert payload["status"] == "error"
    assert payload["kind"] == "config"
    assert "https://" in payload["message"]
    assert_secret_free(api_key, payload)


# ------------------------------------------------------------------------------------------
# Transient trouble and the deadline
# ------------------------------------------------------------------------------------------


def test_a_429_retry_after_is_honoured(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("running", "succeeded"), faults=[Fault.rate_limit(1)])

    payload = only_event(run_trigger(make_trigger(scripted.id, poll_interval=0.05)))

    assert payload["status"] == "succeeded"
    first, second, third = connected_gateway.requests
    assert [first.status, second.status, third.status] == [429, 200, 200]
    assert second.time - first.time >= 0.95  # waited the gateway's second, not the 0.05 s interval
    assert third.time - second.time < 0.9


def test_an_outage_shorter_than_the_deadline_is_waited_out(connected_gateway):
    # Warm first (imports, the first connection read), so that on a busy machine the outage
    # has not already ended by the trigger's first poll.
    warm = connected_gateway.add_job(statuses=("succeeded",))
    assert only_event(run_trigger(make_trigger(warm.id)))["status"] == "succeeded"
    scripted = connected_gateway.add_job(statuses=("running", "succeeded"))
    connected_gateway.outage(seconds=1.5, fault=Fault.server_error(503))

    started = time.monotonic()
    payload = only_event(run_trigger(make_trigger(scripted.id, seconds=20, poll_interval=0.1)))

    assert payload["status"] == "succeeded"
    assert time.monotonic() - started >= 1.5
    statuses = [r.status for r in connected_gateway.requests if r.job_id == scripted.id]
    assert statuses.count(503) >= 3  # more failures than the hook's max_retries (1): kept polling
    assert statuses[-2:] == [200, 200]


def test_resets_and_slow_answers_are_waited_out(connected_gateway):
    scripted = connected_gateway.add_job(
        statuses=("running", "succeeded"),
        faults=[Fault.reset(), Fault.delay(2.0), Fault.html_error(502), Fault.truncated()],
    )
    trigger = make_trigger(scripted.id, hook_params={"timeout": 0.3, "max_retries": 1, "retry_delay": 0.01})

    payload = only_event(run_trigger(trigger))

    assert payload["status"] == "succeeded"
    assert connected_gateway.request_count(scripted.id) == 6


def test_an_outage_past_the_deadline_yields_one_timeout_event(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("running",))
    connected_gateway.outage(fault=Fault.server_error(503))
    # Deadlines in these tests leave a loaded CI machine room for a slow start (a connection read
    # and a pool opened in a fresh loop): it once took 1.4 s there.
    trigger = make_trigger(scripted.id, seconds=2.0, poll_interval=0.1)

    events = run_trigger(trigger)
    ended = time.time()

    payload = only_event(events)
    assert payload["status"] == "timeout"
    assert payload["job_id"] == scripted.id
    assert scripted.id in payload["message"]
    assert trigger.deadline <= ended < trigger.deadline + 0.5  # gave up at the deadline, not after
    assert connected_gateway.request_count(scripted.id) >= 3


def test_a_job_still_running_at_the_deadline_yields_a_timeout_naming_its_status(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("queued", "running"))
    trigger = make_trigger(scripted.id, seconds=2.0, poll_interval=0.1)

    payload = only_event(run_trigger(trigger))

    assert payload["status"] == "timeout"
    assert "last status: running" in payload["message"]
    assert time.time() < trigger.deadline + 0.5


# ------------------------------------------------------------------------------------------
# Serialization
# ------------------------------------------------------------------------------------------


def test_serialize_holds_only_primitives_and_never_the_key(connected_gateway, api_key):
    scripted = connected_gateway.add_job(statuses=("running", "succeeded"))
    trigger = make_trigger(
        scripted.id,
        provider_name="openai-main",
        metadata={"team": "ml"},
        hook_params={"timeout": 5, "max_retries": 1, "retry_delay": 0.05},
        last_status="queued",
    )

    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert_primitive(kwargs)
    assert_secret_free(api_key, kwargs, json.dumps(kwargs), trigger)

    payload = only_event(run_trigger(trigger))

    assert payload["status"] == "succeeded"
    # Running it (the connection, the key, the client) leaves nothing secret behind.
    _, after = trigger.serialize()
    assert_primitive(after)
    assert_secret_free(api_key, after, json.dumps(after), trigger, vars(trigger))
    assert after == {**kwargs, "last_status": "succeeded"}


def test_serialize_round_trips(connected_gateway):
    trigger = make_trigger(
        "ftjob-1", provider_model="gemini", vertex_storage_bucket_name="b", file_purpose="p"
    )

    classpath, kwargs = trigger.serialize()
    clone = TrueFoundryFineTuningJobTrigger(**json.loads(json.dumps(kwargs)))

    assert clone.serialize() == (classpath, kwargs)


def test_a_trigger_serialized_by_0_2_resumes_with_its_headers(connected_gateway):
    """Kwargs exactly as 0.2 serialized them (each header its own key) still resume the wait."""
    scripted = connected_gateway.add_job(statuses=("running", "succeeded"))
    old_kwargs = {
        "job_id": scripted.id,
        "truefoundry_conn_id": CONN_ID,
        "poll_interval": 0.05,
        "deadline": time.time() + 10,
        "hook_params": dict(FAST_HOOK_PARAMS),
        "provider_name": "openai-main",
        "provider_model": None,
        "vertex_storage_bucket_name": "b",
        "file_purpose": None,
        "metadata": {"team": "ml"},
        "last_status": "queued",
        "cancel_on_kill": False,
        "idempotency_key": None,
    }

    trigger = TrueFoundryFineTuningJobTrigger(**json.loads(json.dumps(old_kwargs)))
    payload = only_event(run_trigger(trigger))

    assert payload["status"] == "succeeded"
    sent = connected_gateway.requests[-1].headers
    assert sent.get("x-tfy-provider-name") == "openai-main"
    assert sent.get("x-tfy-vertex-storage-bucket-name") == "b"
    assert json.loads(sent.get("x-tfy-metadata")) == {"team": "ml"}
    _, kwargs = trigger.serialize()
    assert kwargs["header_args"] == {
        "provider_name": "openai-main",
        "vertex_storage_bucket_name": "b",
        "metadata": {"team": "ml"},
    }
    assert "provider_name" not in kwargs


def test_a_trigger_refuses_an_unknown_header_name():
    with pytest.raises(TypeError, match="'provider'"):
        make_trigger("ftjob-1", provider="x")
    with pytest.raises(TypeError, match="'provider'"):
        make_trigger("ftjob-1", header_args={"provider": "x"})


def test_a_trigger_recreated_mid_wait_keeps_the_absolute_deadline(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("queued", "running"))
    # Room for a slow start (a connection read and a pool opened in a fresh loop on a loaded CI
    # machine): the deadline must not pass before the test cancels the first trigger mid-wait.
    original = make_trigger(scripted.id, seconds=4, poll_interval=0.1)

    async def first_triggerer() -> dict[str, Any]:
        task = asyncio.ensure_future(collect_events(original))
        while connected_gateway.request_count(scripted.id) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)  # between polls
        assert not task.done(), "the wait ended before the test could cancel it"
        task.cancel()  # the triggerer goes away mid-wait
        with pytest.raises(asyncio.CancelledError):
            await task
        return original.serialize()[1]

    kwargs = asyncio.run(first_triggerer())
    assert kwargs["last_status"] == "running"
    polls_before = connected_gateway.request_count(scripted.id)
    time.sleep(0.3)  # the handover takes a while

    resumed = TrueFoundryFineTuningJobTrigger(**json.loads(json.dumps(kwargs)))
    assert resumed.deadline == original.deadline
    payload = only_event(run_trigger(resumed))
    ended = time.time()

    assert payload["status"] == "timeout"
    assert "last status: running" in payload["message"]
    assert connected_gateway.request_count(scripted.id) > polls_before  # the second one polled
    assert original.deadline <= ended < original.deadline + 0.5  # not 4 s after the handover


# ------------------------------------------------------------------------------------------
# Many triggers in one event loop
# ------------------------------------------------------------------------------------------


# A tick of the 10 ms ticker later than STALL counts as a stall; at most MAX_STALLS may happen,
# none as long as LONGEST_STALL.
STALL = 0.05
MAX_STALLS = 2
LONGEST_STALL = 0.25


class LoopWatch:
    """A ticker on the loop (sleep 10 ms, record each gap) and a watchdog thread beside it.

    When the ticker is late, the watchdog saves the loop thread's stack, so a failure names what
    held the loop rather than only how long.
    """

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.stalls: list[str] = []
        self._beat = time.monotonic()
        self._done = threading.Event()

    async def tick(self, stop: asyncio.Event) -> None:
        loop_thread = threading.get_ident()
        watchdog = threading.Thread(target=self._watch, args=(loop_thread,), daemon=True)
        watchdog.start()
        try:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                self.gaps.append(now - last)
                self._beat = last = now
        finally:
            self._done.set()
            watchdog.join()

    def _watch(self, loop_thread: int) -> None:
        reported = 0.0
        while not self._done.wait(0.005):
            beat = self._beat
            if time.monotonic() - beat > 0.04 and beat != reported:
                reported = beat
                frame = sys._current_frames().get(loop_thread)
                self.stalls.append("".join(traceback.format_stack(frame)[-8:]) if frame else "?")


def test_the_event_loop_is_never_blocked(api_key, set_connection):
    with GatewaySimulator(api_key=api_key, latency=0.2) as sim:
        set_connection(sim)
        warm_up = sim.add_job(statuses=("succeeded",))
        jobs = [sim.add_job(statuses=("queued", "running", "succeeded")) for _ in range(20)]
        watch = LoopWatch()

        async def scenario() -> list[dict[str, Any]]:
            # Imports and first-use set-up happen once per process, not per trigger: do them first.
            await collect_events(make_trigger(warm_up.id))
            stop = asyncio.Event()
            ticker = asyncio.ensure_future(watch.tick(stop))
            await asyncio.sleep(0.05)
            results = await asyncio.gather(*(collect_events(make_trigger(job.id)) for job in jobs))
            stop.set()
            await ticker
            return [only_event(events) for events in results]

        payloads = asyncio.run(asyncio.wait_for(scenario(), 30))

    assert [p["status"] for p in payloads] == ["succeeded"] * len(jobs)
    assert len(watch.gaps) > 20  # the ticker ran all along (3 polls x 0.2 s latency at least)
    # One late tick is a GC pause or the OS scheduling another process on a busy 2-core box; code
    # that blocks the loop shows up on every poll wave (3 or more), or as one very long stall.
    late = [gap for gap in watch.gaps if gap > STALL]
    where = "\n---\n".join(watch.stalls)
    report = (
        f"{len(late)} of {len(watch.gaps)} ticks late: {[round(gap * 1000) for gap in late]} ms, in:\n{where}"
    )
    assert len(late) <= MAX_STALLS, f"the loop was blocked again and again; {report}"
    assert max(watch.gaps) < LONGEST_STALL, f"the loop was blocked for too long; {report}"


def test_triggers_in_one_loop_share_one_client_per_gateway(api_key, set_connection):
    with GatewaySimulator(api_key=api_key) as sim, GatewaySimulator(api_key=api_key) as other:
        set_connection(sim)
        set_connection(other, conn_id="truefoundry_other")
        # The first trigger in creates the pool and is the last one out: its job runs until told.
        anchor = sim.add_job(statuses=("running",))
        jobs = [sim.add_job(statuses=("queued", "running", "succeeded")) for _ in range(50)]
        other_job = other.add_job(statuses=("queued", "running", "succeeded"))
        config = protocol.gateway_config(CONN_ID, host=sim.url, password=api_key, extra={})
        other_config = protocol.gateway_config(
            "truefoundry_other", host=other.url, password=api_key, extra={}
        )

        async def scenario() -> tuple[list[Any], Any, Any]:
            first = asyncio.ensure_future(collect_events(make_trigger(anchor.id, poll_interval=0.1)))
            other_trigger = make_trigger(
                other_job.id, poll_interval=0.3, truefoundry_conn_id="truefoundry_other"
            )
            tasks = [asyncio.ensure_future(collect_events(other_trigger))]
            while not sim.requests:
                await asyncio.sleep(0.005)
            for job in jobs:  # triggers arrive one by one, as deferred tasks do
                tasks.append(asyncio.ensure_future(collect_events(make_trigger(job.id, poll_interval=0.3))))
                await asyncio.sleep(0.02)
            # Borrow, as a trigger does, while the triggers are polling: the pooled clients.
            async with (
                shared_clients.client(config) as shared,
                shared_clients.client(other_config) as other_one,
            ):
                assert not is_closed(shared)
            assert not is_closed(shared)  # the triggers still use it
            results = await asyncio.gather(*tasks)
            assert not first.done()
            assert not is_closed(shared)  # the anchor still polls
            sim.set_job(anchor.id, statuses=("succeeded",))
            results.append(await first)
            return results, shared, other_one

        results, shared, other_one = asyncio.run(asyncio.wait_for(scenario(), 60))

    assert [only_event(events)["status"] for events in results] == ["succeeded"] * 52
    assert sim.request_count(anchor.id) >= 5
    assert len(sim.requests) == 150 + sim.request_count(anchor.id)
    assert len(other.requests) == 3
    assert shared is not other_one  # one client per gateway origin
    # Many requests from 51 triggers over a few pooled keep-alive connections, not one (or more) per
    # trigger. Usually 2 or 3; the bound leaves room for a loaded machine delaying some answers.
    assert sim.connections_opened <= len(jobs) // 3, sim.connections_opened
    assert other.connections_opened == 1
    # The last trigger to finish closed the pool.
    assert is_closed(shared)
    assert is_closed(other_one)


def test_a_burst_of_triggers_never_opens_more_connections_than_the_pool_cap(api_key, set_connection):
    # Concurrency decides how many connections are open, up to the shared pool's cap: 300 waits
    # polling at once through a slow gateway must queue on at most `max_connections` sockets.
    cap = 40
    original, SharedClients.max_connections = SharedClients.max_connections, cap
    try:
        with GatewaySimulator(api_key=api_key, latency=0.2) as sim:
            set_connection(sim)
            jobs = [sim.add_job(statuses=("queued", "running", "succeeded")) for _ in range(300)]

            async def scenario() -> list[Any]:
                return await asyncio.gather(
                    *(collect_events(make_trigger(job.id, seconds=60)) for job in jobs)
                )

            results = asyncio.run(asyncio.wait_for(scenario(), 90))
    finally:
        SharedClients.max_connections = original

    assert [only_event(events)["status"] for events in results] == ["succeeded"] * 300
    assert len(sim.requests) == 900
    assert cap // 2 < sim.connections_opened <= cap, sim.connections_opened


def test_sequential_triggers_reopen_a_closed_pool(connected_gateway):
    first = connected_gateway.add_job(statuses=("succeeded",))
    second = connected_gateway.add_job(statuses=("running", "succeeded"))

    async def scenario() -> list[dict[str, Any]]:
        one = only_event(await collect_events(make_trigger(first.id)))
        two = only_event(await collect_events(make_trigger(second.id)))
        return [one, two]

    payloads = asyncio.run(scenario())

    assert [p["status"] for p in payloads] == ["succeeded", "succeeded"]
    assert connected_gateway.connections_opened == 2  # the first pool was closed, a new one opened
