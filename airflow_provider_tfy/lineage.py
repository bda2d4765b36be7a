"""What a fine-tuning task read and made: OpenLineage facets and asset-event extras.

The create operator and the sensor call into this module when their job has succeeded (asset
events) and when Airflow's OpenLineage listener asks for their lineage. OpenLineage stays an
optional dependency (the ``openlineage`` extra): it is imported only inside
:func:`operator_lineage`, which only that listener calls, so without it nothing changes.

Lineage: the inputs are the training and validation files, the output is the fine-tuned model,
each a dataset in one namespace naming the gateway (``truefoundry://<host>[:port][/prefix]``);
the run facet ``truefoundry_fine_tuning_job`` carries the job id, base model, status and trained
tokens.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

RUN_FACET_NAME = "truefoundry_fine_tuning_job"
# Where the facet's fields are described (docs/lineage.md, published with the package on PyPI).
RUN_FACET_SCHEMA_URL = "https://pypi.org/project/airflow-provider-tfy/#truefoundry_fine_tuning_job"


def namespace(base_url: str) -> str:
    """The OpenLineage namespace of a gateway: ``truefoundry://`` + host, port and path prefix.

    One namespace per gateway, so the same file id or model name on two gateways never merges.
    """
    parts = urlsplit(base_url)
    return f"truefoundry://{parts.netloc}{parts.path.rstrip('/')}"


def asset_extra(job: dict[str, Any]) -> dict[str, Any]:
    """The extra of the asset event a succeeded job emits: its id, model name and trained tokens."""
    return {
        "job_id": job.get("id"),
        "fine_tuned_model": job.get("fine_tuned_model"),
        "trained_tokens": job.get("trained_tokens"),
    }


def record_job(task: Any, context: Any, job: dict[str, Any]) -> None:
    """Remember the job a task ended with, for its lineage, and put it into its asset events."""
    task.truefoundry_job = job
    annotate_outlet_events(context, list(getattr(task, "outlets", None) or ()), job)


def annotate_outlet_events(context: Any, outlets: list[Any], job: dict[str, Any]) -> None:
    """Put :func:`asset_extra` into the asset event of each of the task's outlet assets.

    Airflow emits one event per outlet asset when the task succeeds; its ``extra`` is what a DAG
    scheduled on the asset reads from ``triggering_asset_events`` (``triggering_dataset_events``
    on Airflow 2.11). Asset aliases are skipped: an alias event needs an asset we do not have.
    """
    if not outlets:
        return
    events = context.get("outlet_events")
    if events is None:
        return
    extra = asset_extra(job)
    for outlet in outlets:
        if _is_asset(outlet):
            events[outlet].extra.update(extra)


def _is_asset(outlet: Any) -> bool:
    """An Airflow 3 ``Asset`` or an Airflow 2.11 ``Dataset`` (not an alias, not a plain string)."""
    return hasattr(outlet, "uri") and not type(outlet).__name__.endswith("Alias")


def operator_lineage(
    *,
    base_url: str,
    job: dict[str, Any] | None,
    training_file: Any = None,
    validation_file: Any = None,
    base_model: Any = None,
) -> OperatorLineage:
    """The lineage of a task that ran a fine-tuning job, for the OpenLineage listener.

    ``job`` is the job the task ended with (its XCom); the other arguments are what the task was
    given, used where the job does not say (a sensor's job always does). Requires
    ``apache-airflow-providers-openlineage``.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    job = job or {}
    ns = namespace(base_url)
    inputs = [
        Dataset(namespace=ns, name=str(file_id))
        for file_id in (
            job.get("training_file") or training_file,
            job.get("validation_file") or validation_file,
        )
        if isinstance(file_id, str) and file_id
    ]
    model = job.get("fine_tuned_model")
    outputs = [Dataset(namespace=ns, name=model)] if isinstance(model, str) and model else []
    run_facets: dict[str, Any] = {}
    if job.get("id"):
        run_facets[RUN_FACET_NAME] = _run_facet_class()(
            job_id=job["id"],
            base_model=job.get("model") or (base_model if isinstance(base_model, str) else None),
            status=job.get("status"),
            trained_tokens=job.get("trained_tokens"),
        )
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets=run_facets)


@functools.cache
def _run_facet_class() -> type:
    """The run facet class, made on first use: it subclasses OpenLineage's optional ``RunFacet``."""
    import attrs
    from airflow.providers.common.compat.openlineage.facet import RunFacet

    @attrs.define
    class TrueFoundryFineTuningJobRunFacet(RunFacet):
        """The fine-tuning job behind a task: id, base model, final status, trained tokens."""

        job_id: str
        base_model: str | None = None
        status: str | None = None
        trained_tokens: int | None = None

        @staticmethod
        def _get_schema() -> str:
            return RUN_FACET_SCHEMA_URL

    return TrueFoundryFineTuningJobRunFacet


def task_lineage(task: Any, task_instance: Any) -> OperatorLineage:
    """:func:`operator_lineage` for a finished sensor or create operator.

    The job is the one the task recorded in :attr:`truefoundry_job` while it ran (the same
    process calls this), else its XCom return value.
    """
    job = getattr(task, "truefoundry_job", None)
    if job is None:
        pulled = task_instance.xcom_pull(task_ids=task_instance.task_id)
        job = pulled if isinstance(pulled, dict) else None
    return operator_lineage(
        base_url=task.hook.config.base_url,
        job=job,
        training_file=getattr(task, "training_file", None),
        validation_file=getattr(task, "validation_file", None),
        base_model=getattr(task, "model", None),
    )
