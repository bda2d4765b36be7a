"""Unit tests of trigger events: job and error events, and their way back into exceptions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_tfy import events, protocol
from airflow_provider_tfy.exceptions import (
    FineTuningJobNotFound,
    TrueFoundryAPIError,
    TrueFoundryAuthError,
    TrueFoundryConfigError,
    TrueFoundryConnectionError,
    TrueFoundryError,
    TrueFoundryResponseError,
)
from airflow_provider_tfy.models import FineTuningJob

JOB_ID = "ftjob-abc123"


def job(status: str, **fields: Any) -> FineTuningJob:
    return protocol.parse_job(
        {
            "object": "fine_tuning.job",
            "id": JOB_ID,
            "status": status,
            "model": "gpt-4o-mini",
            "created_at": 1_700_000_000_000,
            "result_files": [],
            "x_vendor_field": {"k": [1, None]},
            **fields,
        }
    )


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_job_event_carries_the_xcom_dict(status: str) -> None:
    the_job = job(status, error={"code": "c", "message": "m"} if status == "failed" else None)
    event = events.job_event(the_job)
    assert event["status"] == status
    assert type(event["status"]) is str
    assert event["job_id"] == JOB_ID
    assert event["job"] == the_job.to_xcom()
    assert event["job"]["created_at"] == 1_700_000_000
    assert event["job"]["x_vendor_field"] == {"k": [1, None]}
    # A trigger event crosses the metadata database: plain JSON only.
    assert json.loads(json.dumps(event)) == event
    assert events.check_event(event) is event


def test_timeout_event() -> None:
    event = events.timeout_event(JOB_ID, "did not finish")
    assert event == {"status": "timeout", "job_id": JOB_ID, "message": "did not finish"}
    assert events.check_event(event) is event


@pytest.mark.parametrize(
    ("error", "kind", "status_code", "fails_task"),
    [
        pytest.param(TrueFoundryAuthError("key rejected", status_code=401), "auth", 401, True, id="auth-401"),
        pytest.param(TrueFoundryAuthError("forbidden", status_code=403), "auth", 403, True, id="auth-403"),
        pytest.param(
            FineTuningJobNotFound("no job", status_code=404), "not_found", 404, True, id="not-found"
        ),
        pytest.param(TrueFoundryConfigError("bad job id"), "config", None, True, id="config"),
        pytest.param(TrueFoundryAPIError("bad request", status_code=400), "api", 400, False, id="api-400"),
        pytest.param(TrueFoundryAPIError("redirect", status_code=302), "api", 302, False, id="api-302"),
        pytest.param(TrueFoundryResponseError("not a job"), "response", None, False, id="response"),
        pytest.param(TrueFoundryConnectionError("down"), "connection", None, False, id="connection"),
        pytest.param(TrueFoundryError("generic"), "other", None, False, id="generic"),
    ],
)
def test_error_event_round_trip(
    error: TrueFoundryError, kind: str, status_code: int | None, fails_task: bool
) -> None:
    event = events.error_event(JOB_ID, error)
    assert {k: v for k, v in event.items() if k != "status_code"} == {
        "status": "error",
        "job_id": JOB_ID,
        "kind": kind,
        "message": str(error),
    }
    if status_code is not None:
        assert event["status_code"] == status_code
    assert json.loads(json.dumps(event)) == event
    assert events.check_event(event) is event

    rebuilt = events.error_from_event(event)
    assert isinstance(rebuilt, TrueFoundryError)
    assert str(rebuilt) == str(error)
    assert isinstance(rebuilt, AirflowFailException) is fails_task
    assert isinstance(rebuilt, AirflowFailException) is isinstance(error, AirflowFailException)
    if status_code is not None:
        assert rebuilt.status_code == status_code
    expected_class = type(error) if kind != "other" else TrueFoundryError
    assert type(rebuilt) is expected_class


@pytest.mark.parametrize("status_code", [401, 404, 400, 302])
def test_error_event_status_code_of_http_errors(status_code: int) -> None:
    error = TrueFoundryAPIError("m", status_code=status_code)
    if status_code == 401:
        error = TrueFoundryAuthError("m", status_code=status_code)
    elif status_code == 404:
        error = FineTuningJobNotFound("m", status_code=status_code)
    event = events.error_event(JOB_ID, error)
    assert event["status_code"] == status_code
    assert type(event["status_code"]) is int


@pytest.mark.parametrize(
    "error",
    [
        TrueFoundryConfigError("bad job id"),
        TrueFoundryConnectionError("down"),
        TrueFoundryResponseError("not a job"),
        TrueFoundryError("generic"),
    ],
    ids=["config", "connection", "response", "generic"],
)
def test_error_event_of_non_http_errors_has_no_status_code(error: TrueFoundryError) -> None:
    assert events.error_event(JOB_ID, error)["status_code"] is None


def test_error_event_from_a_real_classification() -> None:
    config = protocol.gateway_config(
        "c", host="https://gw.example.com", password="tfy-SECRET-abc123", extra={}
    )
    request = protocol.Gateway(config).retrieve(JOB_ID)
    with pytest.raises(TrueFoundryAuthError) as info:
        protocol.Gateway(config).read(request, protocol.Answer(403, {}, b"tfy-SECRET-abc123 denied"))
    event = events.error_event(JOB_ID, info.value)
    assert "tfy-SECRET-abc123" not in json.dumps(event)
    rebuilt = events.error_from_event(event)
    assert isinstance(rebuilt, TrueFoundryAuthError)
    assert rebuilt.status_code == 403


@pytest.mark.parametrize(
    ("event", "cls"),
    [
        ({"status": "error", "kind": "not_a_kind", "message": "m"}, TrueFoundryError),
        ({"status": "error", "message": "m"}, TrueFoundryError),
        ({"status": "error", "kind": "auth", "message": "m"}, TrueFoundryAuthError),
        ({"status": "error", "kind": "api", "message": "m", "status_code": "503"}, TrueFoundryAPIError),
    ],
)
def test_error_from_incomplete_events(event: dict[str, Any], cls: type[TrueFoundryError]) -> None:
    rebuilt = events.error_from_event(event)
    assert type(rebuilt) is cls
    assert str(rebuilt) == "m"


def test_error_from_event_without_message_still_explains() -> None:
    rebuilt = events.error_from_event({"status": "error", "kind": "auth", "status_code": None})
    assert isinstance(rebuilt, TrueFoundryAuthError)
    assert rebuilt.status_code == 0
    assert "without a message" in str(rebuilt)


@pytest.mark.parametrize(
    ("event", "fragments"),
    [
        pytest.param(None, ["NoneType", "instead of an event dict", "clear the task"], id="none"),
        pytest.param([{"status": "succeeded"}], ["list", "instead of an event dict"], id="list"),
        pytest.param("succeeded", ["str", "instead of an event dict"], id="string"),
        pytest.param({}, ["status is None", "expected one of", "Clear the task"], id="no-status"),
        pytest.param({"status": "done"}, ["'done'", "expected one of", "'succeeded'"], id="unknown-status"),
        pytest.param({"status": "in_progress", "job": {}}, ["'in_progress'"], id="in-progress"),
        pytest.param({"status": "succeeded"}, ["'succeeded'", "carries no job"], id="succeeded-no-job"),
        pytest.param({"status": "failed", "job": None}, ["'failed'", "carries no job"], id="failed-null-job"),
        pytest.param({"status": "cancelled", "job": "x"}, ["'cancelled'", "carries no job"], id="job-str"),
    ],
)
def test_check_event_rejects_what_our_trigger_never_sends(event: Any, fragments: list[str]) -> None:
    with pytest.raises(TrueFoundryError) as info:
        events.check_event(event)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    assert not isinstance(info.value, AirflowFailException)


@pytest.mark.parametrize(
    "event",
    [
        {"status": "succeeded", "job_id": JOB_ID, "job": {"id": JOB_ID}},
        {"status": "timeout", "job_id": JOB_ID, "message": "late"},
        {"status": "error", "job_id": JOB_ID, "kind": "auth", "message": "m", "status_code": 401},
    ],
)
def test_check_event_accepts_our_events(event: dict[str, Any]) -> None:
    assert events.check_event(event) is event
