"""The operator that starts one fine-tuning job per task and inputs, and waits for it."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowTaskTimeout, conf

from airflow_provider_tfy.exceptions import FineTuningJobWaitTimeout, TrueFoundryError
from airflow_provider_tfy.header_spec import CREATE_FIELDS, HEADERS
from airflow_provider_tfy.metrics import JobMetric, count
from airflow_provider_tfy.models import JobOutcome, status_outcome
from airflow_provider_tfy.operators._base import HEADER_FIELDS
from airflow_provider_tfy.operators._interruption import Answer, TryIdentity, ask_airflow, kill_verdict
from airflow_provider_tfy.operators._wait import JobWaitOperator, job_result, positive_seconds

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_tfy.models import FineTuningJob

# The headers that choose the provider account the job runs (and is billed) under.
ACCOUNT_HEADERS: tuple[str, ...] = tuple(spec.name for spec in HEADERS if spec.account)
# Where Airflow 3.3+ keeps the job id between tries, beside the key in the job's metadata.
TASK_STATE_KEY = "truefoundry_fine_tuning_job_id"


class TrueFoundryCreateFineTuningJobOperator(JobWaitOperator):
    """Start a fine-tuning job (exactly one per task and inputs) and, by default, wait for it.

    A retry, a lost answer or a clear reattaches to the job; changed inputs or a failed job start a
    new one. XCom ``job_id`` is pushed once the job exists; the return value is the succeeded job.

    :param model: the base model to fine-tune (templated).
    :param training_file: the training file id, e.g. an upload task's ``.output`` (templated).
    :param validation_file: the validation file id (templated).
    :param method: the fine-tuning method, e.g. ``{"type": "supervised", ...}`` (templated).
    :param hyperparameters: deprecated by the gateway in favour of ``method`` (templated).
    :param suffix: up to 64 characters added to the fine-tuned model's name (templated).
    :param seed: the training seed (templated; digits rendered as text are read as a number).
    :param integrations: the job's integrations, e.g. Weights & Biases (templated).
    :param job_metadata: the job's metadata, at most 15 string pairs (templated).
    :param wait_for_completion: wait until the job ends; otherwise return the job as created.
    :param poll_interval: seconds between status checks while waiting.
    :param wait_timeout: how long to wait (a timedelta or seconds) before failing the task.
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param reuse_existing_job: reattach on retries and clears; ``False`` starts a job every try.
    :param cancel_on_kill: cancel the job when a person marks or clears the try while it waits;
        shutdowns, lost heartbeats and timeouts leave it running (deferred: Airflow 3.3+ only).
    """

    template_fields: Sequence[str] = (*CREATE_FIELDS, *HEADER_FIELDS)
    template_fields_renderers = dict.fromkeys(
        ("method", "hyperparameters", "integrations", "job_metadata", "metadata"), "json"
    )
    ui_color = "#e8f1ff"

    def __init__(
        self,
        *,
        model: str,
        training_file: str,
        validation_file: str | None = None,
        method: dict[str, Any] | None = None,
        hyperparameters: dict[str, Any] | None = None,
        suffix: str | None = None,
        seed: int | None = None,
        integrations: list[dict[str, Any]] | None = None,
        job_metadata: dict[str, str] | None = None,
        wait_for_completion: bool = True,
        poll_interval: float = 60,
        wait_timeout: timedelta | float = timedelta(days=3),
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        reuse_existing_job: bool = True,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        arguments = locals()
        super().__init__(**kwargs)
        for name in CREATE_FIELDS:
            setattr(self, name, arguments[name])
        owner = type(self).__name__
        self.wait_for_completion = wait_for_completion
        self.poll_interval = positive_seconds(poll_interval, "poll_interval", owner)
        self.wait_timeout = timedelta(seconds=positive_seconds(wait_timeout, "wait_timeout", owner))
        self.deferrable = deferrable
        self.reuse_existing_job = reuse_existing_job
        self.cancel_on_kill = cancel_on_kill
        self._job_id: str | None = None  # for on_kill: the job this try waits on, and the try
        self._try: TryIdentity | None = None

    def execute(self, context: Context) -> dict[str, Any] | None:
        """Create or reattach to the job, push ``job_id``, then wait (in the worker or deferred)."""
        job = self.hook.create_fine_tuning_job(
            **self._create_arguments(), idempotency_key=self.idempotency_key(context), **self.header_overrides
        )
        self._track(context, job)
        if not self.wait_for_completion:
            return self._done(context, job.to_xcom())
        return self._wait_for(context, job, True)

    def _track(self, context: Context, job: FineTuningJob) -> None:
        # Before anything else: a task that dies from here on has not lost track of the job.
        self._job_id = job.id
        context["ti"].xcom_push(key="job_id", value=job.id)
        store: Any = context.get("task_state_store")  # Airflow 3.3+: for whoever inspects the task
        if store is not None:
            try:
                store.set(TASK_STATE_KEY, job.id)
            except Exception as err:  # never fail a task that has its job over a bookkeeping extra
                self.log.debug("Could not keep the job id in task_state_store: %s", err)
        # Set after the last request to the supervisor, so that on_kill never asks mid-request.
        ti: Any = context["ti"]
        self._try = TryIdentity(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.try_number)
        self.log_progress(job)

    def _wait_for(self, context: Context, job: FineTuningJob, look: bool, wait: float | None = None) -> Any:
        xcom = job_result(job)  # a reattached job may have succeeded already: no wait at all
        if xcom is not None:
            count(JobMetric.ALREADY_SUCCEEDED)
            return self._done(context, xcom)
        wait = self.wait_timeout.total_seconds() if wait is None else wait
        if self.deferrable:
            key = self.idempotency_key(context) if look else None  # with a key, it converges first
            trigger = self.wait_trigger(job.id, wait, self.poll_interval, self.cancel_on_kill, key)
            # A backstop should no triggerer run: the trigger's own deadline comes first.
            backstop = timedelta(seconds=wait + max(60.0, 2 * self.poll_interval))
            self.defer(trigger=trigger, method_name="execute_complete", timeout=backstop)
        deadline, pause = time.monotonic() + wait, self.poll_interval
        while True:
            # Never sleep past the deadline: the last poll happens at it, not after it.
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            polled, pause = self.poll_job(job.id, self.poll_interval)
            if polled is not None and (look or polled.outcome is JobOutcome.CANCELLED):
                look = False  # the second look, at the first poll; and once more for a cancelled job
                polled = job = self._look(context, polled)
            xcom = job_result(polled) if polled is not None else None
            if xcom is not None:
                return self._done(context, xcom)
            if time.monotonic() >= deadline:
                raise self._timeout_error(job.id, self._last_status)

    def _look(self, context: Context, job: FineTuningJob) -> FineTuningJob:
        # The survivor among live jobs with this task's key: another try may have made or cancelled one.
        try:
            survivor = self.hook.converge_fine_tuning_jobs(
                self.idempotency_key(context), **self.header_overrides
            )
        except TrueFoundryError as err:  # the wait goes on: the other try converges too
            self.log.warning("Could not look for other fine-tuning jobs with this task's key: %s", err)
            return job
        if survivor is None or survivor.id == job.id:
            return job
        msg = "Fine-tuning job %s (status %s) carries this task's key too and is the one kept: waiting on it"
        self.log.info(msg + " instead of %s.", survivor.id, survivor.status, job.id)
        count(JobMetric.SWITCHED_TO_SURVIVOR)
        self._track(context, survivor)
        return survivor

    def _create_arguments(self) -> dict[str, Any]:
        arguments = {name: getattr(self, name) for name in CREATE_FIELDS}
        seed = arguments["seed"]
        if isinstance(seed, str) and seed.strip().lstrip("-").isdigit():
            arguments["seed"] = int(seed)  # a templated seed renders as text
        return arguments

    def idempotency_key(self, context: Context) -> str:
        """Return the key that makes one job per task and inputs (56 characters, in the job's metadata).

        It hashes the task instance (and the try, without ``reuse_existing_job``), the rendered create
        arguments and the account headers in effect.
        """
        from airflow_provider_tfy.protocol import Headers

        ti = context["ti"]
        identity: list[Any] = [ti.dag_id, ti.task_id, ti.run_id, ti.map_index]
        if not self.reuse_existing_job:
            identity.append(ti.try_number)
        headers = self.hook.config.headers.overridden_by(Headers.parse(self.header_overrides))
        inputs = {**self._create_arguments(), **{name: getattr(headers, name) for name in ACCOUNT_HEADERS}}
        text = json.dumps([identity, inputs], sort_keys=True, separators=(",", ":"), default=str)
        return "airflow:" + hashlib.sha256(text.encode()).hexdigest()[:48]

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Finish a deferred wait: the same XCom and exceptions as a wait in the worker."""
        from airflow_provider_tfy import events
        from airflow_provider_tfy.protocol import parse_job

        event = events.check_event(event)
        if event["status"] in (events.CONVERGE, JobOutcome.CANCELLED):
            # Another job carries the key, or ours was cancelled: wait on the survivor, if any.
            job, deadline = self._look(context, parse_job(event["job"])), event.get("deadline")
            wait = None if deadline is None else max(0.0, float(deadline) - time.time())
            return self._wait_for(context, job, False, wait)
        xcom = self.result_from_event(event, lambda e: self._timeout_error(str(e.get("job_id")), None))
        return None if xcom is None else self._done(context, xcom)

    def _timeout_error(self, job_id: str, last_status: str | None) -> FineTuningJobWaitTimeout:
        status = f" (last status: {last_status})" if last_status else ""
        after = "reuse_existing_job is off, so a retry of this task starts a new job."
        if self.reuse_existing_job:
            after = "A retry of this task reattaches to it and waits again; no new job is started."
        return FineTuningJobWaitTimeout(
            f"Fine-tuning job {job_id!r} did not finish within wait_timeout ({self.wait_timeout}){status}; "
            f"it was left running at the gateway, not cancelled. {after}",
            job_id=job_id,
        )

    def on_kill(self) -> None:
        """Cancel the job only when Airflow confirms a person ended this try (``cancel_on_kill``).

        Anything else (shutdowns, lost heartbeats, no answer) leaves it running, with one log line why.
        """
        job_id = self._job_id
        if not self.cancel_on_kill or job_id is None or self._job_ended():
            return
        timed_out = isinstance(sys.exc_info()[1], AirflowTaskTimeout)
        unknown = Answer(error="this try has not been identified yet")
        answer = ask_airflow(self._try) if self._try and not timed_out else unknown
        verdict = kill_verdict(answer, timed_out=timed_out)
        if not verdict.cancel:
            count(JobMetric.LEFT_RUNNING_ON_KILL)
            self.log.info("Fine-tuning job %s is left running: %s.", job_id, verdict.reason)
            return
        self.log.info("Cancelling fine-tuning job %s: %s.", job_id, verdict.reason)
        try:
            self.poll_job(job_id)  # never cancel a job that has ended meanwhile
            if self._job_ended():
                return
            self.hook.cancel_fine_tuning_job(job_id, **self.header_overrides)
            count(JobMetric.CANCELLED_ON_KILL)
        except Exception as err:  # on_kill must not raise: the kill's own reason is what counts
            msg = "Could not cancel fine-tuning job %s after the task was killed: %s."
            self.log.warning(msg + " Cancel it at the gateway if it should not run on.", job_id, err)

    def _job_ended(self) -> bool:
        status = self._last_status
        return status is not None and status_outcome(status) is not JobOutcome.IN_PROGRESS
