"""The sensor that gates a DAG on a TrueFoundry fine-tuning job.

Imported when DAG files are parsed: the hook, the trigger and their HTTP clients are imported
only when a task runs.
"""

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

from airflow_provider_tfy.lineage import record_job, task_lineage
from airflow_provider_tfy.operators._base import HEADER_FIELDS, HOOK_PARAMS, TrueFoundryBaseOperator, finish
from airflow_provider_tfy.version_compat import START_FROM_TRIGGER, run_parent_execute

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage

__all__ = ["HOOK_PARAMS", "TrueFoundryFineTuningJobSensor", "finish"]


class TrueFoundryFineTuningJobSensor(TrueFoundryBaseOperator, BaseSensorOperator):
    """Wait until a TrueFoundry fine-tuning job succeeds; fail if it fails or is cancelled.

    On success the job (id, status, fine_tuned_model, trained_tokens, result_files, ...) is the
    task's XCom return value. Transient gateway trouble never fails the sensor: it keeps waiting
    until its own ``timeout``. The connection, header and ``hook_params`` arguments are those of
    :class:`~airflow_provider_tfy.operators._base.TrueFoundryBaseOperator`.

    :param job_id: the fine-tuning job id (templated).
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param start_from_trigger: with ``deferrable=True``, start the task in the triggerer, without a
        worker (Airflow 2.10-3.0 and 3.3+; 3.3+ renders the templated fields there, older lines
        take literal values only). Raises here where Airflow cannot honour it.
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
        if start_from_trigger:
            self._start_in_triggerer()

    def _start_in_triggerer(self) -> None:
        # Checked at parse time: where Airflow would silently run the task in a worker instead (or
        # hand the trigger an unrendered template), the DAG must not load.
        name = f"{type(self).__name__} {self.task_id!r}: start_from_trigger"
        if not self.deferrable:
            raise ValueError(f"{name} needs deferrable=True.")
        if START_FROM_TRIGGER is None:
            raise ValueError(f"{name} is not supported on Airflow 3.1-3.2 (it is on 2.10-3.0 and 3.3+).")
        fields = {"job_id": self.job_id, **self.header_overrides}
        if not isinstance(self.job_id, str):
            raise ValueError(f"{name} needs job_id as a string (a literal or a Jinja template).")
        if START_FROM_TRIGGER == "literal" and any("{{" in str(v) or "{%" in str(v) for v in fields.values()):
            raise ValueError(
                f"{name} takes no templated job_id or header arguments on this Airflow: it cannot render "
                "them in the triggerer (Airflow 3.3+ can). Pass literal values, or drop start_from_trigger."
            )
        # Not in the compat provider; the same class from 2.10 to 3.3.
        from airflow.triggers.base import StartTriggerArgs

        from airflow_provider_tfy.events import TIMEOUT_GRACE

        self.start_from_trigger = True
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls="airflow_provider_tfy.triggers.fine_tuning.TrueFoundryFineTuningJobTrigger",
            # Rendered in the triggerer (3.3+): those in template_fields are rendered there.
            trigger_kwargs={
                **fields,
                "truefoundry_conn_id": self.truefoundry_conn_id,
                "poll_interval": self.poke_interval,
                "timeout": self.timeout,
                "hook_params": self.hook_params,
            },
            next_method="execute_complete",
            next_kwargs=None,
            # Later than the trigger's own deadline: the sensor's timeout message, not Airflow's.
            timeout=timedelta(seconds=self.timeout + TIMEOUT_GRACE),
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        """Ask the gateway once; done on success, raise on failure or cancellation."""
        job, retry_after = self.poll_job(self.job_id)
        # A Retry-After longer than the hook sleeps inside one call: the next poke waits for it.
        self._retry_after = min(retry_after, self.timeout)
        if job is None:
            return False
        xcom = finish(job)
        if xcom is None:
            return False
        record_job(self, context, xcom)  # lineage, and the extra of the outlets' asset events
        return PokeReturnValue(is_done=True, xcom_value=xcom)

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
            trigger = (
                None
                if result
                else self.wait_trigger(
                    self.job_id, poll_interval=self.poke_interval, wait_seconds=self.timeout
                )
            )
        except (AirflowFailException, AirflowSensorTimeout, AirflowTaskTimeout) as err:
            # The same soft_fail/never_fail handling poke mode gets from BaseSensorOperator.execute.
            if self.soft_fail or getattr(self, "never_fail", False):
                raise AirflowSkipException(f"Skipping: {err}") from err
            raise
        if trigger is None:
            return result.xcom_value if isinstance(result, PokeReturnValue) else None
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=self.timeout))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Finish a deferred wait: same XCom and same exceptions as poke mode."""
        xcom = self.resume(
            event,
            on_timeout=lambda event: AirflowSensorTimeout(
                event.get("message") or f"Timed out waiting for job {self.job_id!r}."
            ),
        )
        if xcom is not None:
            record_job(self, context, xcom)
        return xcom

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the job's training and validation files in, its fine-tuned model out."""
        return task_lineage(self, task_instance)
