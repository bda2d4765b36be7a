"""What every TrueFoundry task shares: the connection, the header arguments, the wait on a job.

The sensor and both operators derive from :class:`TrueFoundryBaseOperator`, so the five header
arguments, ``hook_params`` and the wait's decisions are declared once. Imported when DAG files are
parsed: the hook, the protocol and the trigger are imported only when a task runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_tfy.exceptions import FineTuningJobCancelled, FineTuningJobFailed, TrueFoundryError
from airflow_provider_tfy.models import FineTuningJob, JobOutcome

if TYPE_CHECKING:
    from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
    from airflow_provider_tfy.protocol import HeaderArgs
    from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger

HOOK_PARAMS = frozenset({"timeout", "max_retries", "retry_delay"})
HEADER_FIELDS: tuple[str, ...] = (
    "provider_name",
    "provider_model",
    "vertex_storage_bucket_name",
    "file_purpose",
    "metadata",
)


def finish(job: FineTuningJob) -> dict[str, Any] | None:
    """The wait's decision for a job: its XCom when succeeded, None while in progress.

    Raises for a job that failed or was cancelled, naming the gateway's reason. The sensor and the
    create operator, waiting in a worker or deferred, all decide here.
    """
    outcome = job.outcome
    if outcome is JobOutcome.SUCCEEDED:
        return job.to_xcom()
    if outcome is JobOutcome.FAILED:
        reason = job.error.describe() if job.error else "the gateway gave no reason"
        raise FineTuningJobFailed(f"Fine-tuning job {job.id!r} failed: {reason}.", job=job)
    if outcome is JobOutcome.CANCELLED:
        raise FineTuningJobCancelled(
            f"Fine-tuning job {job.id!r} was cancelled before it finished; no model was produced.", job=job
        )
    return None


class TrueFoundryBaseOperator(BaseOperator):
    """Base of the TrueFoundry sensor and operators: connection, header arguments, HTTP settings.

    :param truefoundry_conn_id: the TrueFoundry connection.
    :param provider_name: ``x-tfy-provider-name``, overriding the connection's extra (templated).
    :param provider_model: ``x-tfy-provider-model`` (templated).
    :param vertex_storage_bucket_name: ``x-tfy-vertex-storage-bucket-name`` (templated).
    :param file_purpose: ``x-tfy-file-purpose`` (templated).
    :param metadata: ``x-tfy-metadata``, a dict of strings (templated).
    :param hook_params: HTTP settings for the hook: ``timeout``, ``max_retries``, ``retry_delay``.
    """

    template_fields: Sequence[str] = HEADER_FIELDS

    def __init__(
        self,
        *,
        truefoundry_conn_id: str = "truefoundry_default",
        provider_name: str | None = None,
        provider_model: str | None = None,
        vertex_storage_bucket_name: str | None = None,
        file_purpose: str | None = None,
        metadata: dict[str, str] | None = None,
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        unknown = set(hook_params or {}) - HOOK_PARAMS
        if unknown:
            raise ValueError(
                f"hook_params has unknown keys {sorted(unknown)}; it takes {sorted(HOOK_PARAMS)} "
                "(Airflow's retries and timeouts are the task's own arguments, not the hook's)."
            )
        self.truefoundry_conn_id = truefoundry_conn_id
        self.provider_name = provider_name
        self.provider_model = provider_model
        self.vertex_storage_bucket_name = vertex_storage_bucket_name
        self.file_purpose = file_purpose
        self.metadata = metadata
        self.hook_params = dict(hook_params or {})
        self._last_status: str | None = None

    @cached_property
    def hook(self) -> TrueFoundryHook:
        """The hook, made once per task run (one HTTP session, one connection read)."""
        from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook

        return TrueFoundryHook(self.truefoundry_conn_id, **self.hook_params)

    @property
    def header_overrides(self) -> HeaderArgs:
        """The rendered header arguments, as passed to the hook and the trigger."""
        return cast("HeaderArgs", {name: getattr(self, name) for name in HEADER_FIELDS})

    def checked_header_overrides(self) -> dict[str, Any]:
        """The header arguments validated (before they are stored with a trigger)."""
        from airflow_provider_tfy.protocol import header_options

        options = header_options(**self.header_overrides)
        return {name: getattr(options, name) for name in HEADER_FIELDS}

    # ---------------------------------------------------------------------------------------
    # The wait, shared by the sensor and the create operator
    # ---------------------------------------------------------------------------------------

    def poll_job(self, job_id: str) -> tuple[FineTuningJob | None, float]:
        """Ask the gateway once: ``(job, 0)``, or ``(None, retry_after)`` after transient trouble.

        The hook has already retried a transient failure; one bad minute must not fail an
        hours-long wait, so it is logged and the wait goes on. Errors no retry can mend raise.
        """
        try:
            job = self.hook.get_fine_tuning_job(job_id, **self.header_overrides)
        except TrueFoundryError as err:
            if not err.retryable:
                raise
            self.log.warning("Could not read fine-tuning job %r, will try again: %s", job_id, err)
            # A Retry-After longer than the hook sleeps inside one call: the next poll waits for it.
            return None, float(getattr(err, "retry_after", None) or 0.0)
        self.log_progress(job)
        return job, 0.0

    def log_progress(self, job: FineTuningJob) -> None:
        """Log the job's status when it changed: an hours-long wait should leave a readable log."""
        if job.status != self._last_status:
            self.log.info("Fine-tuning job %s: %s", job.id, job.progress_summary())
            self._last_status = job.status

    def wait_trigger(
        self,
        job_id: str,
        *,
        poll_interval: float,
        wait_seconds: float,
        cancel_on_kill: bool = False,
        idempotency_key: str | None = None,
    ) -> TrueFoundryFineTuningJobTrigger:
        """The trigger that carries the wait on ``job_id`` in the triggerer (with a key: it looks
        for other jobs with it at its first poll)."""
        from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger

        return TrueFoundryFineTuningJobTrigger(
            job_id=job_id,
            truefoundry_conn_id=self.truefoundry_conn_id,
            poll_interval=poll_interval,
            # Wall clock, fixed now: a trigger moved to another triggerer keeps this deadline.
            deadline=time.time() + wait_seconds,
            hook_params=self.hook_params,
            last_status=self._last_status,
            cancel_on_kill=cancel_on_kill,
            idempotency_key=idempotency_key,
            **self.checked_header_overrides(),
        )

    def resume(self, event: Any, on_timeout: Callable[[dict[str, Any]], Exception]) -> dict[str, Any] | None:
        """Finish a deferred wait from the trigger's event: the same XCom and exceptions as in a worker."""
        from airflow_provider_tfy import events
        from airflow_provider_tfy.protocol import parse_job

        event = events.check_event(event)
        status = event["status"]
        if status == events.TIMEOUT:
            raise on_timeout(event)
        if status == events.ERROR:
            raise events.error_from_event(event)
        # The trigger already logged the final status in this task's log; do not repeat it.
        return finish(parse_job(event["job"]))


def seconds(value: timedelta | float, name: str, owner: str) -> float:
    """A positive duration in seconds from a timedelta or a number, else a clear ``ValueError``."""
    number = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(number, bool) or not isinstance(number, int | float) or not number > 0:
        raise ValueError(
            f"{owner}: {name} must be a positive number of seconds or a timedelta, got {value!r}."
        )
    return float(number)
