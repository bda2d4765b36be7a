"""Deferred and poke waits on the production-shaped stack, through the crashes users meet.

One stack serves every test (see conftest.py): PostgreSQL, CeleryExecutor with two workers, two
triggerers. Each scenario asserts its outcome and an upper bound on the gateway requests it cost.

The jobs here stay ``running`` until the test ends them (``set_job``), and a test ends them only
once every sensor is deferred and its trigger has polled a few times. That is what makes 20
concurrent deferrals reliable: an upstream scheduler race (apache/airflow #72716, #71580) fails a
resumed task when the executor's "success" for the process that deferred is processed after the
trigger already fired. Polling a few times
after the deferral takes seconds, by which time the scheduler has long processed that event;
``[workers] min_heartbeat_interval = 1`` (airflow_stack.py) shortens the window further.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import signal
import time
from collections.abc import Iterable
from datetime import datetime

import pytest
from airflow_stack import (
    DEFERRABLE_DAG,
    REGISTER,
    SENSOR,
    TRIGGERER_HEALTH_CHECK_THRESHOLD,
    TRIGGERERS,
    AirflowStack,
    wait_until,
)

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

DAG = "systest_deferrable"
DEADLINE_DAG = "systest_deadline"
POKE_DAG = "systest_poke_retry"
INTERVAL = 1.0  # the poll interval of every DAG the tests run (dags/systest_dags.py)
DEADLINE_SECONDS = 45.0  # systest_deadline's sensor timeout
WAIT_TIMEOUT = 420.0  # deferring 20 runs takes a while on a busy 2-core machine


def model_of(job_id: str) -> str:
    return f"ft:gpt-4o-mini-2024-07-18:tfy:{job_id}"


def start_waits(stack: AirflowStack, dag_id: str, count: int, tag: str) -> dict[str, str]:
    """Script ``count`` jobs that stay running and trigger one run for each: {run_id: job_id}."""
    token = secrets.token_hex(3)
    runs = {}
    for index in range(count):
        job_id = f"ftjob-{tag}-{token}-{index}"
        stack.simulator.add_job(job_id, statuses=("running",))
        runs[stack.trigger_run(dag_id, job_id)] = job_id
    return runs


def polls_since(stack: AirflowStack, job_id: str, since: float) -> int:
    return sum(1 for r in stack.simulator.requests if r.job_id == job_id and r.time > since)


def wait_deferred_and_polled(
    stack: AirflowStack, dag_id: str, runs: dict[str, str], polls: int = 3, timeout: float = WAIT_TIMEOUT
) -> dict[str, int]:
    """Wait until every run's sensor is deferred, held by a triggerer and polled ``polls`` times
    since it deferred; return {run_id: holding triggerer job id}."""

    def ready() -> dict[str, int] | None:
        stack.check_alive()
        holders = stack.holders(dag_id, runs)
        if len(holders) < len(runs) or None in holders.values():
            return None
        for run_id, job_id in runs.items():
            ti = stack.task_instances(dag_id, run_id)[SENSOR]
            if ti["state"] != "deferred":
                return None
            # The sensor's own poke came first, in the worker; the trigger's polls follow.
            if stack.simulator.request_count(job_id) < 1 + polls:
                return None
        return {run: int(holder) for run, holder in holders.items() if holder is not None}

    def describe() -> str:
        states = {run: stack.task_states(dag_id, run) for run in runs}
        counts = {job: stack.simulator.request_count(job) for job in runs.values()}
        holders = stack.holders(dag_id, runs)
        return f"tasks: {states}\nholders: {holders}\nrequests: {counts}\n{stack.log_tails()}"

    return wait_until(ready, timeout, f"{len(runs)} deferred, polled waits of {dag_id}", 1.0, describe)


def finish(stack: AirflowStack, job_ids: Iterable[str], status: str = "succeeded") -> float:
    """End the jobs (the next poll sees ``status``); return when."""
    for job_id in job_ids:
        stack.simulator.set_job(job_id, statuses=(status,), fine_tuned_model=model_of(job_id))
    return time.time()


def timestamp(value: str | None) -> float:
    assert value, "no timestamp"
    return datetime.fromisoformat(value).timestamp()


def check_success(stack: AirflowStack, dag_id: str, run_id: str, job_id: str, tries: int = 1) -> None:
    """The run succeeded once, with the job's XCom and the model handed on."""
    tis = stack.task_instances(dag_id, run_id)
    assert {t: ti["state"] for t, ti in tis.items()} == {SENSOR: "success", REGISTER: "success"}, run_id
    assert tis[SENSOR]["try_number"] == tries, tis[SENSOR]
    assert tis[REGISTER]["try_number"] == 1, tis[REGISTER]
    job = stack.xcom(dag_id, run_id, SENSOR)
    assert (job["id"], job["status"]) == (job_id, "succeeded"), job
    assert job["fine_tuned_model"] == model_of(job_id), job
    assert stack.xcom(dag_id, run_id, REGISTER) == model_of(job_id)


def request_bound(stack: AirflowStack, dag_id: str, run_id: str, job_id: str, extra: int = 2) -> None:
    """At most one request per poll interval over the sensor's life, plus ``extra``, all authorised."""
    ti = stack.task_instances(dag_id, run_id)[SENSOR]
    records = [r for r in stack.simulator.requests if r.job_id == job_id]
    assert records, job_id
    # The task instance's dates are its last try's; a retried sensor polled in earlier tries too,
    # so its life starts at the first request the gateway saw.
    started = min(timestamp(ti["start_date"]), records[0].time)
    seconds = timestamp(ti["end_date"]) - started
    assert all(r.has_valid_auth for r in records), records
    assert len(records) <= seconds / INTERVAL + extra, (len(records), seconds, job_id)


def fired_events(stack: AirflowStack, dag_id: str, run_id: str) -> int:
    """'Trigger fired event' lines in every trigger log of the sensor, whichever triggerer wrote it."""
    files = stack.trigger_log_files(dag_id, run_id, SENSOR)
    return sum(path.read_text(errors="replace").count("Trigger fired event") for path in files.values())


# -- 1. many at once -------------------------------------------------------------------------


def test_twenty_waits_at_once_across_both_triggerers(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    runs = start_waits(stack, DAG, 20, "many")
    holders = wait_deferred_and_polled(stack, DAG, runs)
    stack.mark("20 deferred")
    assert set(holders.values()) == set(stack.triggerer_jobs.values()), (holders, stack.triggerer_jobs)

    # The trigger rows hold the connection id and the job, never the key.
    rows = [t for t in stack.triggers() if t["run_id"] in runs]
    assert len(rows) == 20
    assert all(t["classpath"].endswith("TrueFoundryFineTuningJobTrigger") for t in rows), rows[0]
    assert all("truefoundry_default" in t["kwargs"] and runs[t["run_id"]] in t["kwargs"] for t in rows)
    assert not [t for t in rows if stack.api_key in t["kwargs"]]

    finish(stack, runs.values())
    states = stack.wait_for_runs(DAG, runs)
    stack.mark("20 done")
    assert set(states.values()) == {"success"}, states
    for run_id, job_id in runs.items():
        check_success(stack, DAG, run_id, job_id)
        request_bound(stack, DAG, run_id, job_id)
        # Each job was polled at its interval: no two trigger polls closer than the interval
        # allows (0.2 s of timer slack), so 20 waits in one loop did not turn into bursts.
        times = [r.time for r in stack.simulator.requests if r.job_id == job_id]
        gaps = [b - a for a, b in itertools.pairwise(times[1:])]  # after the sensor's own poke
        assert gaps, job_id
        assert min(gaps) > INTERVAL - 0.2, (job_id, gaps)
        assert fired_events(stack, DAG, run_id) == 1


def test_failed_job_fails_the_example_dag_with_the_gateway_reason(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    runs = start_waits(stack, DEFERRABLE_DAG, 1, "bad")
    [(run_id, job_id)] = runs.items()
    wait_deferred_and_polled(stack, DEFERRABLE_DAG, runs)
    message = f"Line 42 of the training file is not valid JSON (system test {job_id})."
    stack.simulator.set_job(
        job_id,
        statuses=("failed",),
        error={"code": "invalid_training_file", "message": message, "param": "training_file"},
    )
    assert stack.wait_for_runs(DEFERRABLE_DAG, runs) == {run_id: "failed"}
    assert stack.task_states(DEFERRABLE_DAG, run_id) == {SENSOR: "failed", REGISTER: "upstream_failed"}
    assert "deferred" in stack.events_of(DEFERRABLE_DAG, run_id, SENSOR)
    log = stack.task_log(DEFERRABLE_DAG, run_id, SENSOR)
    assert "FineTuningJobFailed" in log, log[-4000:]
    assert message.rstrip(".") in log, log[-4000:]
    assert "invalid_training_file" in log, log[-4000:]
    request_bound(stack, DEFERRABLE_DAG, run_id, job_id)
    assert fired_events(stack, DEFERRABLE_DAG, run_id) == 1


# -- 2. triggerer crash ----------------------------------------------------------------------


def test_triggerer_crash_hands_the_waits_over_with_their_deadline(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    runs = start_waits(stack, DAG, 6, "crash")
    [(deadline_run, deadline_job)] = start_waits(stack, DEADLINE_DAG, 1, "deadline").items()
    holders = {
        **wait_deferred_and_polled(stack, DAG, runs),
        **wait_deferred_and_polled(stack, DEADLINE_DAG, {deadline_run: deadline_job}),
    }
    jobs = {**runs, deadline_run: deadline_job}
    [deadline_trigger] = [t for t in stack.triggers() if t["run_id"] == deadline_run]
    match = re.search(r'"deadline": ([0-9.e+]+)', deadline_trigger["kwargs"])
    assert match, deadline_trigger["kwargs"]
    deadline = float(match.group(1))

    # The key reached both triggerers: the simulator saw authorised polls of the jobs each held.
    started = {
        run: timestamp(stack.task_instances(DAG if run in runs else DEADLINE_DAG, run)[SENSOR]["start_date"])
        for run in jobs
    }
    by_holder: dict[int, list[str]] = {}
    for run, holder in holders.items():
        by_holder.setdefault(holder, []).append(run)
    for holder, held in by_holder.items():
        polls = [r for run in held for r in stack.simulator.requests if r.job_id == jobs[run]]
        assert polls, holder
        assert all(r.has_valid_auth and r.status == 200 for r in polls), holder

    # Kill the busier triggerer, its whole process group (the trigger runner included).
    name_of = {job: name for name, job in stack.triggerer_jobs.items()}
    victim_job = max(by_holder, key=lambda holder: len(by_holder[holder]))
    victim = name_of[victim_job]
    [survivor] = [name for name in TRIGGERERS if name != victim]
    survivor_job = stack.triggerer_jobs[survivor]
    moved = by_holder[victim_job]
    survivor_log_at_kill = stack.process_log(survivor).stat().st_size
    stack.kill(victim, signal.SIGKILL)
    killed_at = time.time()

    # The survivor takes them over once the victim's heartbeat is older than the threshold.
    wait_until(
        lambda: (
            all(h == survivor_job for h in stack.holders(DAG, runs).values())
            and stack.holders(DEADLINE_DAG, [deadline_run]) == {deadline_run: survivor_job}
            and all(polls_since(stack, jobs[run], killed_at + 1) >= 2 for run in moved)
        ),
        TRIGGERER_HEALTH_CHECK_THRESHOLD + 90,
        f"{survivor} to take over {len(moved)} triggers",
    )
    resumed = [
        min(r.time for r in stack.simulator.requests if r.job_id == jobs[run] and r.time > killed_at)
        for run in moved
    ]
    takeover = max(resumed) - killed_at
    print(f"\n{len(moved)} triggers taken over {takeover:.1f} s after the kill")
    stack.mark("taken over")
    stack.restart(victim)  # the stack has two triggerers again for the next tests

    finish(stack, runs.values())
    assert set(stack.wait_for_runs(DAG, runs).values()) == {"success"}
    for run_id, job_id in runs.items():
        check_success(stack, DAG, run_id, job_id)
        # The interval gap the takeover cost is the only extra: no poll was doubled.
        request_bound(stack, DAG, run_id, job_id)
        assert fired_events(stack, DAG, run_id) == 1, run_id

    # The wait that never ends times out at the deadline set when it deferred, not a restarted one.
    assert stack.wait_for_runs(DEADLINE_DAG, [deadline_run], timeout=DEADLINE_SECONDS + 120) == {
        deadline_run: "failed"
    }
    assert deadline - DEADLINE_SECONDS >= started[deadline_run] - 1
    # A clock restarted at the takeover (at least the health-check threshold after the kill)
    # would poll on past killed_at + threshold + DEADLINE_SECONDS, well after this deadline.
    assert deadline < killed_at + DEADLINE_SECONDS
    last_poll = max(r.time for r in stack.simulator.requests if r.job_id == deadline_job)
    assert deadline - INTERVAL - 1 <= last_poll <= deadline + 2, (last_poll, deadline)
    ti = stack.task_instances(DEADLINE_DAG, deadline_run)[SENSOR]
    assert (ti["state"], ti["try_number"]) == ("failed", 1), ti
    assert timestamp(ti["end_date"]) < deadline + 30, (ti["end_date"], deadline)
    assert "timeout" in stack.task_log(DEADLINE_DAG, deadline_run, SENSOR).lower()
    assert fired_events(stack, DEADLINE_DAG, deadline_run) == 1
    request_bound(stack, DEADLINE_DAG, deadline_run, deadline_job)

    # Taking the triggers over never blocked the survivor's event loop.
    with stack.process_log(survivor).open("rb") as log:
        log.seek(survivor_log_at_kill)
        since_kill = log.read().decode(errors="replace")
    assert "blocked" not in since_kill.lower(), since_kill[-3000:]


# -- 3. gateway restart ----------------------------------------------------------------------


def test_gateway_restart_mid_wait(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    runs = start_waits(stack, DAG, 3, "gw")
    wait_deferred_and_polled(stack, DAG, runs)
    stack.simulator.stop()  # connections refused from now on
    down_at = time.time()
    time.sleep(20)
    stack.simulator.start()  # same port, same jobs
    up_at = time.time()
    assert not [r for r in stack.simulator.requests if down_at < r.time < up_at]
    wait_until(
        lambda: all(polls_since(stack, job, up_at) >= 2 for job in runs.values()),
        60,
        "polls after the restart",
    )
    finish(stack, runs.values())
    assert set(stack.wait_for_runs(DAG, runs).values()) == {"success"}
    for run_id, job_id in runs.items():
        check_success(stack, DAG, run_id, job_id)  # no task failed or was retried
        assert "up_for_retry" not in stack.events_of(DAG, run_id, SENSOR)
        # The 20 s without answers cost no request at all; after it, polling went on at its pace.
        request_bound(stack, DAG, run_id, job_id)


# -- 4. scheduler restart --------------------------------------------------------------------


def test_scheduler_restart_mid_wait(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    runs = start_waits(stack, DAG, 3, "sched")
    wait_deferred_and_polled(stack, DAG, runs)
    stack.kill("scheduler", signal.SIGTERM, group=False)
    stopped_at = time.time()
    # The waits go on without a scheduler: the triggerers poll on.
    wait_until(
        lambda: all(polls_since(stack, job, stopped_at) >= 3 for job in runs.values()), 60, "polls meanwhile"
    )
    stack.restart("scheduler")
    wait_until(lambda: stack.alive_jobs("SchedulerJob"), 120, "the new scheduler's heartbeat")
    finish(stack, runs.values())
    assert set(stack.wait_for_runs(DAG, runs).values()) == {"success"}
    for run_id, job_id in runs.items():
        check_success(stack, DAG, run_id, job_id)
        request_bound(stack, DAG, run_id, job_id)
        assert fired_events(stack, DAG, run_id) == 1


# -- 5. worker crash of a poke-mode sensor ---------------------------------------------------


def test_worker_crash_of_a_poke_sensor_is_picked_up_by_its_retry(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    runs = start_waits(stack, POKE_DAG, 1, "poke")
    [(run_id, job_id)] = runs.items()

    def poking() -> int | None:
        ti = stack.task_instances(POKE_DAG, run_id)[SENSOR]
        if ti["state"] != "running" or stack.simulator.request_count(job_id) < 3:
            return None
        return stack.task_runner_pid(POKE_DAG, run_id, SENSOR)

    pid = wait_until(poking, WAIT_TIMEOUT, "the poke-mode sensor to be poking")
    import os

    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    # The retry (try 2) pokes the same job again.
    wait_until(
        lambda: (
            stack.task_instances(POKE_DAG, run_id)[SENSOR]["try_number"] == 2
            and polls_since(stack, job_id, killed_at) >= 2
        ),
        120,
        "the sensor's retry to poke",
    )
    finish(stack, [job_id])
    assert stack.wait_for_runs(POKE_DAG, runs) == {run_id: "success"}
    check_success(stack, POKE_DAG, run_id, job_id, tries=2)
    request_bound(stack, POKE_DAG, run_id, job_id, extra=3)


# -- 6. the key stays secret -----------------------------------------------------------------


def test_api_key_in_no_log_event_log_trigger_or_xcom(airflow_stack: AirflowStack) -> None:
    # Mid-session: the fixture repeats the log and database checks after every process stopped,
    # and fails the session if a process or the database cluster outlives it.
    stack = airflow_stack
    key = stack.api_key
    # The searches below do see what the scenarios left: the data is there, the key is not.
    xcoms = stack.sql("SELECT value::text FROM xcom")
    assert any("ftjob-" in str(value) for (value,) in xcoms), xcoms[:3]
    assert not [v for (v,) in xcoms if key in str(v)]
    events = stack.sql("SELECT row_to_json(log)::text FROM log")
    assert any("deferred" in row for (row,) in events)
    assert not [row for (row,) in events if key in row]
    assert not [t for t in stack.triggers() if key in t["kwargs"]]
    assert key not in stack.postgres.dump()
    assert any(".log.trigger." in p.name for p in stack.task_log_dir.rglob("*")), "no trigger log to search"
    assert stack.files_holding(key) == []
    # The key is the one the gateway checked: every request the stack sent carried it.
    records = stack.simulator.requests
    assert records
    assert all(r.has_valid_auth for r in records if r.job_id and r.job_id.startswith("ftjob-"))
    assert json.dumps(stack.env).count(key) == 1
