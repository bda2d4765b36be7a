"""The event watcher in the real stack: each job that ends is reported once, across a SIGKILL.

The asset of ``systest_watcher_consumer`` is watched by ``TrueFoundryFineTuningJobEventTrigger``.
Jobs end at the simulator one by one; between two of them the triggerer running the watcher is
SIGKILLed (and restarted), and the other triggerer takes the watcher over with the asset's state
store. Every job that ended is reported exactly once across the consumer's runs, none other.
"""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest
from airflow_stack import AirflowStack, wait_until

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

CONSUMER = "systest_watcher_consumer"
CLASSPATH = "airflow_provider_tfy.triggers.fine_tuning.TrueFoundryFineTuningJobEventTrigger"
TIMEOUT = 120.0


def reported(stack: AirflowStack) -> Counter[str]:
    """Job ids in the asset events of every consumer run, counted."""
    counts: Counter[str] = Counter()
    for run_id in stack.run_states(CONSUMER):
        answer = stack.api_json("GET", f"/api/v2/dags/{CONSUMER}/dagRuns/{run_id}/upstreamAssetEvents")
        counts.update(event["extra"]["payload"]["id"] for event in answer["asset_events"])
    return counts


def watcher_holder(stack: AirflowStack) -> int | None:
    rows = [t for t in stack.triggers() if t["classpath"] == CLASSPATH and '"systest"' in t["kwargs"]]
    return rows[0]["triggerer_id"] if rows else None


def stored_state(stack: AirflowStack) -> bool:
    return bool(
        stack.sql(
            "SELECT 1 FROM asset_state_store s JOIN asset a ON a.id = s.asset_id WHERE a.uri = %s",
            "truefoundry://systest/watched-jobs",
        )
    )


def recorded(stack: AirflowStack, job_id: str) -> bool:
    """Whether the watcher's stored state no longer waits on ``job_id``: its report is recorded."""
    rows = stack.sql(
        "SELECT s.value FROM asset_state_store s JOIN asset a ON a.id = s.asset_id WHERE a.uri = %s",
        "truefoundry://systest/watched-jobs",
    )
    return bool(rows) and all(job_id not in json.loads(value).get("pending", {}) for (value,) in rows)


def end(stack: AirflowStack, job_id: str) -> None:
    job = stack.simulator.get_job(job_id)
    with stack.simulator._lock:  # two retrieves move a poll-driven job to its final status
        job.poll()
        job.poll()


def test_every_job_that_ends_is_reported_once_across_a_triggerer_kill(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    sim = stack.simulator
    holder = wait_until(lambda: watcher_holder(stack), TIMEOUT, "a triggerer to run the watcher")
    # The watcher's first scan is recorded before these jobs exist, so they all count as new.
    wait_until(lambda: stored_state(stack), TIMEOUT, "the watcher's first state in the asset's store")
    new_ended = sim.add_job(statuses=("succeeded",), metadata={"systest": "watcher"}).id
    ours = [
        sim.add_job(statuses=("running", "succeeded"), metadata={"systest": "watcher"}).id for _ in range(4)
    ]
    failing = sim.add_job(statuses=("running", "failed"), metadata={"systest": "watcher"}).id
    other = sim.add_job(statuses=("running", "succeeded"), metadata={"systest": "other"}).id
    expected = {new_ended}  # created after the watcher started, already ended: reported too

    def reported_exactly(ids: set[str]) -> bool:
        return set(reported(stack)) >= ids

    def describe() -> str:
        return f"reported: {dict(reported(stack))}, expected: {sorted(expected)}"

    # One job at a time, so that each report starts a consumer run of its own.
    wait_until(lambda: reported_exactly(expected), TIMEOUT, "the first report", describe=describe)
    end(stack, ours[0])
    end(stack, other)
    expected.add(ours[0])
    wait_until(lambda: reported_exactly(expected), TIMEOUT, "the second report", describe=describe)

    # The watcher records a report a few seconds after the triggerer has stored its event; a
    # crash inside that window repeats the report (the documented duplicate). Kill it after.
    wait_until(lambda: recorded(stack, ours[0]), TIMEOUT, "the second report to be recorded")
    # Kill the triggerer running the watcher; a job ends while it is down.
    name = next(n for n, job_id in stack.triggerer_jobs.items() if job_id == holder)
    stack.kill(name, signal.SIGKILL)
    end(stack, ours[1])
    end(stack, failing)
    expected.add(ours[1])
    stack.restart(name)
    wait_until(
        lambda: reported_exactly(expected),
        TIMEOUT,
        "the report of the job that ended meanwhile",
        describe=describe,
    )
    assert watcher_holder(stack) not in (None, holder)

    for job_id in ours[2:]:
        end(stack, job_id)
        expected.add(job_id)
        wait_until(lambda: reported_exactly(expected), TIMEOUT, f"the report of {job_id}", describe=describe)

    wait_until(
        lambda: not any(s in ("queued", "running") for s in stack.run_states(CONSUMER).values()),
        TIMEOUT,
        "the consumer runs to finish",
    )
    counts = reported(stack)
    assert {job_id: n for job_id, n in counts.items() if n != 1} == {}
    assert set(counts) == expected
    assert all(s == "success" for s in stack.run_states(CONSUMER).values()), stack.run_states(CONSUMER)
