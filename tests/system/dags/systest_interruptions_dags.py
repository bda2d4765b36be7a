"""DAGs for the interruption scenarios (``tests/system/test_interruptions_stack.py``).

One DAG per scenario, so that scenarios can run side by side without reading each other's runs:
the create operator waits in the Celery worker (not deferred), polls every second, and has two
retries a couple of seconds apart, so that a try that dies is retried at once and reattaches to
its job. The training file id comes from the ``training_file`` param: one job per test run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_tfy.operators.fine_tuning import TrueFoundryCreateFineTuningJobOperator

#: The scenarios, by short name: each has the DAG ``systest_interrupt_<name>``.
SCENARIOS = ("eviction", "warm_shutdown", "person", "replaced_try")


@task
def register_model(job: dict[str, Any]) -> str:
    print(f"Registering fine-tuned model {job['fine_tuned_model']} (job {job['id']})")
    return str(job["fine_tuned_model"])


def create_and_wait(dag_id: str) -> DAG:
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
            deferrable=False,
            poll_interval=1,
            wait_timeout=600,
            retries=2,
            retry_delay=timedelta(seconds=2),
        )
        register_model(fine_tune.output)
    return dag


for _name in SCENARIOS:
    globals()[f"interrupt_{_name}"] = create_and_wait(f"systest_interrupt_{_name}")
