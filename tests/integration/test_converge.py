"""Overlapping tries converge on one job: the hook, the worker wait and the trigger, over real HTTP.

Two tries of one task can overlap around the create (Airflow gave up on one that is still alive):
each finds no job with the key and creates one. Every look then keeps the oldest live job with
the key and cancels the others. "Another try" is played by threads calling the hook, or by a job
injected through the simulator's admin API at the moment that try would have created it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from airflow_provider_tfy import events, protocol
from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
from airflow_provider_tfy.testing import Fault, GatewaySimulator
from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger

from .conftest import CONN_ID, FAST_HOOK_PARAMS, run_dag, run_trigger, structlog_lines, xcom_value
from .test_operators import CREATE, REGISTER, WAITS, build_pipeline, key_of

KEY_NAME = protocol.IDEMPOTENCY_METADATA_KEY
ARGS = {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-train-1"}


def fast_hook() -> TrueFoundryHook:
    return TrueFoundryHook(max_retries=2, retry_delay=0.01)


def lists(sim: GatewaySimulator) -> int:
    return sum(1 for record in sim.requests if record.endpoint == "list")


def inject(sim: GatewaySimulator, key: str, **script: Any) -> str:
    """Another try's job, created through the admin API as another process would."""
    answer = requests.post(
        f"{sim.url}/__simulator__/jobs",
        json={"metadata": {KEY_NAME: key}, **script},
        headers={"Authorization": f"Bearer {sim.api_key}"},
        timeout=10,
    )
    answer.raise_for_status()
    return str(answer.json()["id"])


def when(condition: Callable[[], bool], then: Callable[[], Any], timeout: float = 60.0) -> dict[str, Any]:
    """Run ``then`` in a thread as soon as ``condition`` holds; its result lands in the dict."""
    result: dict[str, Any] = {}

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.005)
        result["value"] = then()

    threading.Thread(target=watch, daemon=True).start()
    return result


def overlapping_creates(sim: GatewaySimulator, key: str) -> list[Any]:
    """Two create calls with one key at once: both look-ups find nothing before either create lands."""
    sim.add_endpoint_fault("list", Fault.delay(0))  # the two look-ups before creating: at once
    sim.add_endpoint_fault("list", Fault.delay(0))
    sim.add_endpoint_fault("create", Fault.delay(1.5))  # both creates land after both look-ups
    sim.add_endpoint_fault("create", Fault.delay(1.5))
    sim.add_endpoint_fault("list", Fault.delay(1.5))  # the looks after creating see both jobs,
    sim.add_endpoint_fault("list", Fault.delay(3.0))  # the second after the first one's cancel
    barrier = threading.Barrier(2)
    results: list[Any] = [None, None]

    def call(index: int) -> None:
        barrier.wait()
        try:
            results[index] = fast_hook().create_fine_tuning_job(**ARGS, idempotency_key=key)
        except Exception as err:  # reported by the assertion below
            results[index] = err

    threads = [threading.Thread(target=call, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


# ------------------------------------------------------------------------------------------
# The hook
# ------------------------------------------------------------------------------------------


def test_two_overlapping_creates_with_one_key_return_one_job_and_cancel_the_other(connected_gateway, capfd):
    sim = connected_gateway
    capfd.readouterr()

    first, second = overlapping_creates(sim, "run-50")

    assert len(sim.created_jobs) == 2  # both tries created: the overlap happened
    assert first.id == second.id, (first, second)
    survivor = first.id
    (other,) = [job for job in sim.created_jobs if job.id != survivor]
    assert [job.id for job in sim.created_jobs if job.cancelled_at is None] == [survivor]
    assert sim.cancel_requests(other.id) == 1
    assert sim.cancel_requests(survivor) == 0
    assert survivor == min(sim.created_jobs, key=lambda job: (job.created_at, job.id)).id  # the oldest
    info = structlog_lines(capfd.readouterr().out, "info")
    assert any(f"converge on {survivor}" in line and f"cancelled: {other.id}" in line for line in info)


@pytest.mark.parametrize("answer", ["405", "404"])
def test_a_gateway_that_cannot_cancel_gets_a_warning_naming_both_jobs(connected_gateway, capfd, answer):
    sim = connected_gateway
    if answer == "405":
        sim.can_cancel = False
    else:
        for _ in range(2):
            sim.add_endpoint_fault("cancel", Fault.status(404))
    capfd.readouterr()

    first, second = overlapping_creates(sim, "run-51")

    assert first.id == second.id, (first, second)
    assert all(job.cancelled_at is None for job in sim.created_jobs)
    assert sim.cancel_requests(first.id) == 0  # never the survivor
    warnings = structlog_lines(capfd.readouterr().out, "warning")
    named = [line for line in warnings if f"HTTP {answer}" in line and "cannot cancel" in line]
    assert named
    for line in named:
        assert all(job.id in line for job in sim.created_jobs)


def test_the_look_before_creating_keeps_the_oldest_live_job_and_cancels_the_newer(connected_gateway):
    sim = connected_gateway
    oldest = sim.add_job(
        statuses=("running",), metadata={KEY_NAME: "run-52"}, extra_fields={"created_at": 100}
    )
    sim.add_job(statuses=("failed",), metadata={KEY_NAME: "run-52"}, extra_fields={"created_at": 50})
    newer = sim.add_job(statuses=("queued",), metadata={KEY_NAME: "run-52"}, extra_fields={"created_at": 200})

    job = fast_hook().create_fine_tuning_job(**ARGS, idempotency_key="run-52")

    assert job.id == oldest.id
    assert sim.created_jobs == []
    assert (sim.cancel_requests(newer.id), sim.cancel_requests(oldest.id)) == (1, 0)
    assert fast_hook().converge_fine_tuning_jobs("run-52").id == oldest.id  # a second look: no change
    assert sim.cancel_requests(newer.id) == 1


# ------------------------------------------------------------------------------------------
# The trigger's first poll
# ------------------------------------------------------------------------------------------


def make_trigger(job_id: str, **kwargs: Any) -> TrueFoundryFineTuningJobTrigger:
    return TrueFoundryFineTuningJobTrigger(
        job_id=job_id,
        truefoundry_conn_id=CONN_ID,
        poll_interval=0.05,
        deadline=time.time() + 20,
        hook_params=dict(FAST_HOOK_PARAMS),
        **kwargs,
    )


@pytest.mark.parametrize("other_is", ["older", "newer"])
def test_the_triggers_first_poll_ends_the_wait_when_another_live_job_has_the_key(connected_gateway, other_is):
    sim = connected_gateway
    mine = sim.add_job(statuses=("running", "succeeded"), metadata={KEY_NAME: "run-53"})
    created_at = mine.created_at + (-100 if other_is == "older" else 100)
    inject(sim, "run-53", statuses=["running"], extra_fields={"created_at": created_at})

    (event,) = run_trigger(make_trigger(mine.id, idempotency_key="run-53"))

    assert event.payload["status"] == events.CONVERGE
    assert event.payload["job_id"] == mine.id
    assert event.payload["job"]["status"] == "running"
    assert events.check_event(event.payload) is event.payload
    assert sim.request_count(mine.id) == 1  # at the first poll
    assert [r.query[f"metadata[{KEY_NAME}]"] for r in sim.requests if r.endpoint == "list"] == ["run-53"]
    assert not [r for r in sim.requests if r.endpoint == "cancel"]  # the trigger only reads


def test_a_trigger_alone_with_its_key_looks_once_and_waits_on(connected_gateway):
    sim = connected_gateway
    mine = sim.add_job(statuses=("running", "running", "succeeded"), metadata={KEY_NAME: "run-54"})
    inject(sim, "run-54", statuses=["cancelled"])  # an ended job with the key does not count

    (event,) = run_trigger(make_trigger(mine.id, idempotency_key="run-54"))

    assert event.payload["status"] == "succeeded"
    assert lists(sim) == 1


def test_a_trigger_deferred_before_the_upgrade_resumes_without_the_look(connected_gateway):
    sim = connected_gateway
    mine = sim.add_job(statuses=("running", "succeeded"), metadata={KEY_NAME: "run-55"})
    inject(sim, "run-55", statuses=["running"])
    _, kwargs = make_trigger(mine.id).serialize()
    del kwargs["idempotency_key"]  # as serialized by a version without it

    (event,) = run_trigger(TrueFoundryFineTuningJobTrigger(**kwargs))

    assert event.payload["status"] == "succeeded"
    assert lists(sim) == 0


# ------------------------------------------------------------------------------------------
# The operator: the second look, and a cancelled job's survivor
# ------------------------------------------------------------------------------------------

pipeline = pytest.mark.usefixtures("airflow_db", "example_env")


@pipeline
@pytest.mark.parametrize("wait", list(WAITS))
def test_a_job_another_try_created_after_the_first_look_is_converged_at_the_first_poll(
    connected_gateway, capfd, wait
):
    sim = connected_gateway
    # The first status check waits a second: room for "another try" to create its job first.
    sim.set_create_script(statuses=("queued", "running", "running", "succeeded"), faults=[Fault.delay(1.0)])
    injected = when(
        lambda: lists(sim) >= 2 and bool(sim.created_jobs),  # after the looks before and after creating
        lambda: inject(
            sim,
            key_of(sim.created_jobs[0]),
            statuses=["running", "succeeded"],
            extra_fields={"created_at": sim.created_jobs[0].created_at - 60},  # created first
        ),
    )
    dag = build_pipeline("tfy_converge_look", deferrable=WAITS[wait], upload=False)

    run, output = run_dag(dag, capfd)

    assert run.state == "success", output[-3000:]
    survivor = injected["value"]
    (mine,) = sim.created_jobs
    assert xcom_value(run, CREATE, key="job_id") == survivor
    assert xcom_value(run, CREATE)["id"] == survivor
    assert xcom_value(run, CREATE)["status"] == "succeeded"
    assert xcom_value(run, REGISTER) == xcom_value(run, CREATE)["fine_tuned_model"]
    assert mine.cancelled_at is not None
    assert sim.cancel_requests(mine.id) == 1
    assert sim.cancel_requests(survivor) == 0
    assert f"waiting on it instead of {mine.id}" in output


@pipeline
@pytest.mark.parametrize("wait", list(WAITS))
def test_a_newer_job_with_the_key_is_cancelled_at_the_first_poll_and_the_wait_stays(
    connected_gateway, capfd, wait
):
    sim = connected_gateway
    sim.set_create_script(statuses=("queued", "running", "succeeded"), faults=[Fault.delay(1.0)])
    injected = when(
        lambda: lists(sim) >= 2 and bool(sim.created_jobs),
        lambda: inject(
            sim,
            key_of(sim.created_jobs[0]),
            statuses=["running"],
            extra_fields={"created_at": sim.created_jobs[0].created_at + 60},
        ),
    )
    dag = build_pipeline("tfy_converge_newer", deferrable=WAITS[wait], upload=False)

    run, output = run_dag(dag, capfd)

    assert run.state == "success", output[-3000:]
    (mine,) = sim.created_jobs
    assert xcom_value(run, CREATE)["id"] == xcom_value(run, CREATE, key="job_id") == mine.id
    assert sim.cancel_requests(injected["value"]) == 1
    assert sim.get_job(injected["value"]).cancelled_at is not None
    assert sim.cancel_requests(mine.id) == 0


@pipeline
@pytest.mark.parametrize("wait", list(WAITS))
def test_a_wait_whose_job_is_cancelled_switches_to_the_live_survivor(connected_gateway, capfd, wait):
    sim = connected_gateway
    # Another try cancelled ours as its non-survivor: our job ends cancelled while theirs runs.
    sim.set_create_script(statuses=("running", "cancelled"), polls_per_status=5)
    injected = when(
        lambda: lists(sim) >= 3,  # after the looks before and after creating, and at the first poll
        lambda: inject(sim, key_of(sim.created_jobs[0]), statuses=["running", "succeeded"]),
    )
    dag = build_pipeline("tfy_converge_cancelled", deferrable=WAITS[wait], upload=False)

    run, output = run_dag(dag, capfd)

    assert run.state == "success", output[-3000:]
    survivor = injected["value"]
    (mine,) = sim.created_jobs
    assert xcom_value(run, CREATE, key="job_id") == survivor
    assert xcom_value(run, CREATE)["id"] == survivor
    assert sim.cancel_requests(survivor) == 0
    assert sim.cancel_requests(mine.id) == 0
    assert "FineTuningJobCancelled" not in output


@pipeline
def test_a_cancelled_job_with_no_live_survivor_still_fails_as_cancelled(connected_gateway, capfd):
    sim = connected_gateway
    sim.set_create_script(statuses=("running", "cancelled"))
    dag = build_pipeline("tfy_converge_none", deferrable=False, upload=False)

    run, output = run_dag(dag, capfd)

    assert run.state == "failed"
    (mine,) = sim.created_jobs
    assert f"FineTuningJobCancelled: Fine-tuning job '{mine.id}' was cancelled" in output
