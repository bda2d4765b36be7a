"""What every TrueFoundry task shares: the connection, the header arguments, the wait on a job.

The sensor and both operators derive from :class:`TrueFoundryBaseOperator`, so the header
arguments, ``hook_params`` and the wait's decisions are declared once. Imported when DAG files are
parsed: the hook, the protocol and the trigger are imported only when a task runs.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_tfy.exceptions import FineTuningJobCancelled, FineTuningJobFailed, TrueFoundryError
from airflow_provider_tfy.header_spec import HEADER_NAMES, param_lines
from airflow_provider_tfy.models import FineTuningJob, JobOutcome

if TYPE_CHECKING:
    from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
    from airflow_provider_tfy.protocol import HeaderArgs
    from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger

HOOK_PARAMS = frozenset({"timeout", "max_retries", "retry_delay"})
HEADER_FIELDS: tuple[str, ...] = tuple(HEADER_NAMES)
# Appended to the docstring of every task class: the arguments this base class takes.
SHARED_PARAMS = (
    "\n    :param truefoundry_conn_id: the TrueFoundry connection; its extra holds the header defaults."
    + param_lines(suffix=" (templated)")
    + "\n    :param hook_params: HTTP settings for the hook: ``timeout``, ``max_retries``, ``retry_delay``."
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


def _with_header_params(init: Callable[..., None]) -> Callable[..., None]:
    """Give ``init`` the header arguments as keyword parameters in its signature: Airflow reads it
    to apply ``default_args`` and to check ``expand()``'s names, and ``help()`` shows it."""
    signature = inspect.signature(init)
    params = list(signature.parameters.values())
    headers = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in HEADER_FIELDS
    ]
    init.__signature__ = signature.replace(parameters=[*params[:-1], *headers, params[-1]])  # type: ignore[attr-defined]
    return init


class TrueFoundryBaseOperator(BaseOperator):
    """Base of the TrueFoundry sensor and operators: connection, header arguments, HTTP settings."""

    template_fields: Sequence[str] = HEADER_FIELDS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__doc__ and ":param truefoundry_conn_id:" not in cls.__doc__:
            cls.__doc__ = cls.__doc__.rstrip() + SHARED_PARAMS + "\n"

    @_with_header_params
    def __init__(
        self,
        *,
        truefoundry_conn_id: str = "truefoundry_default",
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        headers = {name: kwargs.pop(name, None) for name in HEADER_FIELDS}
        super().__init__(**kwargs)
        unknown = set(hook_params or {}) - HOOK_PARAMS
        if unknown:
            raise ValueError(
                f"hook_params has unknown keys {sorted(unknown)}; it takes {sorted(HOOK_PARAMS)} "
                "(Airflow's retries and timeouts are the task's own arguments, not the hook's)."
            )
        self.truefoundry_conn_id = truefoundry_conn_id
        for name, value in headers.items():
            setattr(self, name, value)
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
            idempotency_key=idempotency_key,
            header_args=Headers.parse(self.header_overrides).as_args(),  # validated before it is stored
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
