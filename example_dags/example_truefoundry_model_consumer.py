"""Start when a new fine-tuned model exists, and read its name from the asset event.

``example_truefoundry_pipeline``'s ``fine_tune`` task has this asset among its ``outlets``: when its
job succeeds, Airflow records an asset event whose ``extra`` is
``{"job_id": ..., "fine_tuned_model": ..., "trained_tokens": ...}``, and this DAG, scheduled on the
asset, starts. Its task reads the model name from the event that triggered the run, so it never
has to ask the gateway or the producing DAG. The sensor emits the same event when given
``outlets``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, get_current_context, task

# The same URI as the producer's outlet (Airflow 3: an asset; Airflow 2.11: a dataset).
FINE_TUNED_MODEL = Asset("truefoundry://fine-tuned-models/example-support-bot")


def newest_model_event(context: Any) -> Any:
    """The newest asset event of ``FINE_TUNED_MODEL`` among those that triggered this run."""
    if "triggering_asset_events" in context:  # Airflow 3
        events = list(context["triggering_asset_events"][FINE_TUNED_MODEL])
    else:  # Airflow 2.11: keyed by URI
        events = list(context["triggering_dataset_events"][FINE_TUNED_MODEL.uri])
    if not events:
        raise ValueError(
            f"This run was not started by an event of {FINE_TUNED_MODEL.uri}; it runs when "
            "example_truefoundry_pipeline's fine_tune task has made a model."
        )
    return events[-1]


@task
def evaluate_new_model() -> str:
    """Stand-in for the next step: evaluate or deploy the model the triggering event names."""
    extra = newest_model_event(get_current_context()).extra
    model = extra["fine_tuned_model"]
    print(f"New fine-tuned model {model} (job {extra['job_id']}, {extra['trained_tokens']} tokens)")
    return model


with DAG(
    dag_id="example_truefoundry_model_consumer",
    schedule=[FINE_TUNED_MODEL],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["truefoundry", "example"],
) as consumer_dag:
    evaluate_new_model()
