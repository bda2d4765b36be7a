"""HTTP behaviour of the simulator: auth, routing, keep-alive, robustness, lifecycle."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simulator_support import AUTH, JobUrl, job_path

from airflow_provider_tfy.testing import Fault, GatewaySimulator

SECRET = "tfy-this-is-a-wrong-and-secret-key"


def _raw_exchange(sim: GatewaySimulator, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", sim.port), timeout=timeout) as conn:
        conn.sendall(payload)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# -- auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {SECRET}"},
        {"Authorization": "Basic dGZ5LXNpbS1rZXk6"},
        {"Authorization": "tfy-sim-key"},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "wrong-key", "basic", "no-scheme", "empty-bearer"],
)
def test_bad_credentials_get_401_without_echoing_the_token(
    sim: GatewaySimulator, job_url: JobUrl, headers: dict[str, str]
) -> None:
    job = sim.add_job()
    response = requests.get(job_url(sim, job.id), headers=headers, timeout=10)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    assert SECRET not in response.text
    assert SECRET not in str(response.headers)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert job.polls == 0


def test_bearer_scheme_is_case_insensitive(sim: GatewaySimulator, job_url: JobUrl) -> None:
    job = sim.add_job()
    response = requests.get(
        job_url(sim, job.id), headers={"Authorization": f"bearer {sim.api_key}"}, timeout=10
    )
    assert response.status_code == 200


def test_list_endpoint_requires_auth(sim: GatewaySimulator) -> None:
    assert requests.get(f"{sim.url}/fine_tuning/jobs", timeout=10).status_code == 401


def test_token_is_redacted_in_records_and_logs(
    sim: GatewaySimulator, job_url: JobUrl, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="airflow_provider_tfy.testing")
    job = sim.add_job()
    headers = {"Authorization": f"Bearer {SECRET}", "x-tfy-provider-name": "openai-main"}
    requests.get(job_url(sim, job.id), headers=headers, timeout=10)
    record = sim.requests[-1]
    assert record.headers["authorization"] == "<redacted>"
    assert record.headers["x-tfy-provider-name"] == "openai-main"
    assert record.has_valid_auth is False
    assert record.status == 401
    assert SECRET not in repr(sim.requests)
    messages = [r.getMessage() for r in caplog.records if r.name == "airflow_provider_tfy.testing"]
    assert f"GET /fine_tuning/jobs/{job.id} -> 401" in messages
    assert not any(SECRET in m for m in messages)


# -- routing ------------------------------------------------------------------------------


def test_unknown_job_is_404_json(sim: GatewaySimulator, session: requests.Session, job_url: JobUrl) -> None:
    response = session.get(job_url(sim, "ftjob-missing"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "fine_tuning_job_not_found"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/fine_tuning",
        "/fine_tuning/jobs/",
        "/fine_tuning/jobs/x/events",
        "/v1/fine_tuning/jobs/x",
        "//x",
    ],
)
def test_unknown_paths_are_404_json(sim: GatewaySimulator, session: requests.Session, path: str) -> None:
    sim.add_job("x")
    response = session.get(f"{sim.url}{path}")
    assert response.status_code == 404
    assert "error" in response.json()


def test_post_to_a_job_is_405(sim: GatewaySimulator, session: requests.Session, job_url: JobUrl) -> None:
    job = sim.add_job()
    response = session.post(job_url(sim, job.id), json={})
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert job.polls == 0


def test_head_sends_headers_only(sim: GatewaySimulator, job_url: JobUrl) -> None:
    job = sim.add_job(statuses=("succeeded",))
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    auth = {"Authorization": f"Bearer {sim.api_key}"}
    path = job_path(sim, job.id)
    conn.request("GET", path, headers=auth)
    get = conn.getresponse()
    get_body = get.read()
    conn.request("HEAD", path, headers=auth)
    head = conn.getresponse()
    assert head.status == 200
    assert head.read() == b""
    assert head.getheader("Content-Length") == str(len(get_body))
    conn.close()


def test_list_pagination(sim: GatewaySimulator, session: requests.Session) -> None:
    ids = [sim.add_job(f"ftjob-{i}").id for i in range(5)]
    newest_first = ids[::-1]
    page = session.get(f"{sim.url}/fine_tuning/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == newest_first[:2]
    assert page["has_more"] is True
    page = session.get(f"{sim.url}/fine_tuning/jobs", params={"limit": "2", "after": newest_first[1]}).json()
    assert [j["id"] for j in page["data"]] == newest_first[2:4]
    assert page["has_more"] is True
    page = session.get(f"{sim.url}/fine_tuning/jobs", params={"limit": "5", "after": newest_first[3]}).json()
    assert [j["id"] for j in page["data"]] == newest_first[4:]
    assert page["has_more"] is False
    assert session.get(f"{sim.url}/fine_tuning/jobs").json()["data"][0]["id"] == ids[-1]
    # Listing peeks: it neither advances a job nor counts as a poll of it.
    assert all(sim.get_job(i).polls == 0 for i in ids)


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1"])
def test_list_rejects_bad_limit(sim: GatewaySimulator, session: requests.Session, limit: str) -> None:
    assert session.get(f"{sim.url}/fine_tuning/jobs", params={"limit": limit}).status_code == 400


def test_path_prefix(session: requests.Session) -> None:
    with GatewaySimulator(path_prefix="/api/llm/") as sim:
        assert sim.url == f"http://127.0.0.1:{sim.port}/api/llm"
        job = sim.add_job()
        assert session.get(f"{sim.url}/fine_tuning/jobs/{job.id}").status_code == 200
        assert session.get(f"{sim.url}/fine_tuning/jobs?limit=1").status_code == 200
        bare = f"http://127.0.0.1:{sim.port}/fine_tuning/jobs/{job.id}"
        assert session.get(bare).status_code == 404
        assert session.get(f"http://127.0.0.1:{sim.port}/api/llmfine_tuning/jobs").status_code == 404


@pytest.mark.parametrize(
    "job_id", ["ftjob-abc123", "job with spaces", "a/b", "50%", "a+b", "q?x=1#frag", "ünïcødé-模型", "."]
)
def test_percent_encoded_ids_round_trip(sim: GatewaySimulator, job_id: str) -> None:
    sim.add_job(job_id)
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    conn.request("GET", f"/fine_tuning/jobs/{quote(job_id, safe='')}", headers=AUTH)
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["id"] == job_id
    assert sim.request_count(job_id) == 1
    conn.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job_id=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30))
def test_any_id_round_trips(truefoundry_gateway_session: GatewaySimulator, job_id: str) -> None:
    sim = truefoundry_gateway_session
    sim.set_job(job_id)
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        conn.request(
            "GET",
            f"/fine_tuning/jobs/{quote(job_id, safe='')}",
            headers=AUTH,
        )
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["id"] == job_id
    finally:
        conn.close()


# -- connections --------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    job = sim.add_job(polls_per_status=100)
    for _ in range(25):
        response = session.get(job_url(sim, job.id))
        assert response.status_code == 200
        assert response.headers.get("Connection", "keep-alive") == "keep-alive"
    assert sim.connections_opened == 1
    assert sim.request_count(job.id) == 25
    assert {r.connection_id for r in sim.requests} == {sim.requests[0].connection_id}


def test_connection_close_is_honoured(sim: GatewaySimulator) -> None:
    raw = _raw_exchange(
        sim,
        b"GET /fine_tuning/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tfy-sim-key\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in raw
    assert raw.count(b"HTTP/1.1 ") == 1  # the server hung up after one response


def test_http_1_0_closes_unless_keep_alive_requested(sim: GatewaySimulator) -> None:
    raw = _raw_exchange(sim, b"GET /fine_tuning/jobs HTTP/1.0\r\nAuthorization: Bearer tfy-sim-key\r\n\r\n")
    # _raw_exchange returning at all means the server hung up after this one answer.
    assert raw.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"keep-alive" not in raw.lower()
    assert raw.count(b" 200 OK") == 1


def test_pipelined_requests_are_answered_in_order(sim: GatewaySimulator) -> None:
    sim.add_job("p1", statuses=("queued",))
    sim.add_job("p2", statuses=("failed",))
    request = "GET /fine_tuning/jobs/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tfy-sim-key\r\n{}\r\n"
    raw = _raw_exchange(
        sim, (request.format("p1", "") + request.format("p2", "Connection: close\r\n")).encode()
    )
    assert raw.count(b"HTTP/1.1 200 OK") == 2
    assert raw.index(b'"id": "p1"') < raw.index(b'"id": "p2"')


def test_malformed_request_line_is_400(sim: GatewaySimulator) -> None:
    raw = _raw_exchange(sim, b"NONSENSE\r\n\r\n")
    assert raw.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")


def test_oversized_head_is_refused(sim: GatewaySimulator) -> None:
    # aiohttp answers 400 (not 431) for a header line over the simulator's 64 KiB limit.
    raw = _raw_exchange(sim, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert raw.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")


def test_large_metadata_header_is_accepted(sim: GatewaySimulator, session: requests.Session) -> None:
    # 16 pairs of long strings in x-tfy-metadata exceed aiohttp's default 8 KiB header limit.
    metadata = json.dumps({f"key-{i}": "v" * 500 for i in range(16)})
    response = session.get(f"{sim.url}/fine_tuning/jobs", headers={"x-tfy-metadata": metadata})
    assert response.status_code == 200
    assert sim.requests[-1].headers["x-tfy-metadata"] == metadata


def test_survives_clients_disconnecting_mid_request(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    job = sim.add_job(polls_per_status=100)
    partials = [
        b"GET /fine_tuning/jo",
        b"GET /fine_tuning/jobs HTTP/1.1\r\nHost: x\r\n",
        b'POST /__simulator__/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"job',
        b"POST /__simulator__/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
    ]
    for payload in partials:
        with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as conn:
            conn.sendall(payload)
    # A client that sends a request and vanishes before reading the answer.
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as conn:
        conn.sendall(
            f"GET /fine_tuning/jobs/{job.id} HTTP/1.1\r\nHost: x\r\n"
            "Authorization: Bearer tfy-sim-key\r\n\r\n".encode()
        )
    assert session.get(job_url(sim, job.id)).status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_chunked_request_bodies_are_read(sim: GatewaySimulator) -> None:
    body = json.dumps({"job_id": "chunky", "statuses": ["succeeded"]}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    raw = _raw_exchange(
        sim,
        b"POST /__simulator__/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tfy-sim-key\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked,
    )
    assert raw.startswith(b"HTTP/1.1 201 ")
    assert sim.get_job("chunky").statuses == ("succeeded",)


def test_delayed_request_does_not_block_other_connections(sim: GatewaySimulator, job_url: JobUrl) -> None:
    slow = sim.add_job(faults=[Fault.delay(30)])
    fast = sim.add_job()
    auth = {"Authorization": f"Bearer {sim.api_key}"}

    def slow_request() -> None:
        with contextlib.suppress(requests.ConnectionError):
            requests.get(job_url(sim, slow.id), headers=auth, timeout=60)

    thread = threading.Thread(target=slow_request)
    thread.start()
    while sim.request_count(slow.id) == 0:
        time.sleep(0.005)
    started = time.monotonic()
    assert requests.get(job_url(sim, fast.id), headers=auth, timeout=10).status_code == 200
    assert time.monotonic() - started < 5
    sim.stop()  # cuts the slow request off instead of waiting 30 s
    thread.join(10)
    assert not thread.is_alive()


# -- lifecycle ----------------------------------------------------------------------------


def test_starts_fast_and_stops_cleanly() -> None:
    durations = []
    for _ in range(3):
        sim = GatewaySimulator()
        started = time.perf_counter()
        sim.start()
        durations.append(time.perf_counter() - started)
        sim.stop()
        sim.stop()  # idempotent
    assert min(durations) < 0.1


def test_stop_closes_open_connections_and_pending_requests(job_url: JobUrl) -> None:
    sim = GatewaySimulator().start()
    job = sim.add_job(faults=[Fault.delay(30)])
    idle = socket.create_connection(("127.0.0.1", sim.port), timeout=5)
    errors = []

    def slow_request() -> None:
        try:
            requests.get(job_url(sim, job.id), headers=AUTH, timeout=20)
        except requests.ConnectionError as exc:
            errors.append(exc)

    thread = threading.Thread(target=slow_request)
    thread.start()
    while sim.request_count(job.id) == 0:
        time.sleep(0.005)
    started = time.perf_counter()
    sim.stop()
    assert time.perf_counter() - started < 2
    thread.join(5)
    assert errors, "the pending request should have been cut off"
    assert idle.recv(1) == b""  # the idle keep-alive connection was closed too
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sim.port), timeout=1).close()


def test_port_in_use_raises() -> None:
    with GatewaySimulator() as first, pytest.raises(OSError):
        GatewaySimulator(port=first.port).start()


def test_url_before_start_raises() -> None:
    with pytest.raises(RuntimeError):
        _ = GatewaySimulator().url


def test_request_records_and_reset_counters(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    job = sim.add_job()
    session.get(job_url(sim, job.id), headers={"x-tfy-metadata": '{"a": "b"}'})
    session.get(f"{sim.url}/fine_tuning/jobs", params={"limit": 3})
    first, second = sim.requests
    assert (first.method, first.job_id, first.status, first.has_valid_auth) == ("GET", job.id, 200, True)
    assert first.headers["x-tfy-metadata"] == '{"a": "b"}'
    assert second.path == "/fine_tuning/jobs"
    assert second.query == {"limit": "3"}
    assert second.job_id is None
    assert sim.request_count(job.id) == 1
    assert sim.request_count("other") == 0
    sim.reset_counters()
    assert sim.requests == []
    assert sim.request_count(job.id) == 0
    assert sim.connections_opened == 0
    assert session.get(job_url(sim, job.id)).json()["status"] == "running"  # progression is kept


def test_expect_100_continue_is_answered_before_the_body(sim: GatewaySimulator) -> None:
    # curl sends this before large uploads and waits for the interim answer.
    body = json.dumps({"model": "m", "training_file": "file-1"}).encode()
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as conn:
        conn.sendall(
            b"POST /fine_tuning/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tfy-sim-key\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert conn.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sendall(body)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    assert b"".join(chunks).startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(sim.created_jobs) == 1
