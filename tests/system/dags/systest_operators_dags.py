"""Create-and-wait DAGs for the operators' system tests (``tests/system/test_operators_stack.py``).

The training file id comes from the ``training_file`` param, so each test run has inputs of its
own (and so a job of its own). Polls are fast; the environment's ``TFY_*`` knobs do not reach the
stack, so the values are fixed here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_tfy.operators.fine_tuning import TrueFoundryCreateFineTuningJobOperator


@task
def register_model(job: dict[str, Any]) -> str:
    print(f"Registering fine-tuned model {job['fine_tuned_model']} (job {job['id']})")
    return str(job["fine_tuned_model"])


def create_and_wait(dag_id: str, *, deferrable: bool, retries: int) -> DAG:
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        params={"training_file": Param("file-unset", type="string", minLength=1)},
        tags=["truefoundry", "system-test"],
    ) as dag:
        fine_tune = TrueFoundryCreateFineTuningJobOperator(
            task_id="fine_tune",
            model="gpt-4o-mini-2024-07-18",
            training_file="{{ params.training_file }}",
            provider_name="openai-main",
            deferrable=deferrable,
            poll_interval=1,
            wait_timeout=600,
            retries=retries,
            retry_delay=timedelta(seconds=1),
        )
        register_model(fine_tune.output)
    return dag


sync_create = create_and_wait("systest_ops_sync_create", deferrable=False, retries=2)
deferred_create = create_and_wait("systest_ops_deferred_create", deferrable=True, retries=0)
