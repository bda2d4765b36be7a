"""The sensor's task reaches the triggerer without a worker running it (``start_from_trigger``)."""

from __future__ import annotations

import secrets

import pytest
from airflow_stack import REGISTER, SENSOR, AirflowStack, wait_until

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

DAG = "systest_start_from_trigger"


def test_deferred_without_a_worker_then_success_with_the_jobs_xcom(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    job_id = f"ftjob-sft-{secrets.token_hex(3)}"
    stack.simulator.add_job(job_id, statuses=("running",))
    run_id = stack.trigger_run(DAG, job_id)

    def polled_from_the_triggerer() -> bool:
        stack.check_alive()
        ti = stack.task_instances(DAG, run_id).get(SENSOR, {})
        return ti.get("state") == "deferred" and stack.simulator.request_count(job_id) >= 2

    wait_until(polled_from_the_triggerer, 180, "the sensor deferred and polling from the triggerer")
    ti = stack.task_instances(DAG, run_id)[SENSOR]
    folder = stack.task_log_dir / f"dag_id={DAG}" / f"run_id={run_id}" / f"task_id={SENSOR}"
    # No worker ran try 1: no task log of its own, only the trigger's; the templated id reached it.
    assert ti["try_number"] == 1
    assert not (folder / "attempt=1.log").exists(), sorted(p.name for p in folder.iterdir())
    assert stack.trigger_log_files(DAG, run_id, SENSOR), "no trigger log"
    assert "running" not in stack.events_of(DAG, run_id, SENSOR)
    (trigger,) = [t for t in stack.triggers() if t["run_id"] == run_id]
    assert trigger["classpath"].endswith(".TrueFoundryFineTuningJobTrigger")

    stack.simulator.set_job(job_id, statuses=("succeeded",))
    assert stack.wait_for_runs(DAG, [run_id]) == {run_id: "success"}
    assert stack.task_states(DAG, run_id) == {SENSOR: "success", REGISTER: "success"}
    assert stack.xcom(DAG, run_id, SENSOR)["id"] == job_id
    assert stack.task_instances(DAG, run_id)[SENSOR]["try_number"] == 1
