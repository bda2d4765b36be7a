"""``start_from_trigger=True``: the sensor's task starts in the triggerer, no worker first.

The scheduler's own ``DagRun.schedule_tis`` defers the task (real metadata DB); the trigger is
built from the stored row and rendered the way Airflow 3.3's triggerer does it, then runs against
the simulator and its event goes to ``execute_complete``. ``dag.test()`` never starts a task in
the triggerer (it runs every task in-process), so there the sensor's own path runs.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowSensorTimeout

from airflow_provider_tfy.events import TIMEOUT_GRACE
from airflow_provider_tfy.exceptions import FineTuningJobFailed
from airflow_provider_tfy.sensors import fine_tuning as sensor_module
from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor
from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger

from .conftest import (
    assert_secret_free,
    build_sensor_dag,
    run_dag,
    run_trigger,
    task_states,
    xcom_value,
)

SENSOR = "wait_for_fine_tuning"
pytestmark = pytest.mark.usefixtures("airflow_db")


def scheduler_defers(dag: Any, conf: dict[str, Any]) -> tuple[Any, Any]:
    """A run of ``dag`` whose sensor the scheduler's ``schedule_tis`` defers: (task instance, trigger row)."""
    from airflow.models.dagrun import get_or_create_dagrun
    from airflow.models.trigger import Trigger
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    now = datetime.now(UTC)
    with create_session() as session:
        run = get_or_create_dagrun(
            dag=scheduler_dag,
            run_id=f"sft_{time.time_ns()}",
            logical_date=None,
            data_interval=None,
            run_after=now,
            conf=conf,
            triggered_by=DagRunTriggeredByType.TEST,
            triggering_user_name="test",
            start_date=now,
            session=session,
        )
        run.dag = scheduler_dag
        ti = next(ti for ti in run.get_task_instances(session=session) if ti.task_id == SENSOR)
        ti.task = scheduler_dag.get_task(SENSOR)
        assert run.schedule_tis([ti], session=session) == 0  # none queued for a worker
        session.flush()
        trigger = session.get(Trigger, ti.trigger_id)
        session.expunge_all()
    return ti, trigger


def start_like_the_triggerer(ti: Any, trigger_row: Any, dag: Any) -> tuple[Any, dict[str, Any]]:
    """The trigger as Airflow 3.3's triggerer starts it: from the row, rendered in a task context."""
    from airflow.executors.workloads.task import TaskInstanceDTO
    from airflow.jobs.triggerer_job_runner import TriggerRunner
    from airflow.models.dagrun import DagRun
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=ti.dag_id, run_id=ti.run_id).one()
        dag_run_data = run.dag_run_data.model_dump(exclude_unset=True) if hasattr(run, "dag_run_data") else {}
    trigger = TrueFoundryFineTuningJobTrigger(**trigger_row.kwargs)
    dto = TaskInstanceDTO.model_validate(ti, from_attributes=True)
    runtime_ti = TriggerRunner.create_runtime_ti(dto, DagSerialization.to_dict(dag), dag_run_data)
    context = runtime_ti.get_template_context()
    trigger.task_instance = runtime_ti
    trigger.timeout_after = ti.trigger_timeout
    trigger.render_template_fields(context=context)
    return trigger, context


@pytest.mark.parametrize("templated", [True, False], ids=["templated", "literal"])
def test_the_scheduler_defers_the_task_and_the_triggerer_finishes_it(connected_gateway, api_key, templated):
    job = connected_gateway.add_job(statuses=("running", "succeeded"), fine_tuned_model="ft:m")
    dag = build_sensor_dag(
        "sft",
        job_id="{{ params.job_id }}" if templated else job.id,
        deferrable=True,
        start_from_trigger=True,
        consumer=False,
    )

    ti, row = scheduler_defers(dag, {"job_id": job.id})

    # Straight to deferred, try 1, no worker: nothing has polled the gateway yet.
    assert (str(ti.state), ti.try_number, ti.next_method) == ("deferred", 1, "execute_complete")
    assert connected_gateway.request_count(job.id) == 0
    assert row.classpath == "airflow_provider_tfy.triggers.fine_tuning.TrueFoundryFineTuningJobTrigger"
    assert_secret_free(api_key, json.dumps(row.kwargs, default=str))
    assert row.kwargs["job_id"] == ("{{ params.job_id }}" if templated else job.id)  # as parsed
    trigger, context = start_like_the_triggerer(ti, row, dag)
    assert trigger.job_id == job.id

    payload = run_trigger(trigger)[0].payload

    # Airflow's timeout is the sensor's plus the grace; the trigger's deadline is the sensor's.
    assert trigger.deadline == pytest.approx(ti.trigger_timeout.timestamp() - TIMEOUT_GRACE)
    assert trigger.deadline == pytest.approx(ti.start_date.timestamp() + 60.0, abs=2)
    sensor = dag.get_task(SENSOR)
    sensor.render_template_fields(context)
    xcom = sensor.execute_complete(context, payload)
    assert (xcom["id"], xcom["status"], xcom["fine_tuned_model"]) == (job.id, "succeeded", "ft:m")


def test_a_taken_over_trigger_keeps_the_deadline_airflow_fixed(connected_gateway):
    job = connected_gateway.add_job(statuses=("running",), polls_per_status=1000)
    dag = build_sensor_dag("sft_timeout", job_id=job.id, deferrable=True, start_from_trigger=True, timeout=1)
    ti, row = scheduler_defers(dag, {})
    time.sleep(0.5)  # the first triggerer went away; a second one starts the same row

    trigger, context = start_like_the_triggerer(ti, row, dag)
    payload = run_trigger(trigger)[0].payload

    assert trigger.deadline == pytest.approx(ti.start_date.timestamp() + 1, abs=0.5)
    assert time.time() < ti.start_date.timestamp() + 3  # not 1 s from the takeover, nor Airflow's
    with pytest.raises(AirflowSensorTimeout, match="did not finish before the sensor's timeout"):
        dag.get_task(SENSOR).execute_complete(context, payload)


def test_a_trigger_without_airflows_timeout_waits_from_its_start(connected_gateway):
    job = connected_gateway.add_job(statuses=("running",), polls_per_status=1000)
    trigger = TrueFoundryFineTuningJobTrigger(job_id=job.id, poll_interval=0.05, timeout=0.3)
    started = time.time()
    assert run_trigger(trigger)[0].payload["status"] == "timeout"
    assert 0.3 <= time.time() - started < 2


@pytest.mark.parametrize("templated", [True, False], ids=["templated", "literal"])
def test_dag_test_runs_it_in_process_and_succeeds(connected_gateway, capfd, templated):
    job = connected_gateway.add_job(statuses=("queued", "running", "succeeded"))
    dag = build_sensor_dag(
        "sft_dagtest",
        job_id="{{ params.job_id }}" if templated else job.id,
        deferrable=True,
        start_from_trigger=True,
    )
    run, _ = run_dag(dag, capfd, run_conf={"job_id": job.id})
    assert task_states(run) == {SENSOR: "success", "register_model": "success"}
    assert xcom_value(run, SENSOR)["id"] == job.id


def test_a_failed_job_fails_the_task_with_the_gateways_reason(connected_gateway):
    job = connected_gateway.add_job(
        statuses=("running", "failed"), error={"code": "invalid_file", "message": "bad line 7"}
    )
    dag = build_sensor_dag("sft_failed", job_id=job.id, deferrable=True, start_from_trigger=True)
    ti, row = scheduler_defers(dag, {})
    trigger, context = start_like_the_triggerer(ti, row, dag)
    payload = run_trigger(trigger)[0].payload
    with pytest.raises(FineTuningJobFailed, match="bad line 7"):
        dag.get_task(SENSOR).execute_complete(context, payload)


def test_start_from_trigger_without_deferrable_is_refused_at_parse_time():
    with pytest.raises(ValueError, match="start_from_trigger needs deferrable=True"):
        TrueFoundryFineTuningJobSensor(task_id="s", job_id="ftjob-1", start_from_trigger=True)


@pytest.mark.parametrize(
    ("line", "job_id", "phrase"),
    [
        (None, "ftjob-1", r"not supported on Airflow 3\.1-3\.2"),
        ("literal", "{{ params.job_id }}", "takes no templated job_id"),
        ("literal", "{{ ti.xcom_pull('create') }}", "takes no templated job_id"),
    ],
)
def test_what_a_line_cannot_do_is_refused_at_parse_time(monkeypatch, line, job_id, phrase):
    monkeypatch.setattr(sensor_module, "START_FROM_TRIGGER", line)
    with pytest.raises(ValueError, match=phrase):
        TrueFoundryFineTuningJobSensor(task_id="s", job_id=job_id, deferrable=True, start_from_trigger=True)


def test_a_literal_job_id_works_where_nothing_is_rendered(monkeypatch):
    monkeypatch.setattr(sensor_module, "START_FROM_TRIGGER", "literal")
    sensor = TrueFoundryFineTuningJobSensor(
        task_id="s", job_id="ftjob-1", deferrable=True, start_from_trigger=True, timeout=timedelta(minutes=5)
    )
    args = sensor.start_trigger_args
    assert sensor.start_from_trigger is True
    assert args.trigger_kwargs["job_id"] == "ftjob-1"
    assert args.trigger_kwargs["timeout"] == 300
    assert args.timeout == timedelta(seconds=300 + TIMEOUT_GRACE)
