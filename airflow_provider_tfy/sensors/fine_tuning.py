"""The sensor that gates a DAG on a TrueFoundry fine-tuning job (the hook and trigger load at run time)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
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

from airflow_provider_tfy.operators._base import HEADER_FIELDS
from airflow_provider_tfy.operators._wait import JobWaitOperator, job_result
from airflow_provider_tfy.version_compat import START_FROM_TRIGGER, run_parent_execute

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class TrueFoundryFineTuningJobSensor(JobWaitOperator, BaseSensorOperator):
    """Wait until a TrueFoundry fine-tuning job succeeds; fail if it fails or is cancelled.

    On success the job (id, status, fine_tuned_model, trained_tokens, ...) is the XCom return
    value. Transient gateway trouble never fails the sensor before its own ``timeout``.

    :param job_id: the fine-tuning job id (templated).
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param start_from_trigger: with ``deferrable=True``, start the task in the triggerer, without a worker
        (Airflow 3.3+; 2.10-3.0 with literal values only); raises where Airflow cannot honour it.
    """

    template_fields: Sequence[str] = ("job_id", *HEADER_FIELDS)
    ui_color = "#e8f1ff"

    def __init__(
        self,
        *,
        job_id: str,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        start_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.deferrable = deferrable
        self._retry_after = 0.0  # seconds the gateway asked us to wait before the next call
        if not start_from_trigger:
            return
        # At parse time: where Airflow would run the task in a worker or not render it, the DAG must not load.
        name = f"{type(self).__name__} {self.task_id!r}: start_from_trigger"
        if not self.deferrable:
            raise ValueError(f"{name} needs deferrable=True.")
        if START_FROM_TRIGGER is None:
            raise ValueError(f"{name} is not supported on Airflow 3.1-3.2 (it is on 2.10-3.0 and 3.3+).")
        if not isinstance(self.job_id, str):
            raise ValueError(f"{name} needs job_id as a string (a literal or a Jinja template).")
        fields = {"job_id": self.job_id, **self.header_overrides}
        if START_FROM_TRIGGER == "literal" and any("{{" in str(v) or "{%" in str(v) for v in fields.values()):
            raise ValueError(
                f"{name} takes no templated job_id or header arguments on this Airflow: it cannot render "
                "them in the triggerer (Airflow 3.3+ can). Pass literal values, or drop start_from_trigger."
            )
        from airflow.triggers.base import StartTriggerArgs  # not in the compat provider; same in 2.10-3.3

        from airflow_provider_tfy.events import TIMEOUT_GRACE

        self.start_from_trigger = True
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls="airflow_provider_tfy.triggers.fine_tuning.TrueFoundryFineTuningJobTrigger",
            trigger_kwargs={  # 3.3+ renders those in template_fields in the triggerer
                **fields,
                **{"truefoundry_conn_id": self.truefoundry_conn_id, "hook_params": self.hook_params},
                **{"poll_interval": self.poke_interval, "timeout": self.timeout},
            },
            next_method="execute_complete",
            next_kwargs=None,
            # After the trigger's own deadline: the sensor's timeout message, not Airflow's.
            timeout=timedelta(seconds=self.timeout + TIMEOUT_GRACE),
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        """Ask the gateway once; done on success, raise on failure or cancellation."""
        job, wait = self.poll_job(self.job_id)
        # A Retry-After longer than the hook sleeps inside one call: the next poke waits for it.
        self._retry_after = min(wait, self.timeout)
        xcom = None if job is None else job_result(job)
        return False if xcom is None else PokeReturnValue(is_done=True, xcom_value=self._done(context, xcom))

    def _get_next_poke_interval(self, started_at: Any, run_duration: Any, poke_count: int) -> float:
        # Asked after BaseSensorOperator's timeout check: honouring Retry-After here keeps that timeout.
        return max(super()._get_next_poke_interval(started_at, run_duration, poke_count), self._retry_after)

    def execute(self, context: Context) -> Any:
        """Poke, reschedule or defer according to ``mode`` and ``deferrable``."""
        if not self.deferrable:
            return run_parent_execute(super(), context)
        try:
            result = self.poke(context)  # a job that is already finished never needs the triggerer
            trigger = None if result else self.wait_trigger(self.job_id, self.timeout, self.poke_interval)
        except (AirflowFailException, AirflowSensorTimeout, AirflowTaskTimeout) as err:
            # As BaseSensorOperator.execute handles soft_fail/never_fail in poke mode.
            if self.soft_fail or getattr(self, "never_fail", False):
                raise AirflowSkipException(f"Skipping: {err}") from err
            raise
        if trigger is None:
            return result.xcom_value if isinstance(result, PokeReturnValue) else None
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=self.timeout))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Finish a deferred wait: same XCom and same exceptions as poke mode."""
        message = f"Timed out waiting for job {self.job_id!r}."
        xcom = self.result_from_event(event, lambda e: AirflowSensorTimeout(e.get("message") or message))
        return None if xcom is None else self._done(context, xcom)
