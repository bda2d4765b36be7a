"""Gate a pipeline on a TrueFoundry fine-tuning job.

The sensor waits for the job given as the ``job_id`` param; the next task receives the
fine-tuned model's name through XCom and would register or deploy it. The same pipeline is
defined three times, once per way of waiting:

- ``example_truefoundry_fine_tuning``: poke mode (holds a worker slot; fine for short waits),
- ``example_truefoundry_fine_tuning_reschedule``: frees the slot between pokes,
- ``example_truefoundry_fine_tuning_deferrable``: waits in the triggerer (best for hours-long jobs).

``TFY_EXAMPLE_POKE_INTERVAL`` (seconds, default 60) and ``TFY_EXAMPLE_TIMEOUT`` (seconds, default
12 hours) let the demo and tests poll faster and give up sooner.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor

POKE_INTERVAL = float(os.environ.get("TFY_EXAMPLE_POKE_INTERVAL", "60"))
TIMEOUT = float(os.environ.get("TFY_EXAMPLE_TIMEOUT", str(timedelta(hours=12).total_seconds())))


@task
def register_model(job: dict[str, Any]) -> str:
    """Stand-in for the next step: evaluate, register or deploy the fine-tuned model."""
    model = job["fine_tuned_model"]
    print(f"Registering fine-tuned model {model} (job {job['id']}, {job.get('trained_tokens')} tokens)")
    return model


def make_pipeline(dag_id: str, **sensor_kwargs: Any) -> DAG:
    """One pipeline: wait for the fine-tuning job, then hand its model on."""
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        params={"job_id": Param("ftjob-demo-succeeded", type="string", minLength=1)},
        tags=["truefoundry", "example"],
    ) as dag:
        wait = TrueFoundryFineTuningJobSensor(
            task_id="wait_for_fine_tuning",
            job_id="{{ params.job_id }}",
            truefoundry_conn_id="truefoundry_default",
            poke_interval=POKE_INTERVAL,
            timeout=TIMEOUT,
            **sensor_kwargs,
        )
        register_model(wait.output)
    return dag


poke_dag = make_pipeline("example_truefoundry_fine_tuning", mode="poke")
reschedule_dag = make_pipeline("example_truefoundry_fine_tuning_reschedule", mode="reschedule")
deferrable_dag = make_pipeline("example_truefoundry_fine_tuning_deferrable", deferrable=True)
