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
from airflow_provider_tfy.header_spec import HEADERS
from airflow_provider_tfy.lineage import record_job, task_lineage
from airflow_provider_tfy.metrics import JobMetric, count
from airflow_provider_tfy.models import JobOutcome, status_outcome
from airflow_provider_tfy.operators._base import HEADER_FIELDS, TrueFoundryBaseOperator, finish, seconds
from airflow_provider_tfy.operators._interruption import (
    Answer,
    TryIdentity,
    ask_airflow,
    kill_verdict,
    try_identity,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_tfy.models import FineTuningJob

# The request fields that make a job what it is: a change in any of them is a new job.
CREATE_FIELDS: tuple[str, ...] = (
    "model",
    "training_file",
    "validation_file",
    "method",
    "hyperparameters",
    "suffix",
    "seed",
    "integrations",
    "job_metadata",
)
# The headers that choose the provider account the job runs (and is billed) under.
ACCOUNT_HEADERS: tuple[str, ...] = tuple(spec.name for spec in HEADERS if spec.account)
# Where Airflow 3.3+ keeps the job id between tries, beside the key in the job's metadata.
TASK_STATE_KEY = "truefoundry_fine_tuning_job_id"


class TrueFoundryCreateFineTuningJobOperator(TrueFoundryBaseOperator):
    """Start a fine-tuning job (exactly one per task and inputs) and, by default, wait for it.

    **One job per task and inputs.** The job is created with an idempotency key made from the
    DAG id, task id, run id and map index (never the try number) and a fingerprint of the create
    arguments and the account headers; the key is written into the job's metadata by the request
    that creates it. A task retry, a crashed worker's retry or a lost answer to the create
    therefore reattaches to the job already started; a task cleared after success with the same
    inputs returns the succeeded job at once; changed inputs, or a previous job that failed or was
    cancelled, start a new job. Tries that overlap (one Airflow gave up on is still alive) and
    both create converge on the oldest live job with the key, the others cancelled: when the job
    is created, and again once the wait is under way.

    The XCom ``job_id`` is pushed as soon as the job exists. With ``wait_for_completion`` the wait
    is the sensor's: the return value is the succeeded job (the sensor's XCom), a failed or
    cancelled job fails the task with the gateway's reason and no task retry, and transient gateway
    trouble never fails the wait. When ``wait_timeout`` passes, the task fails with
    :class:`~airflow_provider_tfy.exceptions.FineTuningJobWaitTimeout` and the job is left running:
    a retry reattaches to it.

    :param model: the base model to fine-tune (templated).
    :param training_file: the training file id, e.g. an upload task's ``.output`` (templated).
    :param validation_file: the validation file id (templated).
    :param method: the fine-tuning method, e.g. ``{"type": "supervised", ...}`` (templated).
    :param hyperparameters: deprecated by the gateway in favour of ``method`` (templated).
    :param suffix: up to 64 characters added to the fine-tuned model's name (templated).
    :param seed: the training seed (templated; digits rendered as text are read as a number).
    :param integrations: the job's integrations, e.g. Weights & Biases (templated).
    :param job_metadata: the job's own metadata, at most 15 pairs of strings here (the sixteenth
        holds the idempotency key; templated).
    :param wait_for_completion: wait until the job ends; otherwise return the job as created.
    :param poll_interval: seconds between status checks while waiting.
    :param wait_timeout: how long to wait (a timedelta or seconds) before failing the task; the
        job is not cancelled, and a retry reattaches to it.
    :param deferrable: wait in the triggerer instead of holding a worker slot; default from
        ``[operators] default_deferrable``.
    :param reuse_existing_job: reattach on retries and clears (the default). ``False`` creates a
        new job on every try; a lost answer within a try still never becomes a second job.
    :param cancel_on_kill: cancel the job when a person ends the try while it waits: Airflow
        then holds the task instance as failed, success or skipped (marked), or restarting
        (cleared). Any other SIGTERM (worker or pod shutdown, lost heartbeats, a replaced try) and
        timeouts leave the job running. Deferred waits can be cancelled only on Airflow 3.3+.
    """

    template_fields: Sequence[str] = (*CREATE_FIELDS, *HEADER_FIELDS)
    template_fields_renderers = {
        "method": "json",
        "hyperparameters": "json",
        "integrations": "json",
        "job_metadata": "json",
        "metadata": "json",
    }
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
        super().__init__(**kwargs)
        self.model = model
        self.training_file = training_file
        self.validation_file = validation_file
        self.method = method
        self.hyperparameters = hyperparameters
        self.suffix = suffix
        self.seed = seed
        self.integrations = integrations
        self.job_metadata = job_metadata
        self.wait_for_completion = wait_for_completion
        self.poll_interval = seconds(poll_interval, "poll_interval", type(self).__name__)
        self.wait_timeout = timedelta(seconds=seconds(wait_timeout, "wait_timeout", type(self).__name__))
        self.deferrable = deferrable
        self.reuse_existing_job = reuse_existing_job
        self.cancel_on_kill = cancel_on_kill
        self._job_id: str | None = None  # the job this try started or reattached to, for on_kill
        self._try: TryIdentity | None = None  # the try on_kill asks Airflow about

    # ---------------------------------------------------------------------------------------
    # Create
    # ---------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any] | None:
        """Create or reattach to the job, push ``job_id``, then wait (in the worker or deferred)."""
        job = self.hook.create_fine_tuning_job(
            **self._create_arguments(),
            idempotency_key=self.idempotency_key(context),
            **self.header_overrides,
        )
        self._track(context, job)
        if not self.wait_for_completion:
            return self._finished(context, job.to_xcom())
        return self._wait_for(context, job, look=True)

    def _track(self, context: Context, job: FineTuningJob) -> None:
        # Before anything else: a task that dies from here on has not lost track of the job.
        self._job_id = job.id
        context["ti"].xcom_push(key="job_id", value=job.id)
        self._remember_job(context, job.id)
        # Set after the last request to the supervisor, so that on_kill never asks mid-request.
        self._try = try_identity(context)
        self.log_progress(job)

    def _wait_for(
        self, context: Context, job: FineTuningJob, *, look: bool, wait_seconds: float | None = None
    ) -> dict[str, Any]:
        """Wait on ``job`` in the worker or deferred; ``look``: converge again at the first poll."""
        xcom = finish(job)  # a reattached job may have succeeded already: no wait at all
        if xcom is not None:
            count(JobMetric.ALREADY_SUCCEEDED)
            return self._finished(context, xcom)
        wait = self.wait_timeout.total_seconds() if wait_seconds is None else wait_seconds
        if self.deferrable:
            self.defer(
                trigger=self.wait_trigger(
                    job.id,
                    poll_interval=self.poll_interval,
                    wait_seconds=wait,
                    cancel_on_kill=self.cancel_on_kill,
                    idempotency_key=self.idempotency_key(context) if look else None,
                ),
                method_name="execute_complete",
                # A backstop only, should no triggerer run: the trigger's own deadline comes first
                # and ends the wait with this operator's message.
                timeout=timedelta(seconds=wait + max(60.0, 2 * self.poll_interval)),
            )
        return self._finished(context, self._wait(context, job, look=look, wait_seconds=wait))

    def _look(self, context: Context, job: FineTuningJob) -> FineTuningJob:
        """The job to wait on: the survivor among the live jobs with this task's key, else ``job``.

        An overlapping try may have created a job too, or cancelled ours as the non-survivor.
        """
        try:
            survivor = self.hook.converge_fine_tuning_jobs(
                self.idempotency_key(context), **self.header_overrides
            )
        except TrueFoundryError as err:  # the wait goes on: the other try converges too
            self.log.warning("Could not look for other fine-tuning jobs with this task's key: %s", err)
            return job
        if survivor is None or survivor.id == job.id:
            return job
        self.log.info(
            "Fine-tuning job %s (status %s) carries this task's key too and is the one kept: waiting "
            "on it instead of %s.",
            survivor.id,
            survivor.status,
            job.id,
        )
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
        """The key that makes one job per task and inputs (no secret: it is in the job's metadata).

        A hash of the task instance's identity (DAG, task, run, map index; the try number too
        when ``reuse_existing_job`` is off) and of the rendered create arguments and the account
        headers in effect (arguments over the connection's extra): 56 characters.
        """
        from airflow_provider_tfy.protocol import Headers

        ti = context["ti"]
        identity: list[Any] = [ti.dag_id, ti.task_id, ti.run_id, ti.map_index]
        if not self.reuse_existing_job:
            identity.append(ti.try_number)
        headers = self.hook.config.headers.overridden_by(Headers.parse(self.header_overrides))
        inputs = {
            **self._create_arguments(),
            **{name: getattr(headers, name) for name in ACCOUNT_HEADERS},
        }
        text = json.dumps([identity, inputs], sort_keys=True, separators=(",", ":"), default=str)
        return "airflow:" + hashlib.sha256(text.encode()).hexdigest()[:48]

    def _remember_job(self, context: Context, job_id: str) -> None:
        # Airflow 3.3+: a convenience for whoever inspects the task; the key in the job's metadata
        # is what finds the job again, since it is written by the very request that creates it.
        store: Any = context.get("task_state_store")
        if store is None:
            return
        try:
            store.set(TASK_STATE_KEY, job_id)
        except Exception as err:  # never fail a task that has its job over a bookkeeping extra
            self.log.debug("Could not keep the job id in task_state_store: %s", err)

    # ---------------------------------------------------------------------------------------
    # Wait
    # ---------------------------------------------------------------------------------------

    def _wait(
        self, context: Context, job: FineTuningJob, *, look: bool, wait_seconds: float
    ) -> dict[str, Any]:
        """Poll in the worker until the job ends or ``wait_seconds`` pass."""
        deadline = time.monotonic() + wait_seconds
        retry_after = 0.0
        while True:
            remaining = deadline - time.monotonic()
            # Never sleep past the deadline: the last poll happens at it, not after it.
            time.sleep(max(0.0, min(max(self.poll_interval, retry_after), remaining)))
            polled, retry_after = self.poll_job(job.id)
            if polled is not None and (look or polled.outcome is JobOutcome.CANCELLED):
                look = False  # the second look, at the first poll; and once more for a cancelled job
                polled = job = self._look(context, polled)
            xcom = finish(polled) if polled is not None else None
            if xcom is not None:
                return xcom
            if time.monotonic() >= deadline:
                raise self._timeout_error(job.id, self._last_status)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Finish a deferred wait: the same XCom and exceptions as a wait in the worker."""
        from airflow_provider_tfy import events
        from airflow_provider_tfy.protocol import parse_job

        event = events.check_event(event)
        if event["status"] in (events.CONVERGE, JobOutcome.CANCELLED):
            # Another job carries the key, or ours was cancelled: wait on the survivor, if any.
            job = self._look(context, parse_job(event["job"]))
            deadline = event.get("deadline")
            wait = None if deadline is None else max(0.0, float(deadline) - time.time())
            return self._wait_for(context, job, look=False, wait_seconds=wait)
        xcom = self.resume(
            event, on_timeout=lambda event: self._timeout_error(str(event.get("job_id")), None)
        )
        return self._finished(context, xcom) if xcom is not None else None

    def _finished(self, context: Context, xcom: dict[str, Any]) -> dict[str, Any]:
        # The job the task ends with: kept for its lineage, and the extra of its outlets' asset events.
        record_job(self, context, xcom)
        return xcom

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the training and validation files in, the fine-tuned model out."""
        return task_lineage(self, task_instance)

    def _timeout_error(self, job_id: str, last_status: str | None) -> FineTuningJobWaitTimeout:
        status = f" (last status: {last_status})" if last_status else ""
        after = (
            "A retry of this task reattaches to it and waits again; no new job is started."
            if self.reuse_existing_job
            else "reuse_existing_job is off, so a retry of this task starts a new job."
        )
        return FineTuningJobWaitTimeout(
            f"Fine-tuning job {job_id!r} did not finish within wait_timeout ({self.wait_timeout}){status}; "
            f"it was left running at the gateway, not cancelled. {after}",
            job_id=job_id,
        )

    # ---------------------------------------------------------------------------------------
    # Kill
    # ---------------------------------------------------------------------------------------

    def on_kill(self) -> None:
        """Cancel the job only when Airflow confirms a person ended this try (``cancel_on_kill``).

        Airflow calls this on every SIGTERM to the task. The job is cancelled only when the
        server holds this task instance as failed, success or skipped (marked by a person, or its
        DAG run's end) or restarting (cleared while running). A graceful worker or pod shutdown,
        lost heartbeats, a try Airflow replaced by another, ``execution_timeout``, or a server that
        cannot be asked leave the job running for the next try, with one log line saying why.

        Limits: Airflow 3 answers with the state alone, so the scheduler failing the *last* try
        for lost heartbeats, or a replaced try whose retry has already failed, looks like a
        person's mark. Airflow 2 compares the try number too. A cancel that fails is logged and
        never hides why the task ended.
        """
        job_id = self._job_id
        if not self.cancel_on_kill or job_id is None or self._job_ended():
            return
        timed_out = isinstance(sys.exc_info()[1], AirflowTaskTimeout)
        if timed_out or self._try is None:
            answer = Answer(error="this try has not been identified yet")
        else:
            answer = ask_airflow(self._try)
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
            self.log.warning(
                "Could not cancel fine-tuning job %s after the task was killed: %s. Cancel it at the "
                "gateway if it should not run on.",
                job_id,
                err,
            )

    def _job_ended(self) -> bool:
        status = self._last_status
        return status is not None and status_outcome(status) is not JobOutcome.IN_PROGRESS
