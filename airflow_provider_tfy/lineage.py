"""What a fine-tuning task read and made: OpenLineage facets (imported only when asked) and asset extras."""

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
    """Return a gateway's OpenLineage namespace: ``truefoundry://`` + host, port and path prefix."""
    parts = urlsplit(base_url)
    return f"truefoundry://{parts.netloc}{parts.path.rstrip('/')}"


def asset_extra(job: dict[str, Any]) -> dict[str, Any]:
    """Return the extra of a succeeded job's asset event: its id, model name and trained tokens."""
    return {"job_id": job.get("id"), **{k: job.get(k) for k in ("fine_tuned_model", "trained_tokens")}}


def record_job(task: Any, context: Any, job: dict[str, Any]) -> None:
    """Remember the job a task ended with, for its lineage; put :func:`asset_extra` into its asset events."""
    task.truefoundry_job = job
    events = context.get("outlet_events")
    for outlet in (getattr(task, "outlets", None) or ()) if events is not None else ():
        if hasattr(outlet, "uri") and not type(outlet).__name__.endswith("Alias"):  # an alias needs an asset
            events[outlet].extra.update(asset_extra(job))


def operator_lineage(
    *,
    base_url: str,
    job: dict[str, Any] | None,
    training_file: Any = None,
    validation_file: Any = None,
    base_model: Any = None,
) -> OperatorLineage:
    """Build a fine-tuning task's lineage: files in, fine-tuned model out, and the job's run facet.

    :param base_url: the gateway's base URL, for the namespace.
    :param job: the task's XCom; the other arguments are used where it does not say.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    job = job or {}
    ns = namespace(base_url)
    files = (job.get("training_file") or training_file, job.get("validation_file") or validation_file)
    model = job.get("fine_tuned_model")
    run_facets: dict[str, Any] = {}
    if job.get("id"):
        run_facets[RUN_FACET_NAME] = _run_facet_class()(
            job_id=job["id"],
            base_model=job.get("model") or (base_model if isinstance(base_model, str) else None),
            status=job.get("status"),
            trained_tokens=job.get("trained_tokens"),
        )
    return OperatorLineage(
        inputs=[Dataset(namespace=ns, name=f) for f in files if isinstance(f, str) and f],
        outputs=[Dataset(namespace=ns, name=model)] if isinstance(model, str) and model else [],
        run_facets=run_facets,
    )


@functools.cache
def _run_facet_class() -> type:
    import attrs
    from airflow.providers.common.compat.openlineage.facet import RunFacet

    @attrs.define
    class TrueFoundryFineTuningJobRunFacet(RunFacet):
        """The fine-tuning job behind a task (made on first use: OpenLineage is optional)."""

        job_id: str
        base_model: str | None = None
        status: str | None = None
        trained_tokens: int | None = None

        @staticmethod
        def _get_schema() -> str:
            return RUN_FACET_SCHEMA_URL

    return TrueFoundryFineTuningJobRunFacet


def task_lineage(task: Any, task_instance: Any) -> OperatorLineage:
    """Return :func:`operator_lineage` for a finished task, from the job it recorded, else its XCom."""
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
