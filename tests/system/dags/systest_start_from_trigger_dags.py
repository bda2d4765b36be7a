"""A sensor that starts in the triggerer (``start_from_trigger``), its job id templated from params."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor

with DAG(
    dag_id="systest_start_from_trigger",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"job_id": Param("ftjob-unset", type="string", minLength=1)},
    tags=["truefoundry", "system-test"],
):

    @task
    def register_model(job: dict) -> str:
        return str(job["fine_tuned_model"])

    wait = TrueFoundryFineTuningJobSensor(
        task_id="wait_for_fine_tuning",
        job_id="{{ params.job_id }}",  # rendered in the triggerer (Airflow 3.3+)
        poke_interval=1.0,
        timeout=900,
        deferrable=True,
        start_from_trigger=True,
    )
    register_model(wait.output)
