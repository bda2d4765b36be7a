"""The event watcher's watermark (protocol.watch): jobs in, reports and state out, no I/O."""

from __future__ import annotations

import json

from airflow_provider_tfy.models import FineTuningJob
from airflow_provider_tfy.protocol import WatchState, covers, read_enough, watch_step


def job(job_id: str, created: int, status: str = "running", **metadata: str) -> FineTuningJob:
    return FineTuningJob(id=job_id, status=status, created_at=created, metadata=metadata or None)


def step(state, jobs, statuses=("succeeded",), job_metadata=None):
    return watch_step(state, jobs, statuses=statuses, job_metadata=job_metadata or {})


def ids(jobs):
    return [j.id for j in jobs]


def test_the_first_poll_reports_nothing_and_watches_what_runs():
    reported, state = step(None, [job("c", 30), job("b", 20, "succeeded"), job("a", 10)])
    assert reported == []
    assert state == WatchState(30, frozenset({"c"}), {"c": 30, "a": 10})
    assert state.floor == 10


def test_a_watched_job_that_ends_is_reported_once_then_forgotten():
    _, state = step(None, [job("b", 20, "succeeded"), job("a", 10)])
    reported, state = step(state, [job("b", 20, "succeeded"), job("a", 10, "succeeded")])
    assert ids(reported) == ["a"]
    assert state.pending == {}
    assert state.floor == 20
    reported, state = step(state, [job("b", 20, "succeeded"), job("a", 10, "succeeded")])
    assert reported == []


def test_a_new_job_is_reported_whether_it_ended_already_or_later():
    _, state = step(None, [job("a", 10, "succeeded")])
    reported, state = step(state, [job("c", 30, "succeeded"), job("b", 20), job("a", 10, "succeeded")])
    assert ids(reported) == ["c"]
    assert state.pending == {"b": 20}
    reported, state = step(state, [job("c", 30, "succeeded"), job("b", 20, "succeeded")])
    assert ids(reported) == ["b"]


def test_only_the_chosen_end_states_are_reported_but_every_end_stops_the_watch():
    _, state = step(None, [job("b", 20), job("a", 10)])
    reported, state = step(state, [job("b", 20, "failed"), job("a", 10, "cancelled")], statuses=("failed",))
    assert ids(reported) == ["b"]
    assert state.pending == {}


def test_the_metadata_filter_applies_even_when_the_gateway_ignored_it():
    _, state = step(None, [], job_metadata={"team": "a"})
    pages = [job("b", 20, "succeeded", team="b"), job("a", 10, "succeeded", team="a")]
    reported, state = step(state, pages, job_metadata={"team": "a"})
    assert ids(reported) == ["a"]
    assert state.newest == 20  # other teams' jobs still move the watermark


def test_a_same_second_newcomer_is_new_but_a_seen_one_is_not():
    _, state = step(None, [job("a", 10, "succeeded")])
    reported, state = step(state, [job("b", 10, "succeeded"), job("a", 10, "succeeded")])
    assert ids(reported) == ["b"]
    assert state.edge == {"a", "b"}


def test_a_watched_job_the_gateway_no_longer_lists_is_dropped():
    _, state = step(None, [job("b", 20), job("a", 10)])
    _, state = step(state, [job("b", 20)])
    assert state.pending == {"b": 20}


def test_reading_stops_below_the_floor_and_covers_says_when_pages_suffice():
    assert read_enough(15, [job("b", 20), job("a", 10)])
    assert not read_enough(10, [job("b", 20), job("a", 10)])
    assert not read_enough(None, [job("a", 10)])
    assert covers(None, None)
    assert covers(9, 10)
    assert not covers(10, 10)
    assert not covers(5, None)


def test_the_state_is_json_and_round_trips():
    _, state = step(None, [job("b", 20), job("a", 20, "succeeded")])
    data = json.loads(json.dumps(state.to_json()))
    assert WatchState.from_json(data) == state
    assert WatchState.from_json(None) is None
    assert WatchState.from_json({"v": 99}) is None
