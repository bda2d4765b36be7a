"""``GET /fine_tuning/jobs`` filters and pages; ``POST /fine_tuning/jobs/{id}/cancel``."""

from __future__ import annotations

import pytest
import requests
from simulator_support import FakeClock, JobUrl

from airflow_provider_tfy.testing import Fault, GatewaySimulator


def _list(session: requests.Session, sim: GatewaySimulator, **params: str | int) -> requests.Response:
    return session.get(f"{sim.url}/fine_tuning/jobs", params=params)


def _ids(response: requests.Response) -> list[str]:
    assert response.status_code == 200
    return [job["id"] for job in response.json()["data"]]


# -- list ---------------------------------------------------------------------------------


def test_metadata_filters_are_anded(sim: GatewaySimulator, session: requests.Session) -> None:
    sim.add_job("a", metadata={"team": "ml", "key": "k1"})
    sim.add_job("b", metadata={"team": "ml", "key": "k2"})
    sim.add_job("c", metadata={"team": "data", "key": "k1"})
    sim.add_job("d")
    assert _ids(_list(session, sim, **{"metadata[team]": "ml"})) == ["b", "a"]
    assert _ids(_list(session, sim, **{"metadata[team]": "ml", "metadata[key]": "k1"})) == ["a"]
    assert _ids(_list(session, sim, **{"metadata[team]": "nobody"})) == []
    assert sim.requests[-1].query == {"metadata[team]": "nobody"}


def test_a_gateway_that_ignores_the_filter(sim: GatewaySimulator, session: requests.Session) -> None:
    sim.add_job("a", metadata={"key": "k1"})
    sim.add_job("b")
    sim.ignore_list_filter = True
    assert _ids(_list(session, sim, **{"metadata[key]": "k1"})) == ["b", "a"]
    sim.ignore_list_filter = False
    assert _ids(_list(session, sim, **{"metadata[key]": "k1"})) == ["a"]


def test_filtered_pages_follow_the_cursor(sim: GatewaySimulator, session: requests.Session) -> None:
    for i in range(7):
        sim.add_job(f"j{i}", metadata={"key": "even" if i % 2 == 0 else "odd"})
    first = _list(session, sim, limit=2, **{"metadata[key]": "even"}).json()
    assert [j["id"] for j in first["data"]] == ["j6", "j4"]
    assert first["has_more"] is True
    second = _list(session, sim, limit=2, after="j4", **{"metadata[key]": "even"}).json()
    assert [j["id"] for j in second["data"]] == ["j2", "j0"]
    assert second["has_more"] is False


def test_limit_defaults_to_20(sim: GatewaySimulator, session: requests.Session) -> None:
    for i in range(21):
        sim.add_job(f"j{i}")
    page = _list(session, sim).json()
    assert len(page["data"]) == 20
    assert page["has_more"] is True
    assert _ids(_list(session, sim, limit=100)) == [f"j{i}" for i in range(20, -1, -1)]


def test_list_faults_are_consumed_in_order(sim: GatewaySimulator, session: requests.Session) -> None:
    sim.add_job("a")
    sim.add_endpoint_fault("list", Fault.rate_limit(1))
    sim.add_endpoint_fault("list", Fault.malformed(b"[oops"))
    assert _list(session, sim).status_code == 429
    assert _list(session, sim).content == b"[oops"
    assert _ids(_list(session, sim)) == ["a"]
    assert [r.endpoint for r in sim.requests] == ["list"] * 3


# -- cancel -------------------------------------------------------------------------------


def _cancel(session: requests.Session, sim: GatewaySimulator, job_id: str) -> requests.Response:
    return session.post(f"{sim.url}/fine_tuning/jobs/{job_id}/cancel")


def test_cancel_a_running_job_is_sticky(
    clocked_sim: GatewaySimulator, clock: FakeClock, session: requests.Session, job_url: JobUrl
) -> None:
    sim = clocked_sim
    job = sim.add_job("ftjob-1", statuses=("queued", "running", "succeeded"))
    assert [session.get(job_url(sim, job.id)).json()["status"] for _ in range(2)] == ["queued", "running"]
    clock.advance(30)
    response = _cancel(session, sim, job.id)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled"
    assert body["finished_at"] == int(clock.now)
    assert body["fine_tuned_model"] is None
    clock.advance(30)
    # The script would now say succeeded; the cancel wins for good.
    later = [session.get(job_url(sim, job.id)).json() for _ in range(3)]
    assert {b["status"] for b in later} == {"cancelled"}
    assert {b["finished_at"] for b in later} == {body["finished_at"]}
    assert sim.cancel_requests(job.id) == 1
    assert sim.request_count(job.id) == 5  # GETs only
    assert sim.requests[2].endpoint == "cancel"
    assert sim.requests[2].job_id == job.id


def test_cancel_a_queued_job_before_any_poll(sim: GatewaySimulator, session: requests.Session) -> None:
    job = sim.add_job(seconds_per_status=3600)
    assert _cancel(session, sim, job.id).json()["status"] == "cancelled"
    assert job.status == "cancelled"


def test_cancelling_twice_answers_the_cancelled_job(sim: GatewaySimulator, session: requests.Session) -> None:
    job = sim.add_job()
    first = _cancel(session, sim, job.id).json()
    second = _cancel(session, sim, job.id)
    assert second.status_code == 200
    assert second.json() == first
    scripted = sim.add_job(statuses=("cancelled",))
    assert _cancel(session, sim, scripted.id).status_code == 200
    assert sim.cancel_requests(job.id) == 2


@pytest.mark.parametrize("final", ["succeeded", "failed"])
def test_a_finished_job_cannot_be_cancelled(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl, final: str
) -> None:
    job = sim.add_job(statuses=(final,))
    response = _cancel(session, sim, job.id)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert final in error["message"]
    assert job.id in error["message"]
    assert session.get(job_url(sim, job.id)).json()["status"] == final


def test_cancel_an_unknown_job_is_404(sim: GatewaySimulator, session: requests.Session) -> None:
    response = _cancel(session, sim, "ftjob-missing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "fine_tuning_job_not_found"
    assert sim.cancel_requests("ftjob-missing") == 1


def test_a_gateway_without_cancel_answers_405(sim: GatewaySimulator, session: requests.Session) -> None:
    job = sim.add_job()
    sim.can_cancel = False
    response = _cancel(session, sim, job.id)
    assert response.status_code == 405
    assert "error" in response.json()
    assert job.cancelled_at is None


def test_cancel_faults_cancel_only_when_applied(sim: GatewaySimulator, session: requests.Session) -> None:
    job = sim.add_job()
    sim.add_endpoint_fault("cancel", Fault.server_error(502))
    assert _cancel(session, sim, job.id).status_code == 502
    assert job.cancelled_at is None
    sim.add_endpoint_fault("cancel", Fault.applied(then=Fault.reset()))
    with pytest.raises(requests.ConnectionError):
        _cancel(session, sim, job.id)
    assert job.status == "cancelled"


def test_cancel_route_takes_post_only_and_the_key(sim: GatewaySimulator, session: requests.Session) -> None:
    job = sim.add_job()
    response = session.get(f"{sim.url}/fine_tuning/jobs/{job.id}/cancel")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert requests.post(f"{sim.url}/fine_tuning/jobs/{job.id}/cancel", timeout=10).status_code == 401
    assert job.cancelled_at is None
    assert session.post(f"{sim.url}/fine_tuning/jobs/{job.id}/pause").status_code == 404


def test_a_created_job_can_be_cancelled(sim: GatewaySimulator, session: requests.Session) -> None:
    created = session.post(
        f"{sim.url}/fine_tuning/jobs", json={"model": "m", "training_file": "file-1"}
    ).json()
    assert _cancel(session, sim, created["id"]).json()["status"] == "cancelled"
    assert sim.created_jobs[0].cancelled_at is not None
