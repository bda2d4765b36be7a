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
    seen = session.get(f"{sim.url}/__simulator__/requests", params={"job_id": "ftjob-remote"}).json()
    assert seen["count"] == 5
    assert [r["status"] for r in seen["records"]] == [429, 502, 200, 200, 200]
    assert {r["endpoint"] for r in seen["records"]} == {"retrieve"}
    assert {r["headers"]["authorization"] for r in seen["records"]} == {"<redacted>"}
    assert session.get(f"{sim.url}/__simulator__/requests").json()["count"] == 5  # admin calls not recorded


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


# -- create, list, cancel and upload, scripted from another process ---------------------------


def test_create_script_and_endpoint_faults_over_http(
    sim: GatewaySimulator, session: requests.Session
) -> None:
    admin = f"{sim.url}/__simulator__"
    script = {"statuses": ["queued", "failed"], "faults": [{"kind": "server_error", "status": 503}]}
    assert session.post(f"{admin}/create_script", json=script).status_code == 200
    fault = {
        "endpoint": "create",
        "fault": {"kind": "applied", "then": {"kind": "server_error", "http_status": 500}},
    }
    assert session.post(f"{admin}/endpoint_faults", json=fault).json() == {"queued": 1}
    body = {"model": "m", "training_file": "file-1", "metadata": {"k": "v"}}
    assert session.post(f"{sim.url}/fine_tuning/jobs", json=body).status_code == 500
    created = session.get(f"{admin}/created_jobs").json()["data"]
    assert len(created) == 1
    job = created[0]
    assert job["statuses"] == ["queued", "failed"]
    assert job["job"]["metadata"] == {"k": "v"}
    assert (job["polls"], job["cancelled"], job["cancel_requests"]) == (0, False, 0)
    job_url = f"{sim.url}/fine_tuning/jobs/{job['id']}"
    assert session.get(job_url).status_code == 503  # the script's per-job fault
    assert [session.get(job_url).json()["status"] for _ in range(2)] == ["queued", "failed"]
    records = session.get(f"{admin}/requests", params={"endpoint": "create"}).json()
    assert records["count"] == 1
    assert records["records"][0]["status"] == 500


def test_settings_over_http(sim: GatewaySimulator, session: requests.Session) -> None:
    admin = f"{sim.url}/__simulator__"
    answer = session.post(f"{admin}/settings", json={"ignore_list_filter": True, "can_cancel": False})
    assert answer.json() == {"ignore_list_filter": True, "can_cancel": False}
    assert (sim.ignore_list_filter, sim.can_cancel) == (True, False)
    assert session.post(f"{admin}/settings", json={"can_cancel": True}).json()["ignore_list_filter"] is True
    assert sim.can_cancel is True
    for bad in ({"can_cancel": "no"}, {"latency": 1}):
        assert session.post(f"{admin}/settings", json=bad).status_code == 400


def test_files_over_http(sim: GatewaySimulator, session: requests.Session) -> None:
    session.post(
        f"{sim.url}/files",
        files={"file": ("a.jsonl", b"{}\n")},
        data={"purpose": "fine-tune"},
        headers={"x-tfy-provider-name": "openai-main"},
    )
    (stored,) = session.get(f"{sim.url}/__simulator__/files").json()["data"]
    assert stored["filename"] == "a.jsonl"
    assert stored["bytes"] == 3
    assert stored["purpose"] == "fine-tune"
    assert stored["field_names"] == ["purpose", "file"]  # requests sends form fields first
    assert stored["headers"]["authorization"] == "<redacted>"


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("create_script", {"model": "x"}),
        ("create_script", {"statuses": []}),
        ("endpoint_faults", {"endpoint": "retrieve", "fault": {"kind": "reset"}}),
        ("endpoint_faults", {"endpoint": "create", "fault": {"kind": "applied"}}),
        ("endpoint_faults", {"endpoint": "create", "fault": {"kind": "applied", "then": {"kind": "nope"}}}),
        ("endpoint_faults", {"fault": {"kind": "reset"}}),
    ],
)
def test_bad_scripting_is_400(
    sim: GatewaySimulator, session: requests.Session, route: str, body: dict
) -> None:
    response = session.post(f"{sim.url}/__simulator__/{route}", json=body)
    assert response.status_code == 400
    assert "error" in response.json()
