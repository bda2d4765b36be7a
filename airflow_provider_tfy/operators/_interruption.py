"""Why ``on_kill`` (called on every SIGTERM) was called: a person's decision about this try, or not."""

from __future__ import annotations

import threading
from typing import NamedTuple

# What a person's mark (or a DAG run's end) or clear leaves on a try that still runs.
ENDED_BY_DECISION = frozenset({"failed", "success", "skipped", "restarting"})


class TryIdentity(NamedTuple):
    """The task instance try that ``on_kill`` asks Airflow about."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int


class Answer(NamedTuple):
    """What Airflow said: the task instance's state now and, where known, whether its try is ours."""

    state: str | None = None
    same_try: bool | None = None
    error: str | None = None  # why Airflow could not be asked


class Verdict(NamedTuple):
    """Cancel the job or leave it running, and why (one line for the task log)."""

    cancel: bool
    reason: str


def kill_verdict(answer: Answer, *, timed_out: bool) -> Verdict:
    """Cancel only when Airflow confirms a person ended this very try; otherwise leave the job."""
    state, leave = answer.state, "the next try reattaches to it"
    if timed_out:
        return Verdict(False, f"execution_timeout passed, which is no user's kill; {leave}")
    if answer.error is not None:
        return Verdict(False, f"Airflow cannot say how this try ended ({answer.error}); {leave}")
    if answer.same_try is False:
        return Verdict(False, f"Airflow replaced this try by another (now {state}); {leave}")
    if state == "running":
        return Verdict(
            False,
            "the task instance is still running on the server, so this is a worker shutdown or lost "
            f"heartbeats, not a user's kill; {leave}",
        )
    if state in ENDED_BY_DECISION:
        return Verdict(True, f"a user ended this try (the task instance is now {state})")
    return Verdict(False, f"Airflow moved on to another try (the task instance is now {state}); {leave}")


# The supervisor sends SIGKILL 5 s after its SIGTERM: the answer must leave time for the cancel.
def ask_airflow(ti: TryIdentity, timeout: float = 2.0) -> Answer:
    """Ask the server for the task instance's state now, waiting at most ``timeout`` seconds.

    From a thread: in the SIGTERM handler the main thread may hold the supervisor's comms lock.
    """
    answers: list[Answer] = []

    def ask() -> None:
        try:
            answers.append(_ask(ti))
        except Exception as err:  # any failure to ask means "cannot say", never a cancel
            answers.append(Answer(error=f"{type(err).__name__}: {str(err)[:200]}"))

    thread = threading.Thread(target=ask, name="tfy-on-kill", daemon=True)
    thread.start()
    thread.join(timeout)
    return answers[0] if answers else Answer(error=f"no answer within {timeout:g} s")


def _ask(ti: TryIdentity) -> Answer:
    from airflow_provider_tfy.version_compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        # The task SDK (3.0+): the supervisor asks the API server; states only, no try number.
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        states = RuntimeTaskInstance.get_task_states(
            dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=ti.map_index
        )
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}_{ti.map_index}"
        run = states.get(ti.run_id) or {}
        if key not in run:
            return Answer(error="the server has no such task instance")
        state, same_try = run[key], None
    else:  # Airflow 2: the task process has the metadata DB; this thread gets its own session.
        from airflow.models.taskinstance import TaskInstance

        row = TaskInstance.get_task_instance(
            dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index
        )
        if row is None:
            return Answer(error="the metadata DB has no such task instance")
        state, same_try = row.state, row.try_number == ti.try_number
    # A TaskInstanceState is a str enum, but hashes by its name: compare its value.
    return Answer(state=None if state is None else str(getattr(state, "value", state)), same_try=same_try)
