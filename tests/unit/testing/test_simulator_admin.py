"""The admin surface that lets another process script a running simulator."""

from __future__ import annotations

import pytest
import requests
from simulator_support import JobUrl

from airflow_provider_tfy.testing import GatewaySimulator


def test_script_a_job_with_faults_over_http(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    spec = {
        "job_id": "ftjob-remote",
        "statuses": ["queued", "failed"],
        "polls_per_status": 2,
        "faults": [{"kind": "rate_limit", "retry_after": 1}, {"kind": "server_error", "status": 502}],
    }
    created = session.post(f"{sim.url}/__simulator__/jobs", json=spec)
    assert created.status_code == 201
    assert created.json()["id"] == "ftjob-remote"
    url = job_url(sim, "ftjob-remote")
    first = session.get(url)
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "1"
    assert session.get(url).status_code == 502
    assert [session.get(url).json()["status"] for _ in range(3)] == ["queued", "queued", "failed"]
    count = session.get(f"{sim.url}/__simulator__/requests", params={"job_id": "ftjob-remote"}).json()
    assert count == {"count": 5}
    assert session.get(f"{sim.url}/__simulator__/requests").json() == {"count": 5}  # admin calls not recorded


def test_posting_a_job_again_replaces_it(sim: GatewaySimulator, session: requests.Session) -> None:
    for statuses in (["queued"], ["succeeded"]):
        session.post(f"{sim.url}/__simulator__/jobs", json={"job_id": "j", "statuses": statuses})
    assert sim.get_job("j").statuses == ("succeeded",)


def test_generated_job_id(sim: GatewaySimulator, session: requests.Session) -> None:
    created = session.post(f"{sim.url}/__simulator__/jobs", json={"seconds_per_status": 5})
    assert created.status_code == 201
    assert created.json()["id"].startswith("ftjob-")


def test_faults_outage_and_reset_endpoints(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    job = sim.add_job()
    url = job_url(sim, job.id)
    session.post(
        f"{sim.url}/__simulator__/faults",
        json={"job_id": job.id, "faults": [{"kind": "status", "code": 418}]},
    )
    assert session.get(url).status_code == 418
    session.post(
        f"{sim.url}/__simulator__/outage",
        json={"seconds": 60, "fault": {"kind": "server_error", "status": 504}},
    )
    assert session.get(url).status_code == 504
    session.post(f"{sim.url}/__simulator__/outage", json={"end": True})
    assert session.get(url).status_code == 200
    assert session.post(f"{sim.url}/__simulator__/reset").status_code == 200
    assert sim.request_count(job.id) == 0


def test_admin_requires_the_key(sim: GatewaySimulator) -> None:
    response = requests.post(f"{sim.url}/__simulator__/jobs", json={"job_id": "x"}, timeout=10)
    assert response.status_code == 401
    with pytest.raises(KeyError):
        sim.get_job("x")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"statuses": []}',
        b'{"unknown_field": 1}',
        b'{"faults": [{"kind": "explode"}]}',
        b'{"polls_per_status": 0}',
    ],
)
def test_bad_admin_requests_are_400(sim: GatewaySimulator, session: requests.Session, body: bytes) -> None:
    response = session.post(
        f"{sim.url}/__simulator__/jobs", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "error" in response.json()


def test_unknown_admin_route_is_404(sim: GatewaySimulator, session: requests.Session) -> None:
    assert session.get(f"{sim.url}/__simulator__/nope").status_code == 404
    assert session.get(f"{sim.url}/__simulator__/jobs").status_code == 404
