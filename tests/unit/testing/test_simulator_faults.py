"""Each Fault kind, fault queues, and global outages."""

from __future__ import annotations

import http.client
import threading
import time

import pytest
import requests
from simulator_support import AUTH, FakeClock, JobUrl, job_path

from airflow_provider_tfy.testing import Fault, GatewaySimulator


def test_rate_limit_without_retry_after(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    job = sim.add_job(faults=[Fault.rate_limit()])
    response = session.get(job_url(sim, job.id))
    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert response.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(2, "2"), (0.5, "0.5"), (3.0, "3"), ("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT")],
)
def test_rate_limit_retry_after(
    sim: GatewaySimulator,
    session: requests.Session,
    job_url: JobUrl,
    retry_after: int | float | str,
    header: str,
) -> None:
    job = sim.add_job(faults=[Fault.rate_limit(retry_after)])
    response = session.get(job_url(sim, job.id))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == header


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_error(sim: GatewaySimulator, session: requests.Session, job_url: JobUrl, status: int) -> None:
    job = sim.add_job(faults=[Fault.server_error(status)])
    response = session.get(job_url(sim, job.id))
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["type"] == "server_error"


def test_html_error(sim: GatewaySimulator, session: requests.Session, job_url: JobUrl) -> None:
    job = sim.add_job(faults=[Fault.html_error(502)])
    response = session.get(job_url(sim, job.id))
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html>" in response.text
    assert "502 Bad Gateway" in response.text


def test_reset_is_a_connection_error(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    job = sim.add_job(faults=[Fault.reset()])
    with pytest.raises(requests.ConnectionError):
        session.get(job_url(sim, job.id))
    assert sim.requests[-1].status is None
    assert session.get(job_url(sim, job.id)).status_code == 200  # a fresh connection works


def test_reset_seen_by_http_client(sim: GatewaySimulator, job_url: JobUrl) -> None:
    job = sim.add_job(faults=[Fault.reset()])
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    conn.request("GET", job_path(sim, job.id), headers=AUTH)
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        conn.getresponse()
    conn.close()


def test_delay_is_measurable_then_answers_normally(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    job = sim.add_job(faults=[Fault.delay(0.3)])
    started = time.monotonic()
    response = session.get(job_url(sim, job.id))
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert job.polls == 1  # a delayed normal answer is a real poll


def test_delay_then_fault(sim: GatewaySimulator, session: requests.Session, job_url: JobUrl) -> None:
    job = sim.add_job(faults=[Fault.delay(0.2, then=Fault.server_error(503))])
    started = time.monotonic()
    assert session.get(job_url(sim, job.id)).status_code == 503
    assert time.monotonic() - started >= 0.2


def test_delay_exceeding_client_timeout(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    job = sim.add_job(faults=[Fault.delay(1.0)])
    with pytest.raises(requests.ReadTimeout):
        session.get(job_url(sim, job.id), timeout=0.2)


def test_malformed_body_is_sent_verbatim(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    job = sim.add_job(
        faults=[Fault.malformed(), Fault.malformed(b"<oops>", status=200, content_type="text/plain")]
    )
    first = session.get(job_url(sim, job.id))
    assert first.status_code == 200
    assert first.content == b'{"id": "x", '
    assert first.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        first.json()
    second = session.get(job_url(sim, job.id))
    assert second.content == b"<oops>"
    assert second.headers["Content-Type"] == "text/plain"


def test_truncated_body(sim: GatewaySimulator, job_url: JobUrl) -> None:
    job = sim.add_job(faults=[Fault.truncated()])
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    conn.request("GET", job_path(sim, job.id), headers=AUTH)
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    conn.close()
    assert job.polls == 0


def test_truncated_body_with_requests(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    job = sim.add_job(faults=[Fault.truncated()])
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        session.get(job_url(sim, job.id))


def test_arbitrary_status(sim: GatewaySimulator, session: requests.Session, job_url: JobUrl) -> None:
    job = sim.add_job(
        faults=[
            Fault.status(400),
            Fault.status(403, body={"error": {"message": "forbidden"}}),
            Fault.status(301, headers={"Location": "https://elsewhere.example/x"}),
            Fault.status(404, body="gone", headers={"Content-Type": "text/x-custom"}),
        ]
    )
    url = job_url(sim, job.id)
    assert session.get(url).status_code == 400
    forbidden = session.get(url)
    assert forbidden.status_code == 403
    assert forbidden.json() == {"error": {"message": "forbidden"}}
    moved = session.get(url, allow_redirects=False)
    assert moved.status_code == 301
    assert moved.headers["Location"] == "https://elsewhere.example/x"
    gone = session.get(url)
    assert gone.status_code == 404
    assert gone.text == "gone"
    assert gone.headers["Content-Type"] == "text/x-custom"
    assert session.get(url).status_code == 200


def test_faults_apply_in_order_then_normal_answers_resume(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    job = sim.add_job(
        statuses=("queued", "succeeded"),
        faults=[Fault.rate_limit(1), Fault.server_error(502), Fault.reset()],
    )
    url = job_url(sim, job.id)
    assert session.get(url).status_code == 429
    assert session.get(url).status_code == 502
    with pytest.raises(requests.ConnectionError):
        session.get(url)
    # Faulted requests count as requests but do not advance the script.
    assert [session.get(url).json()["status"] for _ in range(3)] == ["queued", "succeeded", "succeeded"]
    assert sim.request_count(job.id) == 6
    assert [r.status for r in sim.requests] == [429, 502, None, 200, 200, 200]


def test_add_fault_queues_for_known_and_unknown_jobs(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    job = sim.add_job()
    sim.add_fault(job.id, Fault.server_error())
    sim.add_fault("ftjob-not-yet", Fault.rate_limit())
    assert session.get(job_url(sim, job.id)).status_code == 500
    assert session.get(job_url(sim, job.id)).status_code == 200
    assert session.get(job_url(sim, "ftjob-not-yet")).status_code == 429
    assert session.get(job_url(sim, "ftjob-not-yet")).status_code == 404


def test_unauthorised_requests_do_not_consume_faults(
    sim: GatewaySimulator, job_url: JobUrl, session: requests.Session
) -> None:
    job = sim.add_job(faults=[Fault.rate_limit()])
    assert requests.get(job_url(sim, job.id), timeout=10).status_code == 401
    assert session.get(job_url(sim, job.id)).status_code == 429


def test_outage_for_a_duration(
    clocked_sim: GatewaySimulator, clock: FakeClock, session: requests.Session, job_url: JobUrl
) -> None:
    sim = clocked_sim
    job = sim.add_job(faults=[Fault.rate_limit()])
    sim.outage(seconds=3)
    assert session.get(job_url(sim, job.id)).status_code == 503
    assert session.get(f"{sim.url}/fine_tuning/jobs").status_code == 503
    assert requests.get(job_url(sim, job.id), timeout=10).status_code == 503  # even without auth
    clock.advance(3)
    assert session.get(job_url(sim, job.id)).status_code == 429  # per-job faults were kept
    assert session.get(job_url(sim, job.id)).status_code == 200
    assert sim.request_count(job.id) == 4
    assert job.polls == 1


def test_outage_with_reset_fault(sim: GatewaySimulator, session: requests.Session, job_url: JobUrl) -> None:
    job = sim.add_job()
    sim.outage(fault=Fault.reset(), seconds=60)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            session.get(job_url(sim, job.id))
    sim.end_outage()
    assert session.get(job_url(sim, job.id)).status_code == 200


def test_outage_until_callable(sim: GatewaySimulator, session: requests.Session, job_url: JobUrl) -> None:
    job = sim.add_job()
    recovered = threading.Event()
    sim.outage(until=recovered.is_set, fault=Fault.html_error(502))
    assert session.get(job_url(sim, job.id)).status_code == 502
    recovered.set()
    assert session.get(job_url(sim, job.id)).status_code == 200


def test_admin_is_not_affected_by_outages(sim: GatewaySimulator, session: requests.Session) -> None:
    sim.outage()
    response = session.get(f"{sim.url}/__simulator__/requests")
    assert response.status_code == 200


# -- Fault construction -------------------------------------------------------------------


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault.server_error(404)
    with pytest.raises(ValueError):
        Fault.html_error(200)
    with pytest.raises(ValueError):
        Fault.status(99)
    with pytest.raises(ValueError):
        Fault.delay(-1)
    with pytest.raises(TypeError):
        Fault.rate_limit(True)
    with pytest.raises(ValueError):
        Fault(kind="explode")


def test_fault_from_dict() -> None:
    assert Fault.from_dict({"kind": "rate_limit", "retry_after": 1}) == Fault.rate_limit(1)
    assert Fault.from_dict({"kind": "reset"}) == Fault.reset()
    assert Fault.from_dict(
        {"kind": "delay", "seconds": 0.1, "then": {"kind": "server_error", "status": 503}}
    ) == (Fault.delay(0.1, then=Fault.server_error(503)))
    assert Fault.from_dict({"kind": "malformed", "body": "{"}).body == b"{"
    with pytest.raises(ValueError):
        Fault.from_dict({"kind": "nope"})
    with pytest.raises(ValueError):
        Fault.from_dict({"kind": "reset", "bogus": 1})


def test_add_job_rejects_non_faults(sim: GatewaySimulator) -> None:
    with pytest.raises(TypeError):
        sim.add_job(faults=["rate_limit"])  # type: ignore[list-item]


def test_outage_until_may_call_back_into_the_simulator(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    job = sim.add_job()
    sim.outage(until=lambda: sim.request_count(job.id) >= 3)
    assert [session.get(job_url(sim, job.id)).status_code for _ in range(4)] == [503, 503, 200, 200]


def test_applied_fault_construction() -> None:
    fault = Fault.applied(then=Fault.server_error(500))
    assert (fault.kind, fault.then) == ("applied", Fault.server_error(500))
    with pytest.raises(TypeError):
        Fault.applied(then="reset")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Fault.applied(then=fault)
    assert Fault.from_dict({"kind": "applied", "then": {"kind": "reset"}}) == Fault.applied(
        then=Fault.reset()
    )
    assert Fault.from_dict(
        {"kind": "applied", "then": {"kind": "server_error", "status": 502}}
    ) == Fault.applied(then=Fault.server_error(502))
    with pytest.raises(ValueError):
        Fault.from_dict({"kind": "applied"})
    # The JSON form may name the status by the dataclass field, as TEAM's interface writes it.
    assert Fault.from_dict({"kind": "server_error", "http_status": 504}) == Fault.server_error(504)
    assert Fault.from_dict({"kind": "status", "http_status": 418}) == Fault.status(418)


def test_applied_on_retrieve_counts_the_poll_then_serves_the_fault(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    job = sim.add_job(faults=[Fault.applied(then=Fault.server_error(503))])
    assert session.get(job_url(sim, job.id)).status_code == 503
    assert job.polls == 1
    assert session.get(job_url(sim, job.id)).json()["status"] == "running"
