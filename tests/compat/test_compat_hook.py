"""The hook and the trigger against the gateway simulator, on the running Airflow version."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from airflow.providers.common.compat.module_loading import import_string
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_tfy.exceptions import FineTuningJobNotFound, TrueFoundryAuthError
from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger


def test_hook_reads_a_job(truefoundry_conn: Any) -> None:
    sim = truefoundry_conn()
    job = sim.add_job(statuses=("succeeded",))

    result = TrueFoundryHook(max_retries=0).get_fine_tuning_job(job.id)

    assert result.id == job.id
    assert result.status == "succeeded"
    assert result.fine_tuned_model
    assert result.to_xcom()["fine_tuned_model"] == result.fine_tuned_model


def test_hook_sends_extras_as_the_connection_form_saves_them(truefoundry_conn: Any) -> None:
    # The Python connection form (Airflow 2.11-3.1) stores every extra as text, JSON included.
    sim = truefoundry_conn(provider_name="openai-main", metadata='{"team": "ml-platform"}', timeout="30")
    job = sim.add_job(statuses=("running",))

    TrueFoundryHook(max_retries=0).get_fine_tuning_job(job.id)

    (request,) = [r for r in sim.requests if r.job_id == job.id]
    assert request.has_valid_auth
    assert request.headers["x-tfy-provider-name"] == "openai-main"
    assert '"team"' in request.headers["x-tfy-metadata"]


def test_hook_rejected_key_is_an_auth_error_that_skips_task_retries(truefoundry_conn: Any) -> None:
    sim = truefoundry_conn(password="not-the-key")
    job = sim.add_job()

    with pytest.raises(TrueFoundryAuthError) as info:
        TrueFoundryHook(max_retries=0).get_fine_tuning_job(job.id)

    assert info.value.status_code == 401
    assert "not-the-key" not in str(info.value)
    # The class this version's task runner checks to fail a task without retrying it.
    assert isinstance(info.value, AirflowFailException)


def test_hook_unknown_job_is_not_found(truefoundry_conn: Any) -> None:
    truefoundry_conn()

    with pytest.raises(FineTuningJobNotFound) as info:
        TrueFoundryHook(max_retries=0).get_fine_tuning_job("ftjob-does-not-exist")

    assert info.value.status_code == 404
    assert isinstance(info.value, AirflowFailException)


def test_hook_test_connection(truefoundry_conn: Any) -> None:
    """What the Connections UI's Test button calls, on every version."""
    truefoundry_conn()
    ok, message = TrueFoundryHook(max_retries=0).test_connection()
    assert ok, message

    truefoundry_conn(password="not-the-key")
    ok, message = TrueFoundryHook(max_retries=0).test_connection()
    assert not ok
    assert "rejected" in message


def _first_event(trigger: TrueFoundryFineTuningJobTrigger) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first(), timeout=60))


def test_trigger_polls_the_simulator_until_the_job_ends(truefoundry_conn: Any) -> None:
    # The connection is read with the compat layer's async accessors: BaseHook.aget_connection
    # where the version has a safe one, the sync accessor in a worker thread where it does not
    # (Airflow 2.11 has none at all).
    sim = truefoundry_conn()
    job = sim.add_job(statuses=("queued", "running", "succeeded"))

    event = _first_event(
        TrueFoundryFineTuningJobTrigger(job_id=job.id, poll_interval=0.05, deadline=time.time() + 60)
    )

    assert event["status"] == "succeeded"
    assert event["job"]["fine_tuned_model"]
    assert sim.request_count(job.id) == 3


def test_trigger_reports_a_rejected_key_as_an_error_event(truefoundry_conn: Any) -> None:
    sim = truefoundry_conn(password="not-the-key")
    job = sim.add_job()

    event = _first_event(
        TrueFoundryFineTuningJobTrigger(job_id=job.id, poll_interval=0.05, deadline=time.time() + 60)
    )

    assert event["status"] == "error"
    assert event["kind"] == "auth"
    assert event["status_code"] == 401


def test_trigger_survives_the_metadata_db_round_trip() -> None:
    """The triggerer rebuilds the trigger from what ``Trigger.from_object`` stores."""
    from airflow.models.trigger import Trigger

    trigger = TrueFoundryFineTuningJobTrigger(
        job_id="ftjob-abc",
        poll_interval=5,
        deadline=time.time() + 600,
        hook_params={"timeout": 10, "max_retries": 2},
        provider_name="openai-main",
        metadata={"team": "ml-platform"},
        last_status="running",
    )

    row = Trigger.from_object(trigger)
    rebuilt = import_string(row.classpath)(**row.kwargs)

    assert type(rebuilt) is TrueFoundryFineTuningJobTrigger
    assert rebuilt.serialize() == trigger.serialize()
