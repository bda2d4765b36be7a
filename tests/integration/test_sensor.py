"""The sensor's methods called directly against the simulator, where a whole DAG run is overkill."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowSensorTimeout, PokeReturnValue, TaskDeferred

from airflow_provider_tfy.exceptions import (
    FineTuningJobCancelled,
    FineTuningJobFailed,
    FineTuningJobNotFound,
    TrueFoundryAuthError,
    TrueFoundryError,
)
from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor
from airflow_provider_tfy.testing import Fault
from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger

from .conftest import FAST_HOOK_PARAMS, assert_secret_free, new_api_key, run_trigger, structlog_lines


def make_sensor(job_id: str, **kwargs: Any) -> TrueFoundryFineTuningJobSensor:
    kwargs.setdefault("poke_interval", 0.1)
    kwargs.setdefault("timeout", 30)
    kwargs.setdefault("hook_params", dict(FAST_HOOK_PARAMS))
    return TrueFoundryFineTuningJobSensor(task_id=f"wait_{abs(hash(job_id))}", job_id=job_id, **kwargs)


# ------------------------------------------------------------------------------------------
# poke()
# ------------------------------------------------------------------------------------------


def test_poke_is_false_while_running_then_returns_the_job(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("queued", "running", "succeeded"))
    sensor = make_sensor(scripted.id)

    results = [sensor.poke(context={}) for _ in range(3)]

    assert results[:2] == [False, False]
    done = results[2]
    assert isinstance(done, PokeReturnValue)
    assert done.is_done
    assert done.xcom_value["id"] == scripted.id
    assert done.xcom_value["fine_tuned_model"] == scripted.fine_tuned_model
    assert connected_gateway.connections_opened == 1  # one hook, one session, across pokes


@pytest.mark.parametrize(
    ("final", "error_class", "phrase"),
    [
        ("failed", FineTuningJobFailed, "invalid_training_file"),
        ("cancelled", FineTuningJobCancelled, "cancelled"),
    ],
)
def test_poke_raises_for_a_job_that_ended_badly(connected_gateway, api_key, final, error_class, phrase):
    scripted = connected_gateway.add_job(statuses=(final,))

    with pytest.raises(error_class) as excinfo:
        make_sensor(scripted.id).poke(context={})

    assert repr(scripted.id) in str(excinfo.value)
    assert phrase in str(excinfo.value)
    assert excinfo.value.job.status == final
    assert_secret_free(api_key, excinfo.value)


def test_poke_keeps_waiting_through_transient_trouble(connected_gateway, capfd, api_key):
    scripted = connected_gateway.add_job(statuses=("succeeded",), faults=[Fault.server_error(503)] * 2)
    sensor = make_sensor(scripted.id)  # one retry per poke: a poke fails after two 503s
    capfd.readouterr()

    first = sensor.poke(context={})
    second = sensor.poke(context={})

    assert first is False
    assert isinstance(second, PokeReturnValue)
    assert connected_gateway.request_count(scripted.id) == 3
    warnings = [
        line for line in structlog_lines(capfd.readouterr().out, "warning") if "will try again" in line
    ]
    assert len(warnings) == 1
    assert scripted.id in warnings[0]
    assert_secret_free(api_key, *warnings)


@pytest.mark.parametrize("header_source", ["sensor", "connection-extra"])
def test_poke_sends_the_sensors_headers(gateway, set_connection, header_source):
    set_connection(gateway, extra={"provider_name": "from-extra"})
    scripted = gateway.add_job(statuses=("running",))
    kwargs = {"provider_name": "from-sensor", "metadata": {"team": "ml"}} if header_source == "sensor" else {}

    make_sensor(scripted.id, **kwargs).poke(context={})

    headers = gateway.requests[-1].headers
    if header_source == "sensor":
        assert headers["x-tfy-provider-name"] == "from-sensor"
        assert headers["x-tfy-metadata"] == '{"team":"ml"}'
    else:
        assert headers["x-tfy-provider-name"] == "from-extra"
        assert "x-tfy-metadata" not in headers


# ------------------------------------------------------------------------------------------
# execute() in deferrable mode
# ------------------------------------------------------------------------------------------


def test_a_deferrable_sensor_with_a_finished_job_never_defers(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("succeeded",))
    sensor = make_sensor(scripted.id, deferrable=True)

    xcom = sensor.execute(context={})  # raises TaskDeferred if it defers

    assert xcom["id"] == scripted.id
    assert xcom["status"] == "succeeded"
    assert xcom["fine_tuned_model"] == scripted.fine_tuned_model
    assert connected_gateway.request_count(scripted.id) == 1


def test_a_deferrable_sensor_with_a_failed_job_fails_without_deferring(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("failed",))

    with pytest.raises(FineTuningJobFailed):
        make_sensor(scripted.id, deferrable=True).execute(context={})

    assert connected_gateway.request_count(scripted.id) == 1


def test_a_deferrable_sensor_with_a_running_job_defers_with_a_key_free_trigger(
    gateway, set_connection, api_key
):
    set_connection(gateway, extra={"provider_name": "openai-main"})
    scripted = gateway.add_job(statuses=("queued", "running", "succeeded"))
    sensor = make_sensor(
        scripted.id, deferrable=True, timeout=123, poke_interval=0.1, provider_model="gpt-4o-mini"
    )

    before = time.time()
    with pytest.raises(TaskDeferred) as excinfo:
        sensor.execute(context={})
    after = time.time()

    deferred = excinfo.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == timedelta(seconds=123)
    trigger = deferred.trigger
    assert isinstance(trigger, TrueFoundryFineTuningJobTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath.endswith("TrueFoundryFineTuningJobTrigger")
    assert_secret_free(api_key, kwargs, json.dumps(kwargs), deferred)
    assert kwargs["job_id"] == scripted.id
    assert kwargs["poll_interval"] == 0.1
    assert before + 123 <= kwargs["deadline"] <= after + 123  # the sensor's timeout, as a wall-clock time
    assert kwargs["hook_params"] == FAST_HOOK_PARAMS
    assert kwargs["header_args"] == {"provider_model": "gpt-4o-mini"}
    assert kwargs["last_status"] == "queued"  # the trigger will not log "queued" a second time

    # The trigger it handed over finishes the wait against the same gateway.
    (event,) = run_trigger(trigger)
    assert sensor.execute_complete(context={}, event=event.payload)["id"] == scripted.id
    assert gateway.requests[-1].headers["x-tfy-provider-model"] == "gpt-4o-mini"


def test_a_deferrable_sensor_defers_through_a_transient_failure(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("succeeded",), faults=[Fault.server_error(502)] * 2)

    with pytest.raises(TaskDeferred):
        make_sensor(scripted.id, deferrable=True).execute(context={})

    assert connected_gateway.request_count(scripted.id) == 2


# ------------------------------------------------------------------------------------------
# execute_complete()
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        None,
        {},
        {"status": "weird"},
        {"status": "succeeded"},
        {"status": "failed", "job": "x"},
        "succeeded",
        [],
    ],
    ids=["none", "empty", "unknown-status", "no-job", "job-not-a-dict", "a-string", "a-list"],
)
def test_execute_complete_with_a_malformed_event_raises_a_clear_error(event):
    sensor = make_sensor("ftjob-1", deferrable=True)

    with pytest.raises(TrueFoundryError) as excinfo:
        sensor.execute_complete(context={}, event=event)

    message = str(excinfo.value)
    assert "TrueFoundry trigger" in message
    assert "clear the task" in message.lower()


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (("running", "succeeded"), None),
        (("running", "failed"), FineTuningJobFailed),
        (("running", "cancelled"), FineTuningJobCancelled),
    ],
)
def test_execute_complete_decides_like_poke(connected_gateway, statuses, expected):
    scripted = connected_gateway.add_job(statuses=statuses)
    other = connected_gateway.add_job(scripted.id + "-twin", statuses=statuses[-1:])
    deferred = make_sensor(scripted.id, deferrable=True)
    poker = make_sensor(other.id)

    (event,) = run_trigger(
        TrueFoundryFineTuningJobTrigger(job_id=scripted.id, poll_interval=0.05, deadline=time.time() + 10)
    )

    if expected is None:
        xcom = deferred.execute_complete(context={}, event=event.payload)
        assert xcom == event.payload["job"]
        assert poker.poke(context={}).xcom_value.keys() == xcom.keys()
    else:
        with pytest.raises(expected) as from_event:
            deferred.execute_complete(context={}, event=event.payload)
        with pytest.raises(expected) as from_poke:
            poker.poke(context={})
        assert str(from_event.value).replace(scripted.id, "ID") == str(from_poke.value).replace(
            other.id, "ID"
        )


def test_execute_complete_turns_a_timeout_event_into_a_sensor_timeout():
    sensor = make_sensor("ftjob-1", deferrable=True)
    event = {"status": "timeout", "job_id": "ftjob-1", "message": "Fine-tuning job 'ftjob-1' did not finish."}

    with pytest.raises(AirflowSensorTimeout, match="did not finish"):
        sensor.execute_complete(context={}, event=event)


@pytest.mark.parametrize(
    ("case", "error_class", "status_code"),
    [("unknown-job", FineTuningJobNotFound, 404), ("wrong-key", TrueFoundryAuthError, 401)],
)
def test_execute_complete_re_raises_the_triggers_error_as_poke_would(
    gateway, set_connection, api_key, case, error_class, status_code
):
    wrong_key = new_api_key()
    set_connection(gateway, password=wrong_key if case == "wrong-key" else api_key)
    job_id = "ftjob-nope" if case == "unknown-job" else gateway.add_job(statuses=("running",)).id
    (event,) = run_trigger(
        TrueFoundryFineTuningJobTrigger(job_id=job_id, poll_interval=0.05, deadline=time.time() + 10)
    )

    with pytest.raises(error_class) as from_event:
        make_sensor(job_id, deferrable=True).execute_complete(context={}, event=event.payload)
    with pytest.raises(error_class) as from_poke:
        make_sensor(job_id).poke(context={})

    assert from_event.value.status_code == from_poke.value.status_code == status_code
    assert str(from_event.value) == str(from_poke.value)
    assert_secret_free(api_key, from_event.value, event.payload)
    assert_secret_free(wrong_key, from_event.value, event.payload)


# ------------------------------------------------------------------------------------------
# Construction
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hook_params", [{"retries": 3}, {"timeout": 5, "max_retry": 2}, {"api_key": "x"}])
def test_unknown_hook_params_are_refused_at_definition(hook_params):
    with pytest.raises(ValueError, match="hook_params has unknown keys") as excinfo:
        make_sensor("ftjob-1", hook_params=hook_params)

    for key in set(hook_params) - {"timeout", "max_retries", "retry_delay"}:
        assert repr(key) in str(excinfo.value)
