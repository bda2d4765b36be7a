"""Unit tests of the kill decision: cancel only when Airflow confirms a person ended this try."""

from __future__ import annotations

import pytest

from airflow_provider_tfy.operators._interruption import ENDED_BY_DECISION, Answer, kill_verdict

STILL_RUNNING = "the task instance is still running on the server, so this is a worker shutdown"


@pytest.mark.parametrize("state", ["failed", "success", "skipped", "restarting"])
@pytest.mark.parametrize("same_try", [True, None])
def test_a_persons_mark_or_clear_of_this_try_cancels(state, same_try):
    verdict = kill_verdict(Answer(state=state, same_try=same_try), timed_out=False)

    assert verdict.cancel
    assert verdict.reason == f"a user ended this try (the task instance is now {state})"


@pytest.mark.parametrize("same_try", [True, None])
def test_a_try_still_running_on_the_server_is_a_shutdown_or_lost_heartbeats(same_try):
    verdict = kill_verdict(Answer(state="running", same_try=same_try), timed_out=False)

    assert not verdict.cancel
    assert verdict.reason.startswith(STILL_RUNNING)
    assert verdict.reason.endswith("the next try reattaches to it")


# None: reset by the scheduler (an orphaned try); the rest: the new try's way to run, or no run.
MOVED_ON = [None, "up_for_retry", "scheduled", "queued", "deferred", "up_for_reschedule", "removed"]


@pytest.mark.parametrize("state", MOVED_ON)
def test_a_try_airflow_has_moved_on_from_is_left_running(state):
    verdict = kill_verdict(Answer(state=state), timed_out=False)

    assert not verdict.cancel
    assert f"Airflow moved on to another try (the task instance is now {state})" in verdict.reason


@pytest.mark.parametrize("state", [*sorted(ENDED_BY_DECISION), "running", None])
def test_another_try_number_is_a_replaced_try_whatever_its_state(state):
    verdict = kill_verdict(Answer(state=state, same_try=False), timed_out=False)

    assert not verdict.cancel
    assert verdict.reason.startswith("Airflow replaced this try by another")


@pytest.mark.parametrize("answer", [Answer(state="failed", same_try=True), Answer(error="unreachable")])
def test_an_execution_timeout_never_cancels(answer):
    verdict = kill_verdict(answer, timed_out=True)

    assert not verdict.cancel
    assert verdict.reason.startswith("execution_timeout passed")


def test_no_answer_from_airflow_never_cancels():
    verdict = kill_verdict(Answer(state="failed", error="no answer within 2 s"), timed_out=False)

    assert not verdict.cancel
    assert verdict.reason.startswith("Airflow cannot say how this try ended (no answer within 2 s)")


def test_the_states_that_cancel_are_exactly_a_persons_decisions():
    assert frozenset({"failed", "success", "skipped", "restarting"}) == ENDED_BY_DECISION
