"""The whole fine-tuning pipeline: upload the training file, fine-tune, register the model.

1. ``upload_training_file`` uploads ``example_training_data.jsonl`` (shipped beside this file);
   its return value is the file id.
2. ``fine_tune`` starts one fine-tuning job on that file and waits for it in the triggerer
   (deferrable). Its task retries are safe: a retry, a crashed worker or a lost answer to the
   create reattaches to the job already started, never a second paid job.
3. ``register_model`` receives the succeeded job and would register or deploy its model.

For jobs started elsewhere, gate on them with the sensor instead (``example_truefoundry_fine_tuning``).

``TFY_EXAMPLE_POKE_INTERVAL`` (seconds between status checks, default 60), ``TFY_EXAMPLE_TIMEOUT``
(seconds to wait, default 3 days) and ``TFY_EXAMPLE_RETRY_DELAY`` (seconds, default 60) let the
demo and tests run it quickly.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, Param, task

from airflow_provider_tfy.operators.files import TrueFoundryUploadFileOperator
from airflow_provider_tfy.operators.fine_tuning import TrueFoundryCreateFineTuningJobOperator

POLL_INTERVAL = float(os.environ.get("TFY_EXAMPLE_POKE_INTERVAL", "60"))
WAIT_TIMEOUT = float(os.environ.get("TFY_EXAMPLE_TIMEOUT", str(timedelta(days=3).total_seconds())))
RETRY_DELAY = float(os.environ.get("TFY_EXAMPLE_RETRY_DELAY", "60"))
TRAINING_FILE = Path(__file__).resolve().with_name("example_training_data.jsonl")
# Its asset event carries the new model; example_truefoundry_model_consumer is scheduled on it.
FINE_TUNED_MODEL = Asset("truefoundry://fine-tuned-models/example-support-bot")


@task
def register_model(job: dict[str, Any]) -> str:
    """Stand-in for the next step: evaluate, register or deploy the fine-tuned model."""
    model = job["fine_tuned_model"]
    print(f"Registering fine-tuned model {model} (job {job['id']}, {job.get('trained_tokens')} tokens)")
    return model


with DAG(
    dag_id="example_truefoundry_pipeline",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "model": Param("gpt-4o-mini-2024-07-18", type="string", minLength=1),
        # Your provider-account integration in TrueFoundry; uploads need one.
        "provider_name": Param("openai-main", type="string", minLength=1),
        "suffix": Param("support-bot", type="string", maxLength=64),
    },
    default_args={"retries": 2, "retry_delay": timedelta(seconds=RETRY_DELAY)},
    tags=["truefoundry", "example"],
) as pipeline_dag:
    upload = TrueFoundryUploadFileOperator(
        task_id="upload_training_file",
        file=str(TRAINING_FILE),
        provider_name="{{ params.provider_name }}",
    )
    fine_tune = TrueFoundryCreateFineTuningJobOperator(
        task_id="fine_tune",
        model="{{ params.model }}",
        training_file=upload.output,
        suffix="{{ params.suffix }}",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
        job_metadata={"pipeline": "{{ dag.dag_id }}"},
        provider_name="{{ params.provider_name }}",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        outlets=[FINE_TUNED_MODEL],
        wait_timeout=WAIT_TIMEOUT,
    )
    register_model(fine_tune.output)
