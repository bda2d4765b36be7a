"""TrueFoundryFineTuningJobEventTrigger driven as the triggerer drives it, over HTTP to the simulator.

Its ``run()`` (or Airflow's own SharedStreamManager for a shared poll) runs in an event loop with
an in-memory state store having the async accessors of Airflow 3.3's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_tfy.exceptions import TrueFoundryAuthError, TrueFoundryConfigError
from airflow_provider_tfy.testing import Fault, GatewaySimulator
from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobEventTrigger

from .conftest import CONN_ID, FAST_HOOK_PARAMS, assert_secret_free

T0 = 1_700_000_000.0


class MemoryStore:
    """The asset state store's async accessors, in memory."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(self.data[key]) if key in self.data else default

    async def aset(self, key: str, value: Any) -> None:
        self.data[key] = json.dumps(value)


class Clock:
    """The simulator's clock: each job gets a creation second of its own."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(api_key: str, clock: Clock, set_connection: Callable[..., None]) -> Iterator[GatewaySimulator]:
    with GatewaySimulator(api_key=api_key, clock=clock) as simulator:
        set_connection(simulator)
        yield simulator


def add(sim: GatewaySimulator, clock: Clock, final: str = "succeeded", **metadata: str) -> str:
    """A job created a second after the last; it stays ``running`` until :func:`end`."""
    clock.now += 1
    statuses = ("running", final)
    return sim.add_job(statuses=statuses, polls_per_status=1, metadata=metadata or None).id


def end(sim: GatewaySimulator, job_id: str) -> None:
    job = sim.get_job(job_id)
    with sim._lock:  # two retrieves move a poll-driven job to its final status
        job.poll()
        job.poll()


def add_ended(sim: GatewaySimulator, clock: Clock, final: str = "succeeded", **metadata: str) -> str:
    job_id = add(sim, clock, final, **metadata)
    end(sim, job_id)
    return job_id


def watcher(**kwargs: Any) -> TrueFoundryFineTuningJobEventTrigger:
    kwargs.setdefault("poll_interval", 1)
    kwargs.setdefault("hook_params", dict(FAST_HOOK_PARAMS))
    return TrueFoundryFineTuningJobEventTrigger(truefoundry_conn_id=CONN_ID, **kwargs)


class Running:
    """A watcher's ``run()`` consumed in the background, as the triggerer does."""

    def __init__(self, trigger: TrueFoundryFineTuningJobEventTrigger, store: MemoryStore) -> None:
        trigger.asset_state_store = store  # what the triggerer injects on Airflow 3.3
        self.store, self.payloads = store, []
        self.task = asyncio.ensure_future(self._consume(trigger.run()))

    async def _consume(self, events: Any) -> None:
        async for event in events:
            self.payloads.append(event.payload)

    @property
    def ids(self) -> list[str]:
        return [p["id"] for p in self.payloads]

    async def started(self) -> None:
        await until(lambda: bool(self.store.data), "the first state to be stored")

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def pending(store: MemoryStore) -> set[str]:
    (value,) = store.data.values()
    return set(json.loads(value)["pending"])


def list_requests(sim: GatewaySimulator) -> int:
    return sum(1 for record in sim.requests if record.endpoint == "list")


# ------------------------------------------------------------------------------------------


def test_old_jobs_are_ignored_and_each_job_that_ends_later_is_reported_once(sim, clock):
    old = [add_ended(sim, clock), add_ended(sim, clock, "failed")]
    running_old, failing = add(sim, clock), add(sim, clock, "failed")

    async def scenario() -> list[dict[str, Any]]:
        run = Running(watcher(), MemoryStore())
        await run.started()
        end(sim, running_old)
        new = add_ended(sim, clock)
        end(sim, failing)  # not one of the statuses: never reported
        await until(lambda: len(run.payloads) == 2, "two reports")
        await asyncio.sleep(2.5)  # a few more polls: nothing more
        await run.stop()
        assert sorted(run.ids) == sorted([running_old, new])
        return run.payloads

    payloads = asyncio.run(scenario())
    assert not set(old) & {p["id"] for p in payloads}
    for payload in payloads:
        assert payload["status"] == "succeeded"
        assert payload["fine_tuned_model"]
        assert payload["trained_tokens"]
        json.dumps(payload)


@pytest.mark.parametrize("gateway_ignores_filter", [False, True])
def test_only_jobs_carrying_the_metadata_are_reported(sim, clock, gateway_ignores_filter):
    sim.ignore_list_filter = gateway_ignores_filter
    ours, theirs = add(sim, clock, team="nlp"), add(sim, clock, team="vision")

    async def scenario() -> list[str]:
        run = Running(watcher(job_metadata={"team": "nlp"}, statuses=["succeeded", "failed"]), MemoryStore())
        await run.started()
        assert pending(run.store) == {ours}
        for job_id in (ours, theirs):
            end(sim, job_id)
        new_ours = add_ended(sim, clock, "failed", team="nlp")
        add_ended(sim, clock, team="vision")
        await until(lambda: len(run.payloads) == 2, "two reports")
        await asyncio.sleep(2.5)
        await run.stop()
        assert sorted(run.ids) == sorted([ours, new_ours])
        return run.ids

    asyncio.run(scenario())


def test_a_restarted_watcher_reports_what_ended_meanwhile_and_nothing_twice(sim, clock):
    first, second, third = add(sim, clock), add(sim, clock), add(sim, clock)
    store = MemoryStore()

    async def before_restart() -> None:
        run = Running(watcher(), store)
        await run.started()
        end(sim, first)
        await until(lambda: run.ids == [first], "the first report")
        await until(lambda: first not in pending(store), "the report to be recorded")
        await run.stop()  # the triggerer dies

    async def after_restart() -> list[str]:
        run = Running(watcher(), store)  # another triggerer takes over, with the asset's store
        await until(lambda: len(run.payloads) == 2, "what ended meanwhile")
        end(sim, third)
        await until(lambda: len(run.payloads) == 3, "the third report")
        await asyncio.sleep(2.5)
        await run.stop()
        return run.ids

    asyncio.run(before_restart())
    end(sim, second)
    meanwhile = add_ended(sim, clock)
    ids = asyncio.run(after_restart())
    assert sorted(ids[:2]) == sorted([second, meanwhile])
    assert ids[2] == third


def test_a_long_history_costs_a_page_or_two_per_poll(sim, clock):
    for index in range(300):
        if index == 150:
            watched = add(sim, clock)  # an old job still running: polls read down to it
        add_ended(sim, clock)

    async def scenario() -> None:
        run = Running(watcher(), MemoryStore())
        await run.started()
        assert pending(run.store) == {watched}
        lists_before = list_requests(sim)
        await asyncio.sleep(3.2)
        polls = 3  # at 1 s intervals
        assert list_requests(sim) - lists_before <= 2 * (polls + 1)
        end(sim, watched)
        await until(lambda: run.ids == [watched], "the old job's report")
        await until(lambda: not pending(run.store), "the report to be recorded")
        lists_before = list_requests(sim)
        await asyncio.sleep(3.2)
        assert list_requests(sim) - lists_before <= polls + 1  # one page each
        await run.stop()

    asyncio.run(scenario())


def test_transient_faults_do_not_end_the_watcher(sim, clock):
    job_id = add(sim, clock)

    async def scenario() -> None:
        run = Running(watcher(), MemoryStore())
        await run.started()
        for fault in (Fault.server_error(503), Fault.reset(), Fault.server_error(500), Fault.reset()):
            sim.add_endpoint_fault("list", fault)
        end(sim, job_id)
        await until(lambda: run.ids == [job_id], "the report after the faults", timeout=30)
        assert not run.task.done()
        await run.stop()

    asyncio.run(scenario())


def test_a_rejected_key_ends_the_watcher_with_the_clear_error(sim, clock, set_connection):
    add(sim, clock)
    wrong_key = "tfy-SECRET-wrong-key"
    set_connection(sim, password=wrong_key)

    async def scenario() -> BaseException:
        run = Running(watcher(), MemoryStore())
        await asyncio.wait_for(asyncio.gather(run.task, return_exceptions=True), 15)
        error = run.task.exception()
        assert error is not None
        return error

    error = asyncio.run(scenario())
    assert isinstance(error, TrueFoundryAuthError)
    assert "401" in str(error)
    assert_secret_free(wrong_key, error)


def test_without_a_state_store_it_refuses_to_run(sim, clock):
    async def scenario() -> None:
        with pytest.raises(TrueFoundryConfigError, match="AssetWatcher"):
            async for _ in watcher().run():
                pass

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"statuses": []}, "statuses"),
        ({"statuses": ["running"]}, "statuses"),
        ({"statuses": "succeeded"}, "statuses"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -5}, "poll_interval"),
        ({"job_metadata": {"team": 1}}, "job_metadata"),
        ({"hook_params": {"retries": 3}}, "hook_params"),
        ({"metadata": "not json"}, "metadata"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs, match):
    with pytest.raises(TrueFoundryConfigError, match=match):
        TrueFoundryFineTuningJobEventTrigger(**kwargs)


def test_it_serializes_to_primitives_and_back():
    trigger = TrueFoundryFineTuningJobEventTrigger(
        statuses=["failed", "succeeded"],
        job_metadata={"team": "nlp"},
        poll_interval=30,
        provider_name="openai",
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_tfy.triggers.fine_tuning.TrueFoundryFineTuningJobEventTrigger"
    json.dumps(kwargs)
    assert TrueFoundryFineTuningJobEventTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_watchers_of_one_account_share_one_poll_each_with_its_own_filter(sim, clock):
    from airflow.triggers.shared_stream import SharedStreamManager

    nlp_running, vision_running = add(sim, clock, team="nlp"), add(sim, clock, team="vision")
    nlp, vision = watcher(job_metadata={"team": "nlp"}), watcher(job_metadata={"team": "vision"})
    assert nlp.shared_stream_key() == vision.shared_stream_key()
    assert watcher(provider_name="other").shared_stream_key() != nlp.shared_stream_key()

    async def scenario() -> tuple[list[str], list[str]]:
        manager = SharedStreamManager()
        stores, seen = [MemoryStore(), MemoryStore()], [[], []]

        async def consume(index: int, trigger: TrueFoundryFineTuningJobEventTrigger) -> None:
            trigger.asset_state_store = stores[index]
            stream = manager.subscribe(trigger_id=index, trigger=trigger, key=trigger.shared_stream_key())
            try:
                async for event in trigger.filter_shared_stream(stream):
                    seen[index].append(event.payload["id"])
            finally:
                await manager.unsubscribe(index, trigger.shared_stream_key())

        tasks = [asyncio.ensure_future(consume(i, t)) for i, t in enumerate((nlp, vision))]
        await until(lambda: all(s.data for s in stores), "both watchers to start")
        for job_id in (nlp_running, vision_running):
            end(sim, job_id)
        new_vision = add_ended(sim, clock, team="vision")
        await until(lambda: len(seen[0]) == 1 and len(seen[1]) == 2, "each watcher's reports")
        lists_before = list_requests(sim)
        await asyncio.sleep(3.2)
        assert list_requests(sim) - lists_before <= 4  # one poll for both, not one each
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await manager.stop_all()
        assert sorted(seen[1]) == sorted([vision_running, new_vision])
        return seen[0], seen[1]

    nlp_ids, _ = asyncio.run(scenario())
    assert nlp_ids == [nlp_running]
