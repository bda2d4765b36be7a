"""Every body the simulator serves for a job conforms to the spec, at every stage of its life."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator
from openapi_schema_validator import OAS30Validator
from simulator_support import FakeClock, JobUrl
from spec_schema import (
    OPERATIONS,
    load_job_schema,
    load_spec,
    operation,
    raw_response_schema,
    response_schema,
)

from airflow_provider_tfy.testing import Fault, GatewaySimulator

GET = "/fine_tuning/jobs/{fine_tuning_job_id}"


def _poll_all(session: requests.Session, url: str, count: int) -> list[dict[str, Any]]:
    bodies = []
    for _ in range(count):
        response = session.get(url)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        bodies.append(response.json())
    return bodies


def _assert_valid(validator: Draft202012Validator, body: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(body), key=str)
    assert not errors, [e.message for e in errors]
    # Cross-check with an OpenAPI 3.0 validator that understands `nullable` natively, so a bug in
    # our conversion cannot hide a bad body.
    raw = load_spec()["paths"][GET]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    OAS30Validator(raw).validate(body)


def test_schema_conversion_turns_nullable_into_type_unions() -> None:
    schema = load_job_schema()
    props = schema["properties"]
    assert props["fine_tuned_model"]["type"] == ["string", "null"]
    assert props["finished_at"]["type"] == ["integer", "null"]
    assert props["status"]["type"] == "string"
    assert "nullable" not in str(schema)
    assert load_job_schema() is not load_job_schema()  # callers may mutate their copy


def test_validator_rejects_what_the_spec_forbids(job_validator: Draft202012Validator) -> None:
    bad = {"object": "fine_tuning.job", "id": "x", "status": "paused"}
    assert not job_validator.is_valid(bad)


def test_success_lifecycle_bodies_match_spec(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl, job_validator: Draft202012Validator
) -> None:
    job = sim.add_job("ftjob-life", polls_per_status=2, trained_tokens=4242, metadata={"team": "ml"})
    bodies = _poll_all(session, job_url(sim, job.id), 7)
    for body in bodies:
        _assert_valid(job_validator, body)
    assert [b["status"] for b in bodies] == ["queued"] * 2 + ["running"] * 2 + ["succeeded"] * 3

    queued, running, done = bodies[0], bodies[2], bodies[4]
    assert queued["fine_tuned_model"] is None
    assert queued["finished_at"] is None
    assert queued["trained_tokens"] is None
    assert queued["estimated_finish"] is None
    assert queued["result_files"] == []
    assert running["trained_tokens"] is not None
    assert running["estimated_finish"] >= running["created_at"]
    assert running["fine_tuned_model"] is None
    assert running["finished_at"] is None
    assert done["fine_tuned_model"] == f"ft:gpt-4o-mini-2024-07-18:tfy::{job.id}"
    assert done["trained_tokens"] == 4242
    assert done["finished_at"] >= done["created_at"]
    assert len(done["result_files"]) == 1
    assert done["result_files"][0].startswith("file-result-")
    assert "error" not in done
    assert done["metadata"] == {"team": "ml"}
    # Identity fields stay put while the job moves on.
    assert {b["created_at"] for b in bodies} == {queued["created_at"]}
    assert {b["training_file"] for b in bodies} == {queued["training_file"]}
    assert bodies[-1] == bodies[-2] == done  # the final status is sticky and stable


def test_failed_job_carries_openai_style_error(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl, job_validator: Draft202012Validator
) -> None:
    job = sim.add_job(statuses=("queued", "running", "failed"))
    bodies = _poll_all(session, job_url(sim, job.id), 3)
    for body in bodies:
        _assert_valid(job_validator, body)
    failed = bodies[-1]
    assert failed["status"] == "failed"
    assert set(failed["error"]) == {"code", "message", "param"}
    assert failed["error"]["message"]
    assert failed["fine_tuned_model"] is None
    assert failed["finished_at"] >= failed["created_at"]
    assert "error" not in bodies[0]


def test_custom_error_and_fine_tuned_model(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    error = {"code": "quota_exceeded", "message": "Out of credits", "param": None}
    failed = sim.add_job(statuses=("failed",), error=error)
    ok = sim.add_job(statuses=("succeeded",), fine_tuned_model="ft:custom")
    assert session.get(job_url(sim, failed.id)).json()["error"] == error
    assert session.get(job_url(sim, ok.id)).json()["fine_tuned_model"] == "ft:custom"


def test_cancelled_job(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl, job_validator: Draft202012Validator
) -> None:
    job = sim.add_job(statuses=("queued", "running", "cancelled"))
    bodies = _poll_all(session, job_url(sim, job.id), 3)
    for body in bodies:
        _assert_valid(job_validator, body)
    cancelled = bodies[-1]
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    assert cancelled["fine_tuned_model"] is None
    assert cancelled["result_files"] == []


def test_time_based_progression_with_fake_clock(
    clocked_sim: GatewaySimulator,
    clock: FakeClock,
    session: requests.Session,
    job_url: JobUrl,
    job_validator: Draft202012Validator,
) -> None:
    job = clocked_sim.add_job(seconds_per_status=10.0, polls_per_status=1000)
    url = job_url(clocked_sim, job.id)
    seen: list[str] = []
    for step in (0, 9.9, 0.1, 5, 5, 100):  # elapsed since add_job: 0, 9.9, 10, 15, 20, 120
        clock.advance(step)
        body = session.get(url).json()
        _assert_valid(job_validator, body)
        seen.append(body["status"])
    assert seen == ["queued", "queued", "running", "running", "succeeded", "succeeded"]
    done = session.get(url).json()
    # Scheduled times come from the script, not from when someone happened to poll.
    assert done["created_at"] == int(clock.now - 120)
    assert done["finished_at"] == done["created_at"] + 20


def test_time_based_progression_counts_from_add_job_not_first_poll(
    clocked_sim: GatewaySimulator, clock: FakeClock, session: requests.Session, job_url: JobUrl
) -> None:
    job = clocked_sim.add_job(seconds_per_status=1.0)
    clock.advance(5)
    assert session.get(job_url(clocked_sim, job.id)).json()["status"] == "succeeded"


def test_time_based_progression_in_real_time(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl, job_validator: Draft202012Validator
) -> None:
    job = sim.add_job(seconds_per_status=0.15)
    url = job_url(sim, job.id)
    order = {"queued": 0, "running": 1, "succeeded": 2}
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while not seen or seen[-1] != "succeeded":
        assert time.monotonic() < deadline
        body = session.get(url).json()
        _assert_valid(job_validator, body)
        seen.append(body["status"])
        time.sleep(0.02)
    ranks = [order[s] for s in seen]
    assert ranks == sorted(ranks)
    assert seen[0] == "queued"


def test_list_endpoint_items_match_spec(
    sim: GatewaySimulator, session: requests.Session, job_validator: Draft202012Validator
) -> None:
    for statuses in (("queued",), ("running",), ("succeeded",), ("failed",), ("cancelled",)):
        sim.add_job(statuses=statuses)
    page = session.get(f"{sim.url}/fine_tuning/jobs", params={"limit": 10}).json()
    assert page["object"] == "list"
    assert page["has_more"] is False
    assert [job["status"] for job in page["data"]] == [
        "cancelled",
        "failed",
        "succeeded",
        "running",
        "queued",
    ]
    for body in page["data"]:
        _assert_valid(job_validator, body)


@pytest.mark.parametrize("status", ["queued", "running", "succeeded", "failed", "cancelled"])
def test_single_status_jobs_match_spec(
    sim: GatewaySimulator,
    session: requests.Session,
    job_url: JobUrl,
    job_validator: Draft202012Validator,
    status: str,
) -> None:
    job = sim.add_job(statuses=(status,))
    body = session.get(job_url(sim, job.id)).json()
    _assert_valid(job_validator, body)
    assert body["status"] == status


# -- every endpoint: each answer the simulator gives on its own validates against tests/spec/ --


def _assert_answer_matches_spec(endpoint: str, status: int, body: Any) -> None:
    """The status is declared for the endpoint, and the body fits its schema (if it has one)."""
    assert str(status) in operation(endpoint)["responses"], (
        f"{endpoint} answered {status}, which its spec does not declare"
    )
    schema = response_schema(endpoint, status)
    if schema is None:
        return
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=str)
    assert not errors, (endpoint, status, [e.message for e in errors])
    raw = raw_response_schema(endpoint, status)
    assert raw is not None
    OAS30Validator(raw).validate(body)


def test_every_answer_of_every_endpoint_matches_the_spec(
    sim: GatewaySimulator, session: requests.Session
) -> None:
    provider = {"x-tfy-provider-name": "openai-main"}
    jsonl = b'{"messages": []}\n'
    sent: list[requests.Response] = []

    def call(method: str, path: str, **kwargs: Any) -> None:
        sent.append(session.request(method, f"{sim.url}{path}", **kwargs))

    def upload(**kwargs: Any) -> None:
        call("POST", "/files", files={"file": ("t.jsonl", jsonl)}, **kwargs)

    sim.max_upload_bytes = 100
    upload(data={"purpose": "fine-tune"}, headers=provider)  # 200
    upload(data={"purpose": "fine-tune"})  # 400: no provider name
    upload(data={"purpose": "nonsense"}, headers=provider)  # 400
    call(
        "POST",
        "/files",
        files={"file": ("t.jsonl", b"x" * 101)},
        data={"purpose": "fine-tune"},
        headers=provider,
    )
    sim.add_endpoint_fault("upload", Fault.rate_limit(1))
    upload(data={"purpose": "fine-tune"}, headers=provider)  # 429
    sim.add_endpoint_fault("upload", Fault.server_error(500))
    upload(data={"purpose": "fine-tune"}, headers=provider)  # 500

    body = {"model": "m", "training_file": "file-1", "metadata": {"k": "v"}, "suffix": "s", "seed": 1}
    call("POST", "/fine_tuning/jobs", json=body)  # 200
    call("POST", "/fine_tuning/jobs", json={"model": "m"})  # 400
    sim.add_endpoint_fault("create", Fault.applied(then=Fault.server_error(500)))
    call("POST", "/fine_tuning/jobs", json=body)  # 500, applied
    sim.add_endpoint_fault("create", Fault.rate_limit(2))
    call("POST", "/fine_tuning/jobs", json=body)  # 429

    for statuses in (("queued",), ("running",), ("succeeded",), ("failed",), ("cancelled",)):
        sim.add_job(statuses=statuses, metadata={"k": "v"})
    call("GET", "/fine_tuning/jobs")  # 200
    call("GET", "/fine_tuning/jobs", params={"limit": 2, "metadata[k]": "v"})  # 200, has_more
    call("GET", "/fine_tuning/jobs", params={"limit": 0})  # 400

    created = sim.created_jobs[0].id
    running = sim.add_job(statuses=("running",)).id
    done = sim.add_job(statuses=("succeeded",)).id
    call("POST", f"/fine_tuning/jobs/{created}/cancel")  # 200
    call("POST", f"/fine_tuning/jobs/{created}/cancel")  # 200 again
    call("POST", f"/fine_tuning/jobs/{done}/cancel")  # 400
    call("POST", "/fine_tuning/jobs/ftjob-missing/cancel")  # 404
    sim.can_cancel = False
    call("POST", f"/fine_tuning/jobs/{running}/cancel")  # 405
    sim.can_cancel = True
    call("GET", f"/fine_tuning/jobs/{created}")  # 200, cancelled
    call("GET", "/fine_tuning/jobs/ftjob-missing")  # 404

    unauthenticated = requests.Session()
    for method, path in (("GET", "/fine_tuning/jobs"), ("POST", "/fine_tuning/jobs"), ("POST", "/files")):
        sent.append(unauthenticated.request(method, f"{sim.url}{path}", json={}, timeout=10))  # 401
    unauthenticated.close()

    records = sim.requests
    assert len(records) == len(sent)
    seen: set[tuple[str, int]] = set()
    for record, response in zip(records, sent, strict=True):
        assert record.endpoint is not None
        assert record.status == response.status_code
        _assert_answer_matches_spec(record.endpoint, response.status_code, response.json())
        seen.add((record.endpoint, response.status_code))
    # Every endpoint and the statuses the spec files declare for the simulator's own answers.
    assert {endpoint for endpoint, _ in seen} == set(OPERATIONS)
    assert {("upload", 413), ("cancel", 405), ("cancel", 400), ("create", 400), ("list", 400)} <= seen
