"""The sensor that gates a DAG on a TrueFoundry fine-tuning job.

Imported when DAG files are parsed: the hook, the trigger and their HTTP clients are imported
only when a task runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    AirflowTaskTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_tfy.exceptions import FineTuningJobCancelled, FineTuningJobFailed, TrueFoundryError
from airflow_provider_tfy.models import FineTuningJob, JobOutcome
from airflow_provider_tfy.version_compat import run_parent_execute

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook

HOOK_PARAMS = frozenset({"timeout", "max_retries", "retry_delay"})


def finish(job: FineTuningJob) -> dict[str, Any] | None:
    """The gate's decision for a job: its XCom when succeeded, None while in progress.

    Raises for a job that failed or was cancelled, naming the gateway's reason. Poke mode and the
    deferred path both decide here.
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


class TrueFoundryFineTuningJobSensor(BaseSensorOperator):
    """Wait until a TrueFoundry fine-tuning job succeeds; fail if it fails or is cancelled.

    On success the job (id, status, fine_tuned_model, trained_tokens, result_files, ...) is the
    task's XCom return value. Transient gateway trouble never fails the sensor: it keeps waiting
    until its own ``timeout``.

    :param job_id: the fine-tuning job id (templated).
    :param truefoundry_conn_id: the TrueFoundry connection.
    :param provider_name: ``x-tfy-provider-name``, overriding the connection's extra (templated).
    :param provider_model: ``x-tfy-provider-model`` (templated).
    :param vertex_storage_bucket_name: ``x-tfy-vertex-storage-bucket-name`` (templated).
    :param file_purpose: ``x-tfy-file-purpose`` (templated).
    :param metadata: ``x-tfy-metadata``, a dict of strings (templated).
    :param hook_params: HTTP settings for the hook: ``timeout``, ``max_retries``, ``retry_delay``.
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    """

    template_fields: Sequence[str] = (
        "job_id",
        "provider_name",
        "provider_model",
        "vertex_storage_bucket_name",
        "file_purpose",
        "metadata",
    )
    ui_color = "#e8f1ff"

    def __init__(
        self,
        *,
        job_id: str,
        truefoundry_conn_id: str = "truefoundry_default",
        provider_name: str | None = None,
        provider_model: str | None = None,
        vertex_storage_bucket_name: str | None = None,
        file_purpose: str | None = None,
        metadata: dict[str, str] | None = None,
        hook_params: dict[str, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        unknown = set(hook_params or {}) - HOOK_PARAMS
        if unknown:
            raise ValueError(
                f"hook_params has unknown keys {sorted(unknown)}; it takes {sorted(HOOK_PARAMS)} "
                "(task retries and timeouts are the sensor's own retries/timeout arguments)."
            )
        self.job_id = job_id
        self.truefoundry_conn_id = truefoundry_conn_id
        self.provider_name = provider_name
        self.provider_model = provider_model
        self.vertex_storage_bucket_name = vertex_storage_bucket_name
        self.file_purpose = file_purpose
        self.metadata = metadata
        self.hook_params = dict(hook_params or {})
        self.deferrable = deferrable
        self._last_status: str | None = None
        self._retry_after = 0.0  # seconds the gateway asked us to wait before the next call

    @cached_property
    def hook(self) -> TrueFoundryHook:
        """The hook, made once per task run (one HTTP session, one connection read)."""
        from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook

        return TrueFoundryHook(self.truefoundry_conn_id, **self.hook_params)

    @property
    def header_overrides(self) -> dict[str, Any]:
        """The rendered header arguments, as passed to the hook and the trigger."""
        return {
            "provider_name": self.provider_name,
            "provider_model": self.provider_model,
            "vertex_storage_bucket_name": self.vertex_storage_bucket_name,
            "file_purpose": self.file_purpose,
            "metadata": self.metadata,
        }

    def poke(self, context: Context) -> PokeReturnValue | bool:
        """Ask the gateway once; done on success, raise on failure or cancellation."""
        self._retry_after = 0.0
        try:
            job = self.hook.get_fine_tuning_job(self.job_id, **self.header_overrides)
        except TrueFoundryError as err:
            if not err.retryable:
                raise
            # The hook already retried; one bad minute must not fail a multi-hour wait.
            self.log.warning("Could not read fine-tuning job %r, will try again: %s", self.job_id, err)
            # A Retry-After longer than the hook sleeps inside one call: the next poke waits for it.
            self._retry_after = min(getattr(err, "retry_after", None) or 0.0, self.timeout)
            return False
        self._log_progress(job)
        xcom = finish(job)
        return PokeReturnValue(is_done=True, xcom_value=xcom) if xcom is not None else False

    def _get_next_poke_interval(self, started_at: Any, run_duration: Any, poke_count: int) -> float:
        # BaseSensorOperator asks this after its timeout check, in poke and reschedule modes alike,
        # so honouring Retry-After here keeps the sensor's own timeout in force.
        interval = super()._get_next_poke_interval(started_at, run_duration, poke_count)
        return max(interval, self._retry_after)

    def execute(self, context: Context) -> Any:
        """Poke, reschedule or defer according to ``mode`` and ``deferrable``."""
        if not self.deferrable:
            return run_parent_execute(super(), context)
        try:
            # A job that is already finished never needs the triggerer.
            result = self.poke(context)
            # Validate the header arguments before they are stored with the trigger.
            overrides = self._checked_header_overrides()
        except (AirflowFailException, AirflowSensorTimeout, AirflowTaskTimeout) as err:
            # The same soft_fail/never_fail handling poke mode gets from BaseSensorOperator.execute.
            if self.soft_fail or getattr(self, "never_fail", False):
                raise AirflowSkipException(f"Skipping: {err}") from err
            raise
        if result:
            return result.xcom_value if isinstance(result, PokeReturnValue) else None
        from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger

        self.defer(
            trigger=TrueFoundryFineTuningJobTrigger(
                job_id=self.job_id,
                truefoundry_conn_id=self.truefoundry_conn_id,
                poll_interval=self.poke_interval,
                # Wall clock, fixed now: a trigger moved to another triggerer keeps this deadline.
                deadline=time.time() + self.timeout,
                hook_params=self.hook_params,
                last_status=self._last_status,
                **overrides,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def _checked_header_overrides(self) -> dict[str, Any]:
        from airflow_provider_tfy.protocol import header_options

        options = header_options(**self.header_overrides)
        return {name: getattr(options, name) for name in self.header_overrides}

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Finish a deferred wait: same XCom and same exceptions as poke mode."""
        from airflow_provider_tfy import events
        from airflow_provider_tfy.protocol import parse_job

        event = events.check_event(event)
        status = event["status"]
        if status == events.TIMEOUT:
            raise AirflowSensorTimeout(event.get("message") or f"Timed out waiting for job {self.job_id!r}.")
        if status == events.ERROR:
            raise events.error_from_event(event)
        # The trigger already logged the final status in this task's log; do not repeat it.
        return finish(parse_job(event["job"]))

    def _log_progress(self, job: FineTuningJob) -> None:
        # Log changes, not every poke: an hours-long wait should leave a readable log.
        if job.status != self._last_status:
            self.log.info("Fine-tuning job %s: %s", job.id, job.progress_summary())
            self._last_status = job.status
