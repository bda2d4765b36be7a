"""The example DAG, deferrable, on a real Airflow stack against the gateway simulator.

Tests run in file order and share one stack; the two DAG runs are sequential, so at most one
deferral is in flight at a time (concurrent deferrals can hit an upstream scheduler race, see
/work/shared/notes/airflow-real-stack.md). The last tests stop the stack, then check that no
process survived and that no log anywhere holds the API key.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from airflow_stack import DEFERRABLE_DAG, AirflowStack

# The bounded waits below are the real limits; the suite-wide 300 s would count stack start-up too.
pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

SENSOR = "wait_for_fine_tuning"
REGISTER = "register_model"
RUN_TIMEOUT = 120.0
# Poll-driven jobs: each status lasts this many successful GETs. The first GET is the sensor's
# synchronous poke (in the worker); every later one must come from the trigger, one per second.
POLLS_PER_STATUS = 3


def trigger_run(stack: AirflowStack, job_id: str) -> str:
    """Unpause the deferrable DAG and trigger a run for ``job_id``; return its run id."""
    stack.api_json("PATCH", f"/api/v2/dags/{DEFERRABLE_DAG}", json={"is_paused": False})
    run = stack.api_json(
        "POST",
        f"/api/v2/dags/{DEFERRABLE_DAG}/dagRuns",
        json={"conf": {"job_id": job_id}, "logical_date": None},
    )
    assert run["conf"] == {"job_id": job_id}
    return run["dag_run_id"]


def task_states(stack: AirflowStack, run_id: str) -> dict[str, str | None]:
    answer = stack.api_json("GET", f"/api/v2/dags/{DEFERRABLE_DAG}/dagRuns/{run_id}/taskInstances")
    return {ti["task_id"]: ti["state"] for ti in answer["task_instances"]}


def task_log_entries(stack: AirflowStack, run_id: str, task_id: str, try_number: int = 1) -> list[Any]:
    """The task's log through the REST API (JSON, else the endpoint answers 406)."""
    answer = stack.api_json(
        "GET",
        f"/api/v2/dags/{DEFERRABLE_DAG}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
        params={"full_content": "true"},
        headers={"Accept": "application/json"},
    )
    return answer["content"]


def task_log(stack: AirflowStack, run_id: str, task_id: str, try_number: int = 1) -> str:
    """The task's log through the REST API, as one searchable text."""
    return json.dumps(task_log_entries(stack, run_id, task_id, try_number))


def deferred_at(stack: AirflowStack, run_id: str, task_id: str) -> float:
    """When the worker handed the task to the triggerer (Unix time), from the task's log."""
    entries = task_log_entries(stack, run_id, task_id)
    for entry in entries:
        if isinstance(entry, dict) and str(entry.get("event", "")).startswith("Pausing task as DEFERRED"):
            return datetime.fromisoformat(entry["timestamp"]).timestamp()
    raise AssertionError(f"the task log never says it deferred: {json.dumps(entries)[-4000:]}")


def wait_for_run(stack: AirflowStack, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
    """Poll the run until it is ``success`` or ``failed``; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        state = stack.api_json("GET", f"/api/v2/dags/{DEFERRABLE_DAG}/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            return state
        stack.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(
                f"run {run_id} still {state} after {timeout:.0f} s; tasks: {task_states(stack, run_id)}\n"
                f"{stack.log_tails()}"
            )
        time.sleep(1)


def run_report(stack: AirflowStack, run_id: str) -> str:
    """Task states and the sensor's log, for assertion messages."""
    try:
        return f"tasks: {task_states(stack, run_id)}\nsensor log: {task_log(stack, run_id, SENSOR)[-4000:]}"
    except AssertionError as err:
        return f"(could not read the run: {err})"


def events_of(stack: AirflowStack, run_id: str, task_id: str) -> list[str]:
    """The event-log events recorded for one task of a run, oldest first."""
    answer = stack.api_json(
        "GET",
        "/api/v2/eventLogs",
        params={
            "dag_id": DEFERRABLE_DAG,
            "run_id": run_id,
            "task_id": task_id,
            "order_by": "id",
            "limit": 100,
        },
    )
    return [entry["event"] for entry in answer["event_logs"]]


def trigger_logs(stack: AirflowStack, run_id: str, task_id: str) -> dict[int, Path]:
    """The ``attempt=1.log.trigger.<N>.log`` files of a task, by triggerer job id N."""
    folder = stack.task_log_dir / f"dag_id={DEFERRABLE_DAG}" / f"run_id={run_id}" / f"task_id={task_id}"
    return {int(path.name.rsplit(".", 2)[-2]): path for path in folder.glob("attempt=1.log.trigger.*.log")}


def test_deferred_run_succeeds_with_the_wait_in_the_triggerer(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    token = secrets.token_hex(4)
    job_id = f"ftjob-systest-ok-{token}"
    model = f"ft:gpt-4o-mini-2024-07-18:tfy:systest-{token}"
    # queued x3, running x3, succeeded: one synchronous poke, then six polls from the trigger.
    stack.simulator.add_job(
        job_id,
        statuses=("queued", "running", "succeeded"),
        polls_per_status=POLLS_PER_STATUS,
        fine_tuned_model=model,
    )
    triggerer_ids = {job["id"] for job in stack.alive_jobs("TriggererJob")}
    assert len(triggerer_ids) == 1, triggerer_ids

    run_id = trigger_run(stack, job_id)
    state = wait_for_run(stack, run_id)
    stack.mark("first run done")

    assert state == "success", run_report(stack, run_id)
    assert task_states(stack, run_id) == {SENSOR: "success", REGISTER: "success"}

    # The sensor deferred: the scheduler recorded the task entering the deferred state.
    events = events_of(stack, run_id, SENSOR)
    assert "deferred" in events, events

    # ... and the triggerer ran the trigger: it wrote the task's trigger log, named after its
    # own job id, and the trigger fired its event there.
    logs = trigger_logs(stack, run_id, SENSOR)
    assert set(logs) == triggerer_ids, (logs, triggerer_ids)
    trigger_log = next(iter(logs.values())).read_text()
    assert "Trigger fired event" in trigger_log, trigger_log[-3000:]
    assert job_id in trigger_log, trigger_log[-3000:]
    assert "Trigger fired event" in task_log(stack, run_id, SENSOR)

    # The gateway was polled through the whole wait, not only by the synchronous first poke:
    # every request but the first came after the worker had let go of the task.
    assert stack.simulator.get_job(job_id).last_status == "succeeded"
    assert stack.simulator.request_count(job_id) >= 2 * POLLS_PER_STATUS + 1
    records = [r for r in stack.simulator.requests if r.job_id == job_id]
    assert all(r.has_valid_auth and r.status == 200 for r in records), records
    handed_over = deferred_at(stack, run_id, SENSOR)
    assert records[0].time < handed_over, (records[0], handed_over)
    assert all(r.time > handed_over for r in records[1:]), (records, handed_over)

    # The next task got the fine-tuned model's name through XCom.
    xcom = stack.api_json(
        "GET",
        f"/api/v2/dags/{DEFERRABLE_DAG}/dagRuns/{run_id}/taskInstances/{REGISTER}/xcomEntries/return_value",
    )
    assert xcom["value"] == model, xcom
    assert f"Registering fine-tuned model {model}" in task_log(stack, run_id, REGISTER)


def test_failed_job_fails_the_run_with_the_gateway_reason(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    token = secrets.token_hex(4)
    job_id = f"ftjob-systest-bad-{token}"
    message = f"Line 42 of the training file is not valid JSON (system test {token})."
    stack.simulator.add_job(
        job_id,
        statuses=("queued", "running", "failed"),
        polls_per_status=2,
        error={"code": "invalid_training_file", "message": message, "param": "training_file"},
    )

    run_id = trigger_run(stack, job_id)
    state = wait_for_run(stack, run_id)
    stack.mark("second run done")

    assert state == "failed", run_report(stack, run_id)
    assert task_states(stack, run_id) == {SENSOR: "failed", REGISTER: "upstream_failed"}
    assert "deferred" in events_of(stack, run_id, SENSOR)
    assert stack.simulator.get_job(job_id).last_status == "failed"

    log = task_log(stack, run_id, SENSOR)
    assert "FineTuningJobFailed" in log, log[-4000:]
    assert message.rstrip(".") in log, log[-4000:]
    assert "invalid_training_file" in log, log[-4000:]


def test_teardown_leaves_no_process(airflow_stack: AirflowStack) -> None:
    # The scan that must come back empty does see the stack while it runs.
    running = {pid for pid, _ in airflow_stack.running_processes()}
    assert {proc.pid for proc in airflow_stack.processes.values()} <= running, running
    assert len(running) > len(airflow_stack.processes), running  # executor workers, trigger runner
    started = time.monotonic()
    leftovers = airflow_stack.stop()
    assert leftovers == [], leftovers
    assert all(proc.poll() is not None for proc in airflow_stack.processes.values())
    airflow_stack.mark("stopped")
    print(f"stack stopped in {time.monotonic() - started:.1f} s; milestones (s): {airflow_stack.timings}")


def test_api_key_is_in_no_log(airflow_stack: AirflowStack) -> None:
    # Run after teardown, so that the processes' last words are on disk too.
    files: list[Path] = [
        *(p for p in airflow_stack.task_log_dir.rglob("*") if p.is_file()),
        *(airflow_stack.process_log(name) for name in airflow_stack.processes),
    ]
    assert any(".log.trigger." in p.name for p in files), files
    leaking = [p for p in files if airflow_stack.api_key.encode() in p.read_bytes()]
    assert leaking == []
    # The key did reach every process, or the check above would prove nothing.
    assert airflow_stack.env["AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT"].count(airflow_stack.api_key) == 1
