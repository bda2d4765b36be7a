"""Whole DAG runs (``dag.test()``) of the example pipelines and of small test pipelines.

The sensor talks to the gateway simulator over real HTTP through a real Airflow connection; in
deferrable mode ``dag.test()`` runs the trigger inline. ``dag.test()`` does not raise when a task
fails, so every test asserts on the run's state, its task instances, XComs and the task logs
(Airflow prints them to the console, captured with ``capfd``).
"""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime, timedelta
from typing import Any

import pytest

from airflow_provider_tfy.testing import Fault

from .conftest import (
    CONN_ID,
    MODES,
    all_xcoms_text,
    assert_secret_free,
    build_sensor_dag,
    example_dag,
    has_xcom,
    log_messages,
    rendered_fields,
    run_dag,
    task_instances,
    task_states,
    xcom_value,
)

pytestmark = pytest.mark.usefixtures("airflow_db", "example_env")

SENSOR = "wait_for_fine_tuning"
CONSUMER = "register_model"
JOB_ERROR = {
    "code": "invalid_training_file",
    "message": "Line 3 is not valid JSON.",
    "param": "training_file",
}
DEFERRED_LINE = "Pausing task as DEFERRED"
RESCHEDULE_LINE = "marking task as UP_FOR_RESCHEDULE"
SKIPPED_LINE = "Skipping task."


def assert_mode_was_used(mode: str, output: str) -> None:
    """The run really waited the way its mode says (so a parametrised case is not a copy)."""
    assert (DEFERRED_LINE in output) is (mode == "deferrable")
    assert (RESCHEDULE_LINE in output) is (mode == "reschedule")


def status_lines(output: str, job_id: str, status: str) -> list[str]:
    pattern = re.compile(rf"Fine-tuning job {re.escape(job_id)}: status={status}\b")
    return [line for line in output.splitlines() if pattern.search(line)]


def assert_key_nowhere(key: str, run: Any, output: str, caplog: pytest.LogCaptureFixture) -> None:
    """The key is in no task log, rendered template field, XCom or log record of the run."""
    assert output.strip(), "nothing was captured: the check below would prove nothing"
    fields = rendered_fields(run)
    assert fields, "no rendered fields were stored"
    assert_secret_free(
        key, output, json.dumps(fields, default=str), all_xcoms_text(run), *log_messages(caplog)
    )


# ------------------------------------------------------------------------------------------
# The example pipelines: succeeded, failed, cancelled, in every mode
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_example_pipeline_hands_a_succeeded_jobs_model_downstream(
    example_module, connected_gateway, api_key, capfd, caplog, mode
):
    job = connected_gateway.add_job(statuses=("queued", "running", "succeeded"), trained_tokens=120_000)

    run, output = run_dag(example_dag(example_module, mode), capfd, run_conf={"job_id": job.id})

    assert run.state == "success"
    assert task_states(run) == {SENSOR: "success", CONSUMER: "success"}
    assert_mode_was_used(mode, output)
    xcom = xcom_value(run, SENSOR)
    assert xcom["id"] == job.id
    assert xcom["status"] == "succeeded"
    assert xcom["fine_tuned_model"] == job.fine_tuned_model
    assert xcom["trained_tokens"] == 120_000
    assert xcom["result_files"] == [job.result_file]
    assert xcom_value(run, CONSUMER) == job.fine_tuned_model
    assert f"Registering fine-tuned model {job.fine_tuned_model} (job {job.id}, 120000 tokens)" in output
    assert rendered_fields(run)[SENSOR]["job_id"] == job.id  # templated from params
    assert connected_gateway.request_count(job.id) == 3
    assert_key_nowhere(api_key, run, output, caplog)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(
    ("final", "exception", "reason"),
    [
        ("failed", "FineTuningJobFailed", "failed: invalid_training_file: Line 3 is not valid JSON."),
        ("cancelled", "FineTuningJobCancelled", "was cancelled before it finished; no model was produced."),
    ],
)
def test_example_pipeline_fails_on_a_job_that_ended_badly(
    example_module, connected_gateway, api_key, capfd, caplog, mode, final, exception, reason
):
    job = connected_gateway.add_job(statuses=("queued", "running", final), error=JOB_ERROR)

    run, output = run_dag(example_dag(example_module, mode), capfd, run_conf={"job_id": job.id})

    assert run.state == "failed"
    assert task_states(run) == {SENSOR: "failed", CONSUMER: "upstream_failed"}
    assert_mode_was_used(mode, output)
    assert f"{exception}: Fine-tuning job '{job.id}' {reason}" in output
    assert not has_xcom(run, SENSOR)
    assert not has_xcom(run, CONSUMER)
    assert "Registering fine-tuned model" not in output
    assert connected_gateway.request_count(job.id) == 3
    assert task_instances(run)[SENSOR].try_number == 1
    assert_key_nowhere(api_key, run, output, caplog)


def test_the_xcom_is_identical_in_every_mode_for_the_same_job(example_module, connected_gateway, capfd):
    job_id = "ftjob-same-in-every-mode"
    # What the simulator randomises or takes from the clock, pinned, so every run serves one document.
    pinned = {
        "training_file": "file-train-pinned",
        "seed": 7,
        "created_at": 1_750_000_000,
        "finished_at": 1_750_003_600,
        "result_files": ["file-result-pinned"],
    }
    xcoms, served = {}, {}
    for mode in MODES:
        # The same job, scripted afresh: it is queued, then running, then done in every run.
        scripted = connected_gateway.set_job(
            job_id,
            statuses=("queued", "running", "succeeded"),
            trained_tokens=99_000,
            metadata={"team": "ml"},
            extra_fields=pinned,
        )
        run, output = run_dag(example_dag(example_module, mode), capfd, run_conf={"job_id": job_id})
        assert run.state == "success", mode
        assert_mode_was_used(mode, output)
        xcoms[mode] = xcom_value(run, SENSOR)
        served[mode] = scripted.render(len(scripted.statuses) - 1)  # the document of the last poll

    assert served["poke"] == served["reschedule"] == served["deferrable"]
    assert xcoms["poke"] == served["poke"]  # the job exactly as the gateway sent it
    assert xcoms["reschedule"] == xcoms["poke"]
    assert xcoms["deferrable"] == xcoms["poke"]
    assert xcoms["poke"]["id"] == job_id
    assert xcoms["poke"]["status"] == "succeeded"
    assert xcoms["poke"]["fine_tuned_model"] == f"ft:gpt-4o-mini-2024-07-18:tfy::{job_id}"
    assert xcoms["poke"]["trained_tokens"] == 99_000
    assert xcoms["poke"]["result_files"] == ["file-result-pinned"]
    assert xcoms["poke"]["metadata"] == {"team": "ml"}


# ------------------------------------------------------------------------------------------
# Gateway trouble against the sensor's timeout
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_an_outage_longer_than_the_hooks_retries_but_shorter_than_the_timeout_still_succeeds(
    connected_gateway, capfd, mode
):
    job = connected_gateway.add_job(statuses=("running", "succeeded"))
    failing = itertools.count(1)
    # 3 failed requests: a whole poke (first try + 1 retry) fails, then the next one's first try.
    connected_gateway.outage(until=lambda: next(failing) > 3, fault=Fault.server_error(503))
    dag = build_sensor_dag("tfy_outage_short", **MODES[mode])

    run, output = run_dag(dag, capfd, run_conf={"job_id": job.id})

    assert run.state == "success"
    assert task_states(run) == {SENSOR: "success", CONSUMER: "success"}
    assert_mode_was_used(mode, output)
    statuses = [r.status for r in connected_gateway.requests]
    assert statuses == [503, 503, 503, 200, 200]
    assert xcom_value(run, CONSUMER) == job.fine_tuned_model
    waiting = "Polling job" if mode == "deferrable" else "will try again"
    assert any(waiting in line and job.id in line for line in output.splitlines())


@pytest.mark.parametrize("soft_fail", [False, True], ids=["hard", "soft_fail"])
@pytest.mark.parametrize("mode", list(MODES))
def test_an_outage_longer_than_the_timeout_times_the_sensor_out(connected_gateway, capfd, mode, soft_fail):
    job = connected_gateway.add_job(statuses=("running", "succeeded"))
    connected_gateway.outage(fault=Fault.server_error(503))
    dag = build_sensor_dag(
        "tfy_outage_long",
        timeout=1.0,
        soft_fail=soft_fail,
        retries=1,
        retry_delay=timedelta(0),
        **MODES[mode],
    )

    run, output = run_dag(dag, capfd, run_conf={"job_id": job.id})

    assert_mode_was_used(mode, output)
    assert task_instances(run)[SENSOR].try_number == 1  # a timeout is final: the task retry is unused
    if soft_fail:
        assert SKIPPED_LINE in output
        assert "AirflowSensorTimeout" not in output
        assert run.state == "success"
        assert task_states(run) == {SENSOR: "skipped", CONSUMER: "skipped"}
    else:
        assert "AirflowSensorTimeout" in output
        assert run.state == "failed"
        assert task_states(run) == {SENSOR: "failed", CONSUMER: "upstream_failed"}
    assert connected_gateway.request_count(job.id) >= 2
    assert {r.status for r in connected_gateway.requests} == {503}


# ------------------------------------------------------------------------------------------
# Errors no retry can mend
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("soft_fail", [pytest.param(False, id="hard"), pytest.param(True, id="soft_fail")])
@pytest.mark.parametrize("mode", list(MODES))
def test_an_unknown_job_fails_without_retries_or_skips_with_soft_fail(
    request, connected_gateway, capfd, mode, soft_fail
):
    job_id = "ftjob-unknown"
    dag = build_sensor_dag(
        "tfy_not_found", soft_fail=soft_fail, retries=2, retry_delay=timedelta(0), **MODES[mode]
    )

    run, output = run_dag(dag, capfd, run_conf={"job_id": job_id})

    assert connected_gateway.request_count(job_id) == 1  # one request: no hook retry, no task retry
    assert task_instances(run)[SENSOR].try_number == 1
    if soft_fail:
        assert task_states(run) == {SENSOR: "skipped", CONSUMER: "skipped"}
        assert run.state == "success"
        assert SKIPPED_LINE in output
    else:
        assert f"FineTuningJobNotFound: Fine-tuning job {job_id!r} was not found" in output
        assert run.state == "failed"
        assert task_states(run) == {SENSOR: "failed", CONSUMER: "upstream_failed"}


@pytest.mark.parametrize("soft_fail", [False, True], ids=["hard", "soft_fail"])
def test_a_job_that_disappears_while_deferred_fails_or_skips(connected_gateway, capfd, soft_fail):
    # The sensor's first poke sees the job; the trigger's first poll gets a 404.
    job = connected_gateway.add_job(
        statuses=("queued", "succeeded"), faults=[Fault.delay(0), Fault.status(404)]
    )
    dag = build_sensor_dag(
        "tfy_gone", soft_fail=soft_fail, retries=2, retry_delay=timedelta(0), deferrable=True
    )

    run, output = run_dag(dag, capfd, run_conf={"job_id": job.id})

    assert_mode_was_used("deferrable", output)
    assert [r.status for r in connected_gateway.requests] == [200, 404]
    assert task_instances(run)[SENSOR].try_number == 1
    if soft_fail:
        assert SKIPPED_LINE in output
        assert task_states(run) == {SENSOR: "skipped", CONSUMER: "skipped"}
    else:
        assert f"FineTuningJobNotFound: Fine-tuning job {job.id!r} was not found" in output
        assert task_states(run) == {SENSOR: "failed", CONSUMER: "upstream_failed"}


def test_an_error_airflow_may_retry_is_retried(connected_gateway, capfd):
    # Contrast for the tests above: a 400 is not an AirflowFailException, so task retries apply.
    job = connected_gateway.add_job(statuses=("running",), faults=[Fault.status(400)] * 3)
    dag = build_sensor_dag("tfy_bad_request", retries=2, retry_delay=timedelta(0), consumer=False)

    run, output = run_dag(dag, capfd, run_conf={"job_id": job.id})

    assert run.state == "failed"
    assert task_states(run) == {SENSOR: "failed"}
    assert task_instances(run)[SENSOR].try_number == 3
    assert connected_gateway.request_count(job.id) == 3
    assert "HTTP 400" in output


# ------------------------------------------------------------------------------------------
# Templating
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_the_job_id_can_come_from_an_upstream_tasks_xcom(connected_gateway, api_key, capfd, caplog, mode):
    job = connected_gateway.add_job(statuses=("queued", "succeeded"))
    dag = build_sensor_dag(
        "tfy_from_xcom",
        job_id="{{ ti.xcom_pull(task_ids='create_job') }}",
        upstream_job_id=job.id,
        provider_name="{{ params.account }}",
        params={"account": "openai-main"},
        **MODES[mode],
    )

    run, output = run_dag(dag, capfd)

    assert run.state == "success"
    assert task_states(run) == {"create_job": "success", SENSOR: "success", CONSUMER: "success"}
    fields = rendered_fields(run)[SENSOR]
    assert fields["job_id"] == job.id
    assert fields["provider_name"] == "openai-main"
    assert xcom_value(run, SENSOR)["id"] == job.id
    assert connected_gateway.request_count(job.id) == 2
    assert {r.headers.get("x-tfy-provider-name") for r in connected_gateway.requests} == {"openai-main"}
    assert_key_nowhere(api_key, run, output, caplog)


# ------------------------------------------------------------------------------------------
# Logging
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "running_lines"),
    [
        pytest.param("poke", 1, id="poke"),
        # Documented (README, Logging): each reschedule is a fresh run of the sensor, so the current
        # status is logged once per reschedule: once per poke here, but never twice in one poke.
        pytest.param("reschedule", 3, id="reschedule"),
        pytest.param("deferrable", 1, id="deferrable"),
    ],
)
def test_each_status_change_is_logged_once_not_per_poke(connected_gateway, capfd, mode, running_lines):
    job = connected_gateway.add_job(statuses=("queued", "running", "running", "running", "succeeded"))
    dag = build_sensor_dag("tfy_log_once", consumer=False, **MODES[mode])

    run, output = run_dag(dag, capfd, run_conf={"job_id": job.id})

    assert run.state == "success"
    assert_mode_was_used(mode, output)
    assert connected_gateway.request_count(job.id) == 5
    counts = {
        status: len(status_lines(output, job.id, status)) for status in ("queued", "running", "succeeded")
    }
    assert counts == {"queued": 1, "running": running_lines, "succeeded": 1}


# ------------------------------------------------------------------------------------------
# Definition-time checks
# ------------------------------------------------------------------------------------------


def test_hook_params_with_an_unknown_key_fail_at_dag_definition():
    from airflow.sdk import DAG

    from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor

    with (
        pytest.raises(ValueError, match=r"hook_params has unknown keys \['retries'\]"),
        DAG(dag_id="tfy_bad_hook_params", schedule=None, start_date=datetime(2026, 1, 1)),
    ):
        TrueFoundryFineTuningJobSensor(
            task_id=SENSOR, job_id="ftjob-1", truefoundry_conn_id=CONN_ID, hook_params={"retries": 3}
        )
