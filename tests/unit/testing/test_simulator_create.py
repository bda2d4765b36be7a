"""``POST /fine_tuning/jobs``: validation, the create script, created jobs, and ambiguous faults."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from simulator_support import JobUrl

from airflow_provider_tfy.testing import Fault, GatewaySimulator

BODY = {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-abc"}


def _create(session: requests.Session, sim: GatewaySimulator, **fields: Any) -> requests.Response:
    return session.post(f"{sim.url}/fine_tuning/jobs", json={**BODY, **fields})


def test_create_answers_the_job_and_keeps_every_request_field(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    fields: dict[str, Any] = {
        "validation_file": "file-val",
        "suffix": "nightly",
        "seed": 42,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        "hyperparameters": {"n_epochs": 2},
        "metadata": {"airflow_idempotency_key": "dag.task.run", "team": "ml"},
        "integrations": [{"type": "wandb", "wandb": {"project": "p"}}],
    }
    response = _create(session, sim, **fields)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "fine_tuning.job"
    assert body["id"].startswith("ftjob-")
    assert body["status"] == "queued"
    assert body["model"] == BODY["model"]
    assert body["training_file"] == "file-abc"
    for name in ("validation_file", "seed", "method", "hyperparameters", "metadata", "integrations"):
        assert body[name] == fields[name], name
    (job,) = sim.created_jobs
    assert job.id == body["id"]
    assert job.suffix == "nightly"
    assert sim.requests[-1].endpoint == "create"
    # Retrievable, counted, and moving through the default script; the suffix names the model.
    statuses = [session.get(job_url(sim, job.id)).json() for _ in range(3)]
    assert [s["status"] for s in statuses] == ["queued", "running", "succeeded"]
    assert statuses[-1]["fine_tuned_model"] == f"ft:{BODY['model']}:tfy:nightly:{job.id}"
    assert sim.request_count(job.id) == 3


def test_created_jobs_are_listed_newest_first(sim: GatewaySimulator, session: requests.Session) -> None:
    sim.add_job("ftjob-scripted")
    first = _create(session, sim).json()["id"]
    second = _create(session, sim).json()["id"]
    page = session.get(f"{sim.url}/fine_tuning/jobs").json()
    assert [job["id"] for job in page["data"]] == [second, first, "ftjob-scripted"]
    assert [job.id for job in sim.created_jobs] == [first, second]


def test_any_non_empty_training_file_id_is_accepted(sim: GatewaySimulator, session: requests.Session) -> None:
    assert _create(session, sim, training_file="file-never-uploaded").status_code == 200


def test_the_create_script_drives_created_jobs(
    sim: GatewaySimulator, session: requests.Session, job_url: JobUrl
) -> None:
    error = {"code": "invalid_training_file", "message": "row 7 is not valid JSON", "param": "training_file"}
    sim.set_create_script(
        statuses=("queued", "failed"), polls_per_status=2, error=error, faults=[Fault.server_error(502)]
    )
    job_id = _create(session, sim).json()["id"]
    url = job_url(sim, job_id)
    assert session.get(url).status_code == 502  # the script's faults go to each created job's GETs
    assert [session.get(url).json()["status"] for _ in range(3)] == ["queued", "queued", "failed"]
    assert session.get(url).json()["error"] == error
    sim.set_create_script()  # back to the default
    other = _create(session, sim).json()["id"]
    assert session.get(job_url(sim, other)).json()["status"] == "queued"
    assert session.get(job_url(sim, other)).json()["status"] == "running"


@pytest.mark.parametrize(
    "script",
    [
        {"model": "x"},
        {"metadata": {}},
        {"job_id": "x"},
        {"bogus": 1},
        {"statuses": []},
        {"polls_per_status": 0},
    ],
)
def test_bad_create_scripts_are_refused_at_once(sim: GatewaySimulator, script: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        sim.set_create_script(**script)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"training_file": "file-abc"}, "model"),
        ({"model": "m"}, "training_file"),
        ({"model": "", "training_file": "file-abc"}, "model"),
        ({"model": 3, "training_file": "file-abc"}, "model"),
        ({**BODY, "suffix": "s" * 65}, "suffix"),
        ({**BODY, "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({**BODY, "metadata": {"k": 1}}, "metadata.k"),
        ({**BODY, "metadata": ["k", "v"]}, "metadata"),
        ({**BODY, "seed": "42"}, "seed"),
        ({**BODY, "seed": True}, "seed"),
        ({**BODY, "method": "supervised"}, "method"),
        ({**BODY, "integrations": ["wandb"]}, "integrations"),
        ({**BODY, "n_epochs": 3}, "n_epochs"),
    ],
    ids=[
        "no-model",
        "no-training-file",
        "empty-model",
        "model-not-string",
        "suffix-65",
        "metadata-17-pairs",
        "metadata-value-not-string",
        "metadata-not-object",
        "seed-string",
        "seed-bool",
        "method-string",
        "integrations-not-objects",
        "unknown-field",
    ],
)
def test_invalid_bodies_are_openai_style_400s_and_create_nothing(
    sim: GatewaySimulator, session: requests.Session, body: dict[str, Any], param: str
) -> None:
    response = session.post(f"{sim.url}/fine_tuning/jobs", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param.split(".")[0] in error["message"]
    assert sim.created_jobs == []


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b""])
def test_bodies_that_are_not_json_objects_are_400(
    sim: GatewaySimulator, session: requests.Session, raw: bytes
) -> None:
    response = session.post(
        f"{sim.url}/fine_tuning/jobs", data=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


def test_the_documented_limits_themselves_are_accepted(
    sim: GatewaySimulator, session: requests.Session
) -> None:
    metadata = {f"k{i}": "v" for i in range(16)}
    response = _create(session, sim, suffix="s" * 64, metadata=metadata, validation_file=None, seed=None)
    assert response.status_code == 200
    assert response.json()["metadata"] == metadata


def test_an_oversized_body_is_413(sim: GatewaySimulator, session: requests.Session) -> None:
    response = _create(session, sim, hyperparameters={"blob": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413
    assert sim.created_jobs == []


def test_faults_other_than_applied_create_nothing(sim: GatewaySimulator, session: requests.Session) -> None:
    for fault in (Fault.server_error(500), Fault.rate_limit(1), Fault.html_error(504), Fault.truncated()):
        sim.add_endpoint_fault("create", fault)
    assert _create(session, sim).status_code == 500
    limited = _create(session, sim)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "1")
    assert _create(session, sim).status_code == 504
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        _create(session, sim)
    assert sim.created_jobs == []
    assert _create(session, sim).status_code == 200
    assert len(sim.created_jobs) == 1


def test_applied_then_500_creates_exactly_one_job(sim: GatewaySimulator, session: requests.Session) -> None:
    sim.add_endpoint_fault("create", Fault.applied(then=Fault.server_error(500)))
    response = _create(session, sim, metadata={"airflow_idempotency_key": "k1"})
    assert response.status_code == 500
    (job,) = sim.created_jobs
    assert job.metadata == {"airflow_idempotency_key": "k1"}
    # The job exists for whoever looks: by its key, and by GET.
    page = session.get(
        f"{sim.url}/fine_tuning/jobs", params={"metadata[airflow_idempotency_key]": "k1"}
    ).json()
    assert [j["id"] for j in page["data"]] == [job.id]
    assert sim.requests[0].status == 500


def test_applied_then_reset_creates_exactly_one_job(sim: GatewaySimulator, session: requests.Session) -> None:
    sim.add_endpoint_fault("create", Fault.applied(then=Fault.reset()))
    with pytest.raises(requests.ConnectionError):
        _create(session, sim)
    assert len(sim.created_jobs) == 1
    assert sim.requests[-1].status is None


def test_applied_then_delayed_fault_and_truncated_answer(
    sim: GatewaySimulator, session: requests.Session
) -> None:
    sim.add_endpoint_fault("create", Fault.applied(then=Fault.delay(0.05, then=Fault.server_error(503))))
    sim.add_endpoint_fault("create", Fault.applied(then=Fault.truncated()))
    sim.add_endpoint_fault("create", Fault.applied(then=Fault.delay(0.05)))
    assert _create(session, sim).status_code == 503
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        _create(session, sim)
    delayed = _create(session, sim)  # a delay without `then` answers the applied request normally
    assert delayed.status_code == 200
    assert [job.id for job in sim.created_jobs][-1] == delayed.json()["id"]
    assert len(sim.created_jobs) == 3  # applied once each, never twice


def test_a_delay_without_then_still_creates(sim: GatewaySimulator, session: requests.Session) -> None:
    sim.add_endpoint_fault("create", Fault.delay(0.05))
    assert _create(session, sim).status_code == 200
    assert len(sim.created_jobs) == 1


def test_outage_and_auth_apply_to_create(sim: GatewaySimulator, session: requests.Session) -> None:
    sim.outage(fault=Fault.server_error(503))
    assert _create(session, sim).status_code == 503
    sim.end_outage()
    sim.add_endpoint_fault("create", Fault.server_error())
    unauthorised = requests.post(f"{sim.url}/fine_tuning/jobs", json=BODY, timeout=10)
    assert unauthorised.status_code == 401
    assert sim.created_jobs == []
    assert _create(session, sim).status_code == 500  # the 401 did not consume the fault


def test_endpoint_faults_are_checked(sim: GatewaySimulator) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        sim.add_endpoint_fault("retrieve", Fault.reset())
    with pytest.raises(TypeError):
        sim.add_endpoint_fault("create", "reset")  # type: ignore[arg-type]
