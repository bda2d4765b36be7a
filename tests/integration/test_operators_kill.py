"""Cancel on kill: a user who kills the task while its job runs gets the job cancelled, once.

In the worker, Airflow's task runner answers SIGTERM by calling the operator's ``on_kill``: the
test sends the real signal to the ``dag.test()`` process while the operator waits. Deferred, the
triggerer calls the trigger's async ``on_kill`` after cancelling its ``run()`` for a user's
action (Airflow 3.3): the test does the same with the trigger the operator deferred with, rebuilt
from its serialized kwargs as a triggerer would.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import threading
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_tfy.operators.fine_tuning import TrueFoundryCreateFineTuningJobOperator
from airflow_provider_tfy.testing import Fault, GatewaySimulator

from .conftest import CONN_ID, FAST_HOOK_PARAMS, assert_secret_free, collect_events, run_dag, structlog_lines
from .test_operators import CREATE, MODEL, PROVIDER, build_pipeline

pytestmark = pytest.mark.usefixtures("airflow_db", "example_env")

LEFT_LINE = "Fine-tuning job {} is left running: "
STILL_RUNNING = (
    "the task instance is still running on the server, so this is a worker shutdown or lost heartbeats, "
    "not a user's kill; the next try reattaches to it."
)
CANCEL_LINE = "Cancelling fine-tuning job {}: a user ended this try (the task instance is now {})."


# ------------------------------------------------------------------------------------------
# In the worker
# ------------------------------------------------------------------------------------------


def _end_the_try(dag_id: str, how: str) -> None:
    """What a person does over the REST API or the UI: mark the running try, or clear it."""
    from airflow.models.taskinstance import TaskInstance, clear_task_instances
    from airflow.utils.session import create_session

    with create_session() as session:
        (ti,) = session.query(TaskInstance).filter_by(dag_id=dag_id, task_id=CREATE).all()
        assert ti.state == "running", ti.state
        if how == "clear":
            clear_task_instances([ti], session)  # a running try becomes "restarting"
        else:
            ti.set_state(how, session=session)  # what PATCH .../taskInstances/{task_id} does


def _kill_when_waiting(
    sim: GatewaySimulator, errors: list[str], dag_id: str, end_the_try: str | None, signal_it: bool = True
) -> None:
    """Once the operator polls its job: maybe end the try as a person would, then send SIGTERM."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = sim.created_jobs
        if jobs and sim.request_count(jobs[0].id) >= 1:
            if end_the_try is not None:
                _end_the_try(dag_id, end_the_try)
            if not signal_it:
                return
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                errors.append("no SIGTERM handler is installed: the signal would end pytest")
                return
            os.kill(os.getpid(), signal.SIGTERM)
            return
        time.sleep(0.02)
    errors.append("the operator never polled its job")


def _run_and_kill(
    sim: GatewaySimulator,
    capfd: Any,
    end_the_try: str | None,
    *,
    signal_it: bool = True,
    **create_kwargs: Any,
) -> tuple[Any, str]:
    """``dag.test()`` of a job that runs until cancelled, killed while the operator waits on it."""
    sim.set_create_script(statuses=("running",))
    create_kwargs.setdefault("wait_timeout", 3)
    dag = build_pipeline("tfy_ops_kill", deferrable=False, upload=False, **create_kwargs)
    previous = signal.getsignal(signal.SIGTERM)
    errors: list[str] = []
    killer = threading.Thread(
        target=_kill_when_waiting, args=(sim, errors, dag.dag_id, end_the_try, signal_it), daemon=True
    )
    killer.start()
    try:
        run, output = run_dag(dag, capfd)
    finally:
        killer.join(10)
        signal.signal(signal.SIGTERM, previous)
    assert not errors, errors
    return run, output


def test_a_sigterm_while_the_try_still_runs_on_the_server_leaves_the_job_running(
    connected_gateway, api_key, capfd
):
    """A graceful worker or pod shutdown, or lost heartbeats: the next try reattaches to the job."""
    sim = connected_gateway

    run, output = _run_and_kill(sim, capfd, None)

    (job,) = sim.created_jobs
    assert sim.cancel_requests(job.id) == 0
    assert output.count(LEFT_LINE.format(job.id) + STILL_RUNNING) == 1
    assert "Cancelling fine-tuning job" not in output
    assert "FineTuningJobWaitTimeout" in output  # the wait went on until wait_timeout
    assert run.state == "failed"
    assert_secret_free(api_key, output)


@pytest.mark.parametrize(
    ("how", "state"), [("failed", "failed"), ("success", "success"), ("clear", "restarting")]
)
def test_a_sigterm_after_a_person_ended_the_try_cancels_the_job_once(
    connected_gateway, api_key, capfd, how, state
):
    sim = connected_gateway

    _, output = _run_and_kill(sim, capfd, how)

    (job,) = sim.created_jobs
    assert sim.cancel_requests(job.id) == 1
    assert output.count(CANCEL_LINE.format(job.id, state)) == 1
    assert "Asked the gateway to cancel fine-tuning job" in output
    # The job's own end is what the task reports.
    assert f"FineTuningJobCancelled: Fine-tuning job '{job.id}' was cancelled" in output
    assert_secret_free(api_key, output)


def test_cancel_on_kill_off_never_cancels(connected_gateway, capfd):
    sim = connected_gateway

    _, output = _run_and_kill(sim, capfd, "failed", cancel_on_kill=False)

    (job,) = sim.created_jobs
    assert sim.cancel_requests(job.id) == 0
    assert "Cancelling fine-tuning job" not in output
    assert "FineTuningJobWaitTimeout" in output


def test_a_failed_cancel_is_logged_and_never_raised(connected_gateway, capfd):
    sim = connected_gateway
    sim.can_cancel = False

    _, output = _run_and_kill(sim, capfd, "failed")  # on_kill must not raise

    (job,) = sim.created_jobs
    assert sim.cancel_requests(job.id) == 1
    warnings = structlog_lines(output, "warning")
    assert any(
        f"Could not cancel fine-tuning job {job.id}" in line and "cannot cancel fine-tuning jobs" in line
        for line in warnings
    ), warnings


def test_an_execution_timeout_leaves_the_job_running_even_after_a_persons_mark(connected_gateway, capfd):
    """Airflow calls on_kill when execution_timeout passes: a timeout, whatever the server says."""
    sim = connected_gateway

    # The try is marked failed, then execution_timeout passes before any SIGTERM: were the
    # timeout not told apart, the server's "failed" would cancel the job.
    _, output = _run_and_kill(
        sim, capfd, "failed", signal_it=False, execution_timeout=timedelta(seconds=2), wait_timeout=10
    )

    (job,) = sim.created_jobs
    assert sim.cancel_requests(job.id) == 0
    assert f"{LEFT_LINE.format(job.id)}execution_timeout passed" in output
    assert "AirflowTaskTimeout" in output


# ------------------------------------------------------------------------------------------
# Deferred
# ------------------------------------------------------------------------------------------


def _defer(sim: GatewaySimulator, **kwargs: Any) -> tuple[Any, dict[str, Any], TaskDeferred]:
    """Run the deferrable operator's execute until it defers; return the trigger's serialized form."""
    op = TrueFoundryCreateFineTuningJobOperator(
        task_id=CREATE,
        model=MODEL,
        training_file="file-train",
        provider_name=PROVIDER,
        truefoundry_conn_id=CONN_ID,
        hook_params=dict(FAST_HOOK_PARAMS),
        deferrable=True,
        poll_interval=0.1,
        **kwargs,
    )
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(
        dag_id="tfy_kill_dag",
        task_id=CREATE,
        run_id="manual__kill",
        map_index=-1,
        try_number=1,
        xcom_push=lambda key, value: pushed.__setitem__(key, value),
    )
    with pytest.raises(TaskDeferred) as excinfo:
        op.execute({"ti": ti})  # type: ignore[arg-type]
    (job,) = sim.created_jobs
    assert pushed == {"job_id": job.id}  # pushed before deferring
    classpath, kwargs = excinfo.value.trigger.serialize()
    return classpath, kwargs, excinfo.value


def _kill_while_running(classpath: str, kwargs: dict[str, Any], sim: GatewaySimulator) -> None:
    """What the triggerer does when a user kills the task: cancel run(), then await on_kill()."""
    module, _, name = classpath.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**kwargs)
    job_id = kwargs["job_id"]

    async def scenario() -> None:
        polling = asyncio.ensure_future(collect_events(trigger))
        while sim.request_count(job_id) < 2:
            await asyncio.sleep(0.02)
        polling.cancel("user action")
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await trigger.on_kill()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_killing_a_deferred_task_cancels_the_job_once_through_the_trigger(connected_gateway, api_key):
    sim = connected_gateway
    sim.set_create_script(statuses=("running",))
    classpath, kwargs, deferred = _defer(sim)

    assert kwargs["cancel_on_kill"] is True
    assert_secret_free(api_key, kwargs, json.dumps(kwargs), deferred)
    _kill_while_running(classpath, kwargs, sim)

    (job,) = sim.created_jobs
    assert sim.cancel_requests(job.id) == 1
    assert [r.headers["x-tfy-provider-name"] for r in sim.requests if r.endpoint == "cancel"] == [PROVIDER]


def test_a_deferred_task_with_cancel_on_kill_off_leaves_the_job_running(connected_gateway):
    sim = connected_gateway
    sim.set_create_script(statuses=("running",))
    classpath, kwargs, _ = _defer(sim, cancel_on_kill=False)

    assert kwargs["cancel_on_kill"] is False
    _kill_while_running(classpath, kwargs, sim)

    assert sim.cancel_requests(sim.created_jobs[0].id) == 0


def test_the_triggers_failed_cancel_is_logged_not_raised(connected_gateway, capfd):
    sim = connected_gateway
    sim.set_create_script(statuses=("running",))
    classpath, kwargs, _ = _defer(sim)
    sim.can_cancel = False
    capfd.readouterr()

    _kill_while_running(classpath, kwargs, sim)  # on_kill must not raise

    job_id = kwargs["job_id"]
    assert sim.cancel_requests(job_id) == 1  # 405 is final: no retry
    captured = capfd.readouterr()
    warnings = structlog_lines(captured.out + captured.err, "warning")
    assert any(f"Could not cancel fine-tuning job {job_id}" in line for line in warnings), warnings


def test_the_triggers_cancel_is_retried_through_a_transient_failure(connected_gateway):
    sim = connected_gateway
    sim.set_create_script(statuses=("running",))
    classpath, kwargs, _ = _defer(sim)
    sim.add_endpoint_fault("cancel", Fault.server_error(503))

    _kill_while_running(classpath, kwargs, sim)

    job_id = kwargs["job_id"]
    assert sim.cancel_requests(job_id) == 2  # a cancel is repeated like a poll: cancelling twice is harmless
    assert sim.get_job(job_id).render(0)["status"] == "cancelled"
