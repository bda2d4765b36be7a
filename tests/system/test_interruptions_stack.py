"""The create operator waiting in a Celery worker, through the interruptions a cluster brings.

One stack serves every system test (see conftest.py): two Celery workers on Redis. Each
scenario has a DAG of its own (``dags/systest_interruptions_dags.py``): the create operator waits
in the worker (not deferred), polls every second, and has two retries. The simulator's jobs run
until the test ends them, and each run has a training file id of its own, which tells the jobs
it created apart. Each scenario asserts what the gateway saw (creates and cancels) and how the
run ended:

1. *eviction*: the task process gets SIGTERM, then SIGKILL 3 s later, as a pod eviction does.
   Nobody decided to stop the job: no cancel, one job, and the retry reattaches to it.
2. *warm shutdown*: the Celery worker gets SIGTERM; Celery lets its running tasks finish. No
   cancel, one job, the try that was running ends the run ``success``.
3. *a person* marks the waiting task ``failed``: one cancel, the run ``failed``.
4. *a replaced try*: the worker is frozen (SIGSTOP) until the scheduler gives up on the try for
   want of heartbeats and the retry runs on the other worker; then it thaws (SIGCONT) and its try
   is told it is over. One job survives, nothing the retry waits on is cancelled, ``success``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_stack import STOP_TIMEOUT, TASK_HEARTBEAT_TIMEOUT, WORKERS, AirflowStack, wait_until

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

CREATE = "fine_tune"
REGISTER = "register_model"
WAIT = 180.0
#: A pod eviction's grace period, shortened: SIGKILL follows SIGTERM after this many seconds.
GRACE_SECONDS = 3.0


def dag_of(scenario: str) -> str:
    return f"systest_interrupt_{scenario}"


@pytest.fixture
def stack(airflow_stack: AirflowStack) -> Iterator[AirflowStack]:
    """The shared stack, its jobs running until the test ends them; the create script is
    restored after the test."""
    airflow_stack.simulator.set_create_script(statuses=("running",))
    yield airflow_stack
    airflow_stack.simulator.set_create_script()


class Run:
    """One run of a scenario's DAG and what the gateway saw of it."""

    def __init__(self, stack: AirflowStack, scenario: str) -> None:
        self.stack = stack
        self.dag_id = dag_of(scenario)
        wait_until(lambda: stack.api("GET", f"/api/v2/dags/{self.dag_id}").ok, WAIT, f"the DAG {self.dag_id}")
        stack.api_json("PATCH", f"/api/v2/dags/{self.dag_id}", json={"is_paused": False})
        self.training_file = f"file-systest-{secrets.token_hex(6)}"
        run = stack.api_json(
            "POST",
            f"/api/v2/dags/{self.dag_id}/dagRuns",
            json={"conf": {"training_file": self.training_file}, "logical_date": None},
        )
        self.run_id = str(run["dag_run_id"])

    @property
    def jobs(self) -> list[Any]:
        """The jobs the gateway created for this run, oldest first."""
        return [job for job in self.stack.simulator.created_jobs if job.training_file == self.training_file]

    def polls_since(self, job_id: str, since: float) -> int:
        return sum(1 for r in self.stack.simulator.requests if r.job_id == job_id and r.time > since)

    def task(self, task_id: str = CREATE) -> dict[str, Any]:
        return self.stack.task_instances(self.dag_id, self.run_id)[task_id]

    def waiting(self, try_number: int = 1, polls: int = 2, since: float = 0.0) -> tuple[Any, int, int, int]:
        """Wait until try ``try_number`` runs in a worker and polls the run's one job; return the
        job and (supervisor pid, task runner pid, worker session) of that try."""

        def check() -> tuple[Any, int, int, int] | None:
            self.stack.check_alive()
            jobs = self.jobs
            if not jobs or self.polls_since(jobs[-1].id, since) < polls:
                return None
            ti = self.task()
            if ti["state"] in ("success", "failed"):
                pytest.fail(f"the task ended while the test waited for try {try_number}\n{self.describe()}")
            if ti["state"] != "running" or ti["try_number"] != try_number:
                return None
            found = self.stack.task_process(self.dag_id, self.run_id, CREATE, try_number)
            return (jobs[-1], *found) if found else None

        return wait_until(
            check, WAIT, f"try {try_number} of {self.dag_id} to wait on its job", 0.5, self.describe
        )

    def describe(self) -> str:
        tis = self.stack.task_instances(self.dag_id, self.run_id)
        jobs = [(job.id, job.status) for job in self.jobs]
        return f"tasks: { {t: (ti['state'], ti['try_number']) for t, ti in tis.items()} }\njobs: {jobs}"

    def finish(self, job: Any) -> None:
        """The job succeeds at the gateway (its next poll says so); its identity is kept."""
        self.stack.simulator.set_job(
            job.id,
            statuses=("succeeded",),
            model=job.model,
            metadata=job.metadata,
            training_file=job.training_file,
            fine_tuned_model=job.fine_tuned_model,
        )

    def log(self, try_number: int) -> str:
        return self.stack.task_log(self.dag_id, self.run_id, CREATE, try_number)

    def check_success(self, job: Any) -> None:
        """The run succeeded with ``job``: the create task's XComs and the registered model."""
        assert self.stack.wait_for_runs(self.dag_id, [self.run_id]) == {self.run_id: "success"}, (
            self.describe()
        )
        assert self.stack.xcom(self.dag_id, self.run_id, CREATE, key="job_id") == job.id
        assert self.stack.xcom(self.dag_id, self.run_id, CREATE)["status"] == "succeeded"
        assert self.stack.xcom(self.dag_id, self.run_id, REGISTER) == job.fine_tuned_model


def metric(name: str) -> str:
    """The provider's counter ``name``, as Airflow's Stats sends it."""
    return f"truefoundry.fine_tuning_job.{name}"


def counters(stack: AirflowStack, *names: str) -> dict[str, int]:
    """The provider's counters now (the stack is shared: tests compare before and after)."""
    return {name: stack.metrics.count(metric(name)) for name in names}


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


# -- 1. eviction -----------------------------------------------------------------------------


def test_an_evicted_task_is_retried_and_reattaches_without_a_cancel(stack: AirflowStack) -> None:
    before = counters(stack, "created", "reattached", "left_running_on_kill", "cancelled_on_kill")
    run = Run(stack, "eviction")
    job, _, runner, _ = run.waiting()

    # A pod eviction: SIGTERM to the task, SIGKILL after the grace period if it is still there.
    os.kill(runner, signal.SIGTERM)
    evicted_at = time.time()
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline and not process_gone(runner):
        time.sleep(0.1)
    if not process_gone(runner):
        os.kill(runner, signal.SIGKILL)

    # The retry reattaches to the job and waits on it (Airflow may count one more failed try for
    # the killed process when the executor's report arrives late: try 2 or 3).
    def retry_waiting() -> int | None:
        if stack.simulator.cancel_requests(job.id):
            pytest.fail(f"the eviction cancelled the job at the gateway\n{run.describe()}")
        ti = run.task()
        if ti["state"] != "running" or ti["try_number"] < 2:
            return None
        return int(ti["try_number"]) if run.polls_since(job.id, evicted_at + GRACE_SECONDS) >= 2 else None

    tries = wait_until(retry_waiting, WAIT, "the retry to wait on the job", 0.5, run.describe)
    assert stack.simulator.cancel_requests(job.id) == 0, "an eviction cancelled the job"
    assert [j.id for j in run.jobs] == [job.id], "the retry created a second job"

    run.finish(job)
    run.check_success(job)
    assert stack.task_instances(run.dag_id, run.run_id)[CREATE]["try_number"] == tries
    assert f"Created fine-tuning job {job.id}" in run.log(1)
    assert f"Reattached to fine-tuning job {job.id}" in run.log(tries)
    assert stack.simulator.cancel_requests(job.id) == 0
    assert len(run.jobs) == 1
    # What the provider reported through Airflow's metrics: one job created, the kill left it
    # running, a retry reattached; nothing cancelled.
    metrics = stack.metrics
    assert metrics.wait_for(metric("created"), before["created"] + 1) > before["created"]
    assert (
        metrics.wait_for(metric("left_running_on_kill"), before["left_running_on_kill"] + 1)
        > before["left_running_on_kill"]
    )
    assert metrics.wait_for(metric("reattached"), before["reattached"] + 1) > before["reattached"]
    assert metrics.count(metric("cancelled_on_kill")) == before["cancelled_on_kill"]


# -- 2. warm shutdown of a worker ------------------------------------------------------------


def test_a_warm_worker_shutdown_lets_the_waiting_task_finish(stack: AirflowStack) -> None:
    run = Run(stack, "warm_shutdown")
    job, _, runner, _ = run.waiting()
    worker = stack.worker_of(run.dag_id, run.run_id, CREATE)
    assert worker in WORKERS, worker
    try:
        # SIGTERM to the worker's main process only, as ``celery worker`` under systemd or
        # Kubernetes gets it: a warm shutdown, which takes no new task and waits for its own.
        proc = stack.kill(worker, signal.SIGTERM, group=False, wait=None)
        stopped_at = time.time()
        wait_until(
            lambda: run.polls_since(job.id, stopped_at) >= 3, 60, "the task to wait on through the shutdown"
        )
        assert proc.poll() is None, "the worker did not wait for its running task"
        assert not process_gone(runner)
        assert stack.simulator.cancel_requests(job.id) == 0

        run.finish(job)
        # The worker exits once its task is done; its successor starts while the run ends.
        assert proc.wait(timeout=STOP_TIMEOUT) == 0
        stack.start_process(worker)
        run.check_success(job)
        stack.wait_for_worker(worker)
    finally:
        if worker not in stack.processes:
            stack.restart(worker)  # the stack has two workers again for the next tests
    ti = stack.task_instances(run.dag_id, run.run_id)[CREATE]
    assert ti["try_number"] == 1, ti  # the try that was running finished: no retry at all
    assert stack.simulator.cancel_requests(job.id) == 0
    assert len(run.jobs) == 1


# -- 3. a person marks the task failed -------------------------------------------------------


def test_marking_the_waiting_task_failed_cancels_its_job_once(stack: AirflowStack) -> None:
    before = counters(stack, "cancelled_on_kill")
    run = Run(stack, "person")
    job, _, _, _ = run.waiting()
    assert stack.simulator.cancel_requests(job.id) == 0

    stack.api_json(
        "PATCH",
        f"/api/v2/dags/{run.dag_id}/dagRuns/{run.run_id}/taskInstances/{CREATE}",
        json={"new_state": "failed"},
    )

    wait_until(lambda: stack.simulator.cancel_requests(job.id) >= 1, 60, "on_kill to cancel the job")
    assert stack.wait_for_runs(run.dag_id, [run.run_id]) == {run.run_id: "failed"}
    assert stack.task_states(run.dag_id, run.run_id) == {CREATE: "failed", REGISTER: "upstream_failed"}
    assert stack.simulator.cancel_requests(job.id) == 1
    assert stack.simulator.get_job(job.id).status == "cancelled"
    assert len(run.jobs) == 1
    assert f"Asked the gateway to cancel fine-tuning job {job.id}" in run.log(1)
    expected = before["cancelled_on_kill"] + 1
    assert stack.metrics.wait_for(metric("cancelled_on_kill"), expected) == expected


# -- 4. a frozen worker's try is replaced ----------------------------------------------------


def test_a_frozen_workers_try_is_replaced_and_one_job_survives(stack: AirflowStack) -> None:
    before = counters(stack, "reattached", "cancelled_on_kill")
    run = Run(stack, "replaced_try")
    job, _, _, _ = run.waiting()
    worker = stack.worker_of(run.dag_id, run.run_id, CREATE, 1)
    assert worker in WORKERS, worker
    [other] = [name for name in WORKERS if name != worker]

    # Freeze the whole worker: main process, pool, supervisors and task processes. Its try stops
    # heartbeating; after TASK_HEARTBEAT_TIMEOUT the scheduler fails it and the retry runs.
    frozen = stack.signal_session(worker, signal.SIGSTOP)
    frozen_at = time.time()
    try:
        retry, _, _, session = run.waiting(try_number=2, since=frozen_at)
        assert time.time() - frozen_at >= TASK_HEARTBEAT_TIMEOUT - 1
        assert session == stack.processes[other].pid, "the retry ran on the frozen worker"
        assert retry.id == job.id
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    thawed_at = time.time()

    # The thawed try learns from its next heartbeat that it was replaced, and is stopped.
    wait_until(
        lambda: stack.task_process(run.dag_id, run.run_id, CREATE, 1) is None,
        60,
        "the replaced try to stop",
    )
    assert stack.simulator.cancel_requests(job.id) == 0, "the replaced try cancelled the retry's job"
    wait_until(
        lambda: run.polls_since(job.id, thawed_at + 2) >= 2, 60, "the retry to poll on", 0.5, run.describe
    )
    live = [j for j in run.jobs if stack.simulator.get_job(j.id).status != "cancelled"]
    assert len(run.jobs) in (1, 2), [(j.id, j.status) for j in run.jobs]
    assert [j.id for j in live] == [job.id], [(j.id, j.status) for j in run.jobs]

    run.finish(job)
    run.check_success(job)
    assert stack.task_instances(run.dag_id, run.run_id)[CREATE]["try_number"] == 2
    assert f"Reattached to fine-tuning job {job.id}" in run.log(2)
    assert stack.simulator.cancel_requests(job.id) == 0
    assert stack.metrics.wait_for(metric("reattached"), before["reattached"] + 1) > before["reattached"]
    assert stack.metrics.count(metric("cancelled_on_kill")) == before["cancelled_on_kill"]
    stack.check_alive()  # the thawed worker is a working worker again
