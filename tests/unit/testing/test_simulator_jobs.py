"""ScriptedJob progression rules and add_job/set_job bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from simulator_support import JobUrl

from airflow_provider_tfy.testing import GatewaySimulator, ScriptedJob


@pytest.mark.parametrize("polls_per_status", [1, 2, 3])
def test_poll_progression_formula(polls_per_status: int) -> None:
    statuses = ("queued", "running", "succeeded")
    job = ScriptedJob("ftjob-x", statuses, polls_per_status=polls_per_status)
    for k in range(1, 12):
        expected = statuses[min((k - 1) // polls_per_status, len(statuses) - 1)]
        assert job.poll()["status"] == expected
        assert job.last_status == expected
    assert job.polls == 11


def test_non_terminal_last_status_is_sticky() -> None:
    job = ScriptedJob("ftjob-x", ("queued", "running"))
    assert [job.poll()["status"] for _ in range(5)] == ["queued", "running", "running", "running", "running"]


def test_peek_does_not_advance() -> None:
    job = ScriptedJob("ftjob-x")
    assert job.peek()["status"] == "queued"
    assert job.polls == 0


def test_extra_fields_are_merged_last() -> None:
    job = ScriptedJob(
        "ftjob-x", extra_fields={"error": None, "user_provided_suffix": "abc", "status": "paused"}
    )
    body = job.poll()
    assert body["error"] is None
    assert body["user_provided_suffix"] == "abc"
    assert body["status"] == "paused"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"statuses": ()},
        {"statuses": ("queued", "")},
        {"polls_per_status": 0},
        {"seconds_per_status": 0},
        {"seconds_per_status": -1.0},
    ],
)
def test_invalid_scripts_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ScriptedJob("ftjob-x", **kwargs)


def test_statuses_must_not_be_a_bare_string() -> None:
    with pytest.raises(TypeError):
        ScriptedJob("ftjob-x", "succeeded")


def test_generated_ids_and_duplicates() -> None:
    sim = GatewaySimulator()  # scripting works before start()
    first, second = sim.add_job(), sim.add_job()
    assert first.id.startswith("ftjob-")
    assert first.id != second.id
    with pytest.raises(ValueError):
        sim.add_job(first.id)
    first.poll()
    replaced = sim.set_job(first.id, statuses=("failed",))
    assert replaced.polls == 0
    assert sim.get_job(first.id) is replaced
    sim.remove_job(first.id)
    with pytest.raises(KeyError):
        sim.get_job(first.id)


def test_removed_job_answers_404(sim: GatewaySimulator, session: requests.Session, job_url: JobUrl) -> None:
    job = sim.add_job()
    assert session.get(job_url(sim, job.id)).status_code == 200
    sim.remove_job(job.id)
    assert session.get(job_url(sim, job.id)).status_code == 404
