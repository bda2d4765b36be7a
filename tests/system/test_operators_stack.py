"""The create operator on the production-shaped stack: a crashed worker and a user's kill.

One stack serves every system test (see conftest.py). The DAGs are in
``tests/system/dags/systest_operators_dags.py``; each run gets a training file id of its own, so
the jobs the simulator created for a test are told apart by their ``training_file``.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from airflow_stack import AirflowStack, wait_until

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

SYNC_DAG = "systest_ops_sync_create"
DEFERRED_DAG = "systest_ops_deferred_create"
CREATE = "fine_tune"
WAIT = 180.0


@pytest.fixture
def stack(airflow_stack: AirflowStack) -> Iterator[AirflowStack]:
    """The shared stack; the simulator's create script is restored after the test."""
    yield airflow_stack
    airflow_stack.simulator.set_create_script()


def ready(stack: AirflowStack, dag_id: str) -> None:
    """Wait until the DAG is parsed, and unpause it (the stack unpauses only those it waited for)."""
    wait_until(lambda: stack.api("GET", f"/api/v2/dags/{dag_id}").ok, WAIT, f"the DAG {dag_id} to be parsed")
    stack.api_json("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})


def start_run(stack: AirflowStack, dag_id: str) -> tuple[str, str]:
    """Trigger a run with a training file of its own; return (run id, training file id)."""
    training_file = f"file-systest-{secrets.token_hex(6)}"
    run = stack.api_json(
        "POST",
        f"/api/v2/dags/{dag_id}/dagRuns",
        json={"conf": {"training_file": training_file}, "logical_date": None},
    )
    return str(run["dag_run_id"]), training_file


def jobs_for(stack: AirflowStack, training_file: str) -> list[Any]:
    return [job for job in stack.simulator.created_jobs if job.training_file == training_file]


def creates_for(stack: AirflowStack, training_file: str) -> int:
    """Create requests the gateway saw for this run (its training file is in the job it made)."""
    return len(jobs_for(stack, training_file))


def test_a_sigkilled_worker_is_retried_by_the_scheduler_and_the_gateway_sees_one_create(
    stack: AirflowStack,
) -> None:
    # The job runs for a while whether or not anyone polls it, as real jobs do.
    stack.simulator.set_create_script(statuses=("queued", "running", "succeeded"), seconds_per_status=8)
    ready(stack, SYNC_DAG)
    creates_before = sum(1 for r in stack.simulator.requests if r.endpoint == "create")
    run_id, training_file = start_run(stack, SYNC_DAG)

    def waiting() -> int | None:
        jobs = jobs_for(stack, training_file)
        if not jobs or stack.simulator.request_count(jobs[0].id) < 2:
            return None
        return stack.task_runner_pid(SYNC_DAG, run_id, CREATE)

    pid = wait_until(waiting, WAIT, "the create operator to be waiting on its job")
    os.kill(pid, signal.SIGKILL)

    assert stack.wait_for_runs(SYNC_DAG, [run_id]) == {run_id: "success"}
    (job,) = jobs_for(stack, training_file)
    creates = [r for r in stack.simulator.requests if r.endpoint == "create"][creates_before:]
    assert len(creates) == 1, "the gateway saw a second create"
    # The scheduler retried the killed try. (Airflow may count one more failed try for the
    # killed process when the executor's report of it arrives late; what matters is below.)
    tries = stack.task_instances(SYNC_DAG, run_id)[CREATE]["try_number"]
    assert tries >= 2
    logs = {n: stack.task_log(SYNC_DAG, run_id, CREATE, n) for n in range(1, tries + 1)}
    assert f"Created fine-tuning job {job.id}" in logs[1]
    assert f"Reattached to fine-tuning job {job.id}" in logs[tries], logs
    assert stack.xcom(SYNC_DAG, run_id, CREATE, key="job_id") == job.id
    assert stack.xcom(SYNC_DAG, run_id, "register_model") == job.fine_tuned_model
    assert stack.simulator.cancel_requests(job.id) == 0  # a crash is not a user's kill


def test_marking_a_deferred_task_failed_cancels_its_job_at_the_gateway(stack: AirflowStack) -> None:
    stack.simulator.set_create_script(statuses=("running",))  # runs until cancelled
    ready(stack, DEFERRED_DAG)
    run_id, training_file = start_run(stack, DEFERRED_DAG)

    def deferred_and_polled() -> bool:
        jobs = jobs_for(stack, training_file)
        ti = stack.task_instances(DEFERRED_DAG, run_id)[CREATE]
        # A few polls by the trigger: the deferral is settled (see test_real_stack's docstring).
        return bool(jobs) and ti["state"] == "deferred" and stack.simulator.request_count(jobs[0].id) >= 2

    wait_until(deferred_and_polled, WAIT, "the create operator's wait to be deferred and polling")
    (job,) = jobs_for(stack, training_file)
    assert stack.simulator.cancel_requests(job.id) == 0

    stack.api_json(
        "PATCH",
        f"/api/v2/dags/{DEFERRED_DAG}/dagRuns/{run_id}/taskInstances/{CREATE}",
        json={"new_state": "failed"},
    )

    wait_until(lambda: stack.simulator.cancel_requests(job.id) >= 1, 60, "the trigger's on_kill to cancel")
    assert stack.wait_for_runs(DEFERRED_DAG, [run_id]) == {run_id: "failed"}
    assert stack.simulator.cancel_requests(job.id) == 1
    assert stack.task_states(DEFERRED_DAG, run_id)[CREATE] == "failed"
    assert creates_for(stack, training_file) == 1
    trigger_logs = stack.trigger_log_files(DEFERRED_DAG, run_id, CREATE)
    assert any(
        f"cancelled fine-tuning job {job.id}" in path.read_text(errors="replace")
        for path in trigger_logs.values()
    ), "the trigger's log does not say it cancelled the job"
