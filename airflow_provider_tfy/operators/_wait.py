"""The wait on a fine-tuning job, shared by the sensor and the create operator (not the upload)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_tfy.exceptions import FineTuningJobCancelled, FineTuningJobFailed, TrueFoundryError
from airflow_provider_tfy.lineage import record_job, task_lineage
from airflow_provider_tfy.models import FineTuningJob, JobOutcome
from airflow_provider_tfy.operators._base import TrueFoundryBaseOperator

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger


def job_result(job: FineTuningJob) -> dict[str, Any] | None:
    """Decide a wait: the job's XCom if it succeeded, None in progress; raise if failed or cancelled."""
    if job.outcome is JobOutcome.SUCCEEDED:
        return job.to_xcom()
    if job.outcome is JobOutcome.FAILED:
        reason = job.error.describe() if job.error else "the gateway gave no reason"
        raise FineTuningJobFailed(f"Fine-tuning job {job.id!r} failed: {reason}.", job=job)
    if job.outcome is JobOutcome.CANCELLED:
        raise FineTuningJobCancelled(
            f"Fine-tuning job {job.id!r} was cancelled before it finished; no model was produced.", job=job
        )
    return None


def positive_seconds(value: timedelta | float, name: str, owner: str) -> float:
    """Return a positive duration in seconds from a timedelta or a number, else raise ``ValueError``."""
    number = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(number, bool) or not isinstance(number, int | float) or not number > 0:
        raise ValueError(
            f"{owner}: {name} must be a positive number of seconds or a timedelta, got {value!r}."
        )
    return float(number)


class JobWaitOperator(TrueFoundryBaseOperator):
    """Base of the tasks that wait on a job: poll it, defer on it, finish from the trigger's event."""

    _last_status: str | None = None

    def poll_job(self, job_id: str, poll_interval: float = 0.0) -> tuple[FineTuningJob | None, float]:
        """Read the job once: ``(job, poll_interval)``, or ``(None, seconds to wait)`` after trouble.

        Trouble a later poll may mend is only logged: one bad minute must not fail an hours-long wait.
        """
        from airflow_provider_tfy.protocol import wait_after_failed_poll

        try:
            job = self.hook.get_fine_tuning_job(job_id, **self.header_overrides)
        except TrueFoundryError as err:
            wait = wait_after_failed_poll(err, poll_interval)  # raises what no retry can mend
            self.log.warning("Could not read fine-tuning job %r, will try again: %s", job_id, err)
            return None, wait
        self.log_progress(job)
        return job, poll_interval

    def log_progress(self, job: FineTuningJob) -> None:
        """Log the job's status when it changed: an hours-long wait should leave a readable log."""
        if job.status != self._last_status:
            self.log.info("Fine-tuning job %s: %s", job.id, job.progress_summary())
            self._last_status = job.status

    def wait_trigger(
        self,
        job_id: str,
        wait_seconds: float,
        poll_interval: float,
        cancel_on_kill: bool = False,
        key: str | None = None,
    ) -> TrueFoundryFineTuningJobTrigger:
        """Make the trigger that waits ``wait_seconds`` on ``job_id`` (with ``key``, converging first)."""
        from airflow_provider_tfy.protocol import Headers
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
            idempotency_key=key,
            header_args=Headers.parse(self.header_overrides).as_args(),  # validated before it is stored
        )

    def result_from_event(self, event: Any, on_timeout: Callable[[dict[str, Any]], Exception]) -> Any:
        """Finish a deferred wait from the trigger's event: the same XCom and exceptions as in a worker."""
        from airflow_provider_tfy import events
        from airflow_provider_tfy.protocol import parse_job

        event = events.check_event(event)
        if event["status"] in (events.TIMEOUT, events.ERROR):
            raise on_timeout(event) if event["status"] == events.TIMEOUT else events.error_from_event(event)
        return job_result(parse_job(event["job"]))  # the trigger already logged the final status

    def _done(self, context: Any, xcom: dict[str, Any]) -> dict[str, Any]:
        record_job(self, context, xcom)  # for the lineage, and the extra of the outlets' asset events
        return xcom

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the job's training and validation files in, its fine-tuned model out."""
        return task_lineage(self, task_instance)
