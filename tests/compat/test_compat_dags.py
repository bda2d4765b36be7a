"""``dag.test()`` of the example DAG in its three modes (poke, reschedule, deferrable).

Each ``dag.test()`` costs seconds on every Airflow line, so one run checks all it can: the
success run per mode also proves the key reaches no output, no deprecation warning is ours, and
Airflow's nested-execute guard is passed.

``dag.test()`` runs the tasks in this process, the deferred wait included (the trigger runs
inline), against the simulator; the DagRun and task-instance states are read back from the
metadata DB, as the scheduler would leave them.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from compat_helpers import (
    AIRFLOW_30,
    AIRFLOW_30_RESCHEDULE_BUG,
    airflow_30_dag_test_reschedule_bug,
    assert_key_in_no_output,
    task_states,
    xcom_return_value,
)

from airflow_provider_tfy.testing import Fault, GatewaySimulator

SENSOR = "wait_for_fine_tuning"
NEXT = "register_model"
MODES = {
    "poke": "example_truefoundry_fine_tuning",
    "reschedule": "example_truefoundry_fine_tuning_reschedule",
    "deferrable": "example_truefoundry_fine_tuning_deferrable",
}


def _dag(example_dags: ModuleType, mode: str) -> Any:
    dag = {
        "poke": example_dags.poke_dag,
        "reschedule": example_dags.reschedule_dag,
        "deferrable": example_dags.deferrable_dag,
    }[mode]
    assert dag.dag_id == MODES[mode]
    return dag


def _allow_one_retry(dag: Any) -> None:
    sensor = dag.get_task(SENSOR)
    sensor.retries = 1
    sensor.retry_delay = timedelta(0)


def test_example_dag_file_parses(example_dags: ModuleType) -> None:
    for mode in MODES:
        _dag(example_dags, mode)
    assert example_dags.deferrable_dag.get_task(SENSOR).deferrable is True
    assert example_dags.poke_dag.get_task(SENSOR).mode == "poke"
    assert example_dags.reschedule_dag.get_task(SENSOR).mode == "reschedule"


@pytest.mark.parametrize("mode", list(MODES))
def test_job_that_succeeds(
    mode: str,
    example_dags: ModuleType,
    airflow_db: Path,
    gateway_with_secret_key: GatewaySimulator,
    secret_key: str,
    provider_warnings: list[str],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The whole wait, in one run per mode: the run, its XCom, no key in any output, no
    deprecation warning of ours, and Airflow's nested-execute guard (the sensor's execute hands
    poke and reschedule to BaseSensorOperator.execute; Airflow 2.11's guard, unhelped, fails
    that: apache/airflow#41470)."""
    caplog.set_level(logging.DEBUG)
    sim = gateway_with_secret_key
    job = sim.add_job(statuses=("queued", "running", "succeeded"))
    dag = _dag(example_dags, mode)
    dag.get_task(SENSOR).allow_nested_operators = False

    run = dag.test(run_conf={"job_id": job.id})

    # The output first, so a leak is reported even when the run fails.
    assert_key_in_no_output(secret_key, airflow_db, capfd, caplog)
    assert provider_warnings == []
    states = task_states(run)
    if AIRFLOW_30 and mode == "reschedule":
        # Airflow 3.0.x's own dag.test() bug (compat_helpers.airflow_30_dag_test_reschedule_bug):
        # the run fails at the sensor's second poke; the output was still checked above.
        assert run.state == "failed", "Airflow 3.0.x's reschedule bug is gone: drop this branch"
        pytest.xfail(AIRFLOW_30_RESCHEDULE_BUG)
    assert run.state == "success", states
    assert states[SENSOR] == ("success", 1)
    assert states[NEXT] == ("success", 1)
    # The job reached the next task through XCom, and its model is what that task returned.
    fine_tuned_model = sim.get_job(job.id).peek()["fine_tuned_model"]
    assert xcom_return_value(run, SENSOR)["fine_tuned_model"] == fine_tuned_model
    assert xcom_return_value(run, NEXT) == fine_tuned_model
    # One poke saw "queued"; the rest of the wait (in the triggerer, when deferrable) saw the others.
    assert sim.request_count(job.id) >= 3


# Both final states, across the three modes (they share one outcome rule, protocol-side).
@pytest.mark.parametrize(
    ("mode", "final"),
    [
        pytest.param("poke", "cancelled"),
        pytest.param("reschedule", "failed", marks=airflow_30_dag_test_reschedule_bug),
        pytest.param("deferrable", "failed"),
    ],
)
def test_job_that_fails(mode: str, final: str, example_dags: ModuleType, truefoundry_conn: Any) -> None:
    sim = truefoundry_conn()
    job = sim.add_job(statuses=("queued", "running", final))
    dag = _dag(example_dags, mode)
    # The task has a retry to spend; a failed or cancelled job must not spend it.
    _allow_one_retry(dag)

    run = dag.test(run_conf={"job_id": job.id})

    states = task_states(run)
    assert run.state == "failed", states
    assert states[SENSOR] == ("failed", 1), "a failed job must fail the task at once, without a retry"
    assert states[NEXT][0] == "upstream_failed"
    assert xcom_return_value(run, NEXT) is None


def test_plain_api_error_does_use_task_retries(example_dags: ModuleType, truefoundry_conn: Any) -> None:
    """Control for the test above: an error that is not final is retried, so the retry was real."""
    sim = truefoundry_conn()
    job = sim.add_job(faults=[Fault.status(400), Fault.status(400)])
    dag = _dag(example_dags, "poke")
    _allow_one_retry(dag)

    run = dag.test(run_conf={"job_id": job.id})

    states = task_states(run)
    assert run.state == "failed", states
    assert states[SENSOR] == ("failed", 2)


@pytest.mark.skipif(not AIRFLOW_30, reason="the other lines run reschedule mode with our sensor above")
def test_airflows_own_reschedule_sensor_fails_under_dag_test_on_3_0(airflow_db: Any) -> None:
    """Control for ``sensor_modes``: Airflow 3.0.x's ``dag.test()`` fails a reschedule-mode sensor of
    Airflow's own, with no provider code involved: at the first poke after a reschedule that
    does not end the wait, when the sensor checks its timeout against the first reschedule date."""
    from datetime import datetime

    from airflow.providers.common.compat.sdk import DAG, BaseSensorOperator

    class ThirdPokeSensor(BaseSensorOperator):
        pokes = 0

        def poke(self, context: Any) -> bool:
            type(self).pokes += 1
            return type(self).pokes > 2

    with DAG("tfy_compat_airflow_reschedule", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        ThirdPokeSensor(task_id="sensor", mode="reschedule", poke_interval=0.2, timeout=60)

    run = dag.test()

    assert ThirdPokeSensor.pokes == 2  # the second try poked, then died checking its timeout
    assert run.state == "failed", task_states(run)
