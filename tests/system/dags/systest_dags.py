"""DAGs the system tests drive (copied with ``example_dags/`` into the stack's DAGs folder).

Each gates on the job named by the ``job_id`` param and hands the fine-tuned model on, like the
example DAG, with settings the scenarios need: a one-second poll, a long or a short deadline, and
a poke-mode sensor with retries (its retry must pick the wait up after its process is killed).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor

POLL_SECONDS = 1.0
#: The sensor timeout of ``systest_deadline``: short, so a wait that never ends times out in the test.
DEADLINE_SECONDS = 45.0


@task
def register_model(job: dict[str, Any]) -> str:
    model = job["fine_tuned_model"]
    print(f"Registering fine-tuned model {model} (job {job['id']})")
    return model


def pipeline(dag_id: str, *, default_args: dict[str, Any] | None = None, **sensor_kwargs: Any) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        # The scenarios run 20 runs of one DAG at once; Airflow's default cap is 16.
        max_active_runs=64,
        max_active_tasks=64,
        params={"job_id": Param("ftjob-unset", type="string", minLength=1)},
        default_args=default_args or {},
        tags=["truefoundry", "system-test"],
    ) as dag:
        wait = TrueFoundryFineTuningJobSensor(
            task_id="wait_for_fine_tuning",
            job_id="{{ params.job_id }}",
            poke_interval=POLL_SECONDS,
            **sensor_kwargs,
        )
        register_model(wait.output)
    return dag


deferrable = pipeline("systest_deferrable", deferrable=True, timeout=900)
deadline = pipeline("systest_deadline", deferrable=True, timeout=DEADLINE_SECONDS)
poke_retry = pipeline(
    "systest_poke_retry",
    mode="poke",
    timeout=900,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=1)},
)
