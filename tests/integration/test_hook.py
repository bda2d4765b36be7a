"""TrueFoundryHook over real HTTP against the gateway simulator: requests, retries, errors, secrecy."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time

import pytest

from airflow_provider_tfy.exceptions import (
    FineTuningJobNotFound,
    TrueFoundryAPIError,
    TrueFoundryAuthError,
    TrueFoundryConnectionError,
    TrueFoundryResponseError,
)
from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
from airflow_provider_tfy.models import FineTuningJob, FineTuningJobError
from airflow_provider_tfy.testing import Fault, GatewaySimulator

from .conftest import assert_secret_free, closed_port, log_messages, new_api_key, structlog_lines

X_TFY_HEADERS = (
    "x-tfy-provider-name",
    "x-tfy-provider-model",
    "x-tfy-vertex-storage-bucket-name",
    "x-tfy-file-purpose",
    "x-tfy-metadata",
)


def fast_hook(**kwargs) -> TrueFoundryHook:
    kwargs.setdefault("max_retries", 1)
    kwargs.setdefault("retry_delay", 0.05)
    return TrueFoundryHook(**kwargs)


def reason_for(fault: Fault) -> str:
    """What a retry's log line says about the failure a fault causes."""
    if fault.kind == "rate_limit":
        return "rate-limited"
    if fault.kind in ("server_error", "html_error"):
        return f"answered HTTP {fault.http_status}"
    if fault.kind == "malformed":
        return "body is not JSON"
    return "could not be reached"  # reset, truncated


def tfy_headers(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.startswith("x-tfy-")}


# ------------------------------------------------------------------------------------------
# The job
# ------------------------------------------------------------------------------------------


def test_returns_a_typed_job_with_every_field(connected_gateway):
    scripted = connected_gateway.add_job(
        statuses=("succeeded",), trained_tokens=4321, metadata={"team": "ml-platform"}
    )

    job = fast_hook().get_fine_tuning_job(scripted.id)

    assert isinstance(job, FineTuningJob)
    assert job.id == scripted.id
    assert job.status == "succeeded"
    assert job.object == "fine_tuning.job"
    assert job.model == scripted.model
    assert job.created_at == scripted.created_at
    assert isinstance(job.finished_at, int)
    assert job.finished_at >= job.created_at
    assert job.fine_tuned_model == scripted.fine_tuned_model
    assert job.organization_id == "org-tfy-simulator"
    assert job.result_files == [scripted.result_file]
    assert job.validation_file is None
    assert job.training_file == scripted.training_file
    assert job.hyperparameters == {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.8}
    assert job.trained_tokens == 4321
    assert job.integrations == []
    assert job.seed == scripted.seed
    assert job.estimated_finish is None
    assert job.method == {"type": "supervised"}
    assert job.metadata == {"team": "ml-platform"}
    assert job.error is None
    # Every dataclass field is a field of the gateway's document (nothing invented, nothing lost).
    names = {f.name for f in dataclasses.fields(FineTuningJob)} - {"raw", "error"}
    assert names <= set(job.raw)
    assert job.to_xcom() == job.raw
    assert json.loads(json.dumps(job.to_xcom())) == job.to_xcom()


def test_a_failed_job_carries_the_gateways_error(connected_gateway):
    error = {
        "code": "invalid_training_file",
        "message": "Line 3 is not valid JSON.",
        "param": "training_file",
    }
    scripted = connected_gateway.add_job(statuses=("failed",), error=error)

    job = fast_hook().get_fine_tuning_job(scripted.id)

    assert job.status == "failed"
    assert job.error == FineTuningJobError(**error)
    assert job.fine_tuned_model is None
    assert job.outcome == "failed"


def test_millisecond_timestamps_are_normalised_to_seconds(connected_gateway):
    seconds = 1_750_000_000
    extra_fields = {"created_at": seconds * 1000, "estimated_finish": 1_750_000_600_000}
    scripted = connected_gateway.add_job(statuses=("running",), extra_fields=extra_fields)

    job = fast_hook().get_fine_tuning_job(scripted.id)

    assert job.created_at == seconds
    assert job.estimated_finish == 1_750_000_600
    assert job.to_xcom()["created_at"] == seconds
    assert job.raw["created_at"] == seconds * 1000


# ------------------------------------------------------------------------------------------
# Request: auth, headers, URL
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "arguments", "expected"),
    [
        pytest.param({}, {}, {}, id="unset-sends-none"),
        pytest.param(
            {"provider_name": "openai-main", "metadata": {"team": "ml"}},
            {},
            {"x-tfy-provider-name": "openai-main", "x-tfy-metadata": '{"team":"ml"}'},
            id="from-extra",
        ),
        pytest.param(
            {"provider_name": "openai-main", "file_purpose": "fine-tune", "metadata": '{"team": "ml"}'},
            {"provider_name": "vertex-main", "metadata": {"z": "1", "a": "2"}},
            {
                "x-tfy-provider-name": "vertex-main",
                "x-tfy-file-purpose": "fine-tune",
                "x-tfy-metadata": '{"a":"2","z":"1"}',
            },
            id="argument-overrides-extra",
        ),
        pytest.param(
            {},
            {
                "provider_name": "vertex-main",
                "provider_model": "gemini-2.0-flash",
                "vertex_storage_bucket_name": "gs-tuning",
                "file_purpose": "fine-tune",
                "metadata": {"team": "ml", "env": "prod"},
            },
            {
                "x-tfy-provider-name": "vertex-main",
                "x-tfy-provider-model": "gemini-2.0-flash",
                "x-tfy-vertex-storage-bucket-name": "gs-tuning",
                "x-tfy-file-purpose": "fine-tune",
                "x-tfy-metadata": '{"env":"prod","team":"ml"}',
            },
            id="all-arguments",
        ),
        pytest.param(
            {"provider_name": "", "provider_model": "", "metadata": ""},
            {},
            {},
            id="empty-extra-is-unset",
        ),
    ],
)
def test_sends_bearer_and_exactly_the_x_tfy_headers_that_are_set(
    gateway, set_connection, extra, arguments, expected
):
    set_connection(gateway, extra=extra)
    scripted = gateway.add_job(statuses=("running",))

    fast_hook().get_fine_tuning_job(scripted.id, **arguments)

    (record,) = gateway.requests
    assert record.has_valid_auth  # "Authorization: Bearer <the connection's key>"
    assert record.headers["authorization"] == "<redacted>"
    assert tfy_headers(record.headers) == expected
    assert record.headers["accept"] == "application/json"
    assert record.headers["user-agent"].startswith("airflow-provider-tfy/")


@pytest.mark.parametrize("host_suffix", ["", "/", "///"], ids=["plain", "trailing-slash", "many-slashes"])
def test_a_path_prefix_in_the_base_url_survives(api_key, set_connection, host_suffix):
    with GatewaySimulator(api_key=api_key, path_prefix="/api/llm") as sim:
        set_connection(sim, host=sim.url + host_suffix)
        scripted = sim.add_job(statuses=("running",))

        hook = fast_hook()
        job = hook.get_fine_tuning_job(scripted.id)
        ok, message = hook.test_connection()

        assert job.id == scripted.id
        assert [r.path for r in sim.requests] == [
            f"/api/llm/fine_tuning/jobs/{scripted.id}",
            "/api/llm/fine_tuning/jobs",
        ]
        assert ok, message


def test_a_base_url_missing_the_path_prefix_is_reported(api_key, set_connection):
    with GatewaySimulator(api_key=api_key, path_prefix="/api/llm") as sim:
        scripted = sim.add_job(statuses=("running",))
        set_connection(sim, host=sim.url.removesuffix("/api/llm"))

        with pytest.raises(FineTuningJobNotFound) as excinfo:
            fast_hook(max_retries=3).get_fine_tuning_job(scripted.id)
        ok, message = fast_hook().test_connection()

    assert "/api/llm" in str(excinfo.value)
    assert len(sim.requests) == 2  # one job request (not retried), one listing
    assert not ok
    assert "does not serve" in message


@pytest.mark.parametrize(
    "job_id", ["../x", "../../__simulator__/reset", "a/b", "x?limit=1", "x#frag", "%2e%2e", "ftjob ü"]
)
def test_a_job_id_is_one_encoded_path_segment_inside_the_jobs_path(connected_gateway, job_id):
    with pytest.raises(FineTuningJobNotFound) as excinfo:
        fast_hook(max_retries=3).get_fine_tuning_job(job_id)

    (record,) = connected_gateway.requests
    assert record.path.startswith("/fine_tuning/jobs/")
    segment = record.path.removeprefix("/fine_tuning/jobs/")
    assert segment
    assert "/" not in segment
    assert "?" not in segment
    assert "#" not in segment
    assert record.query == {}
    assert record.job_id == job_id  # the gateway decodes exactly the id we were given
    assert record.status == 404
    assert excinfo.value.status_code == 404
    assert repr(job_id) in str(excinfo.value)


def test_an_id_with_reserved_characters_reaches_its_job(connected_gateway):
    scripted = connected_gateway.add_job("team/a b?c#d", statuses=("running",))

    job = fast_hook().get_fine_tuning_job(scripted.id)

    assert job.id == "team/a b?c#d"
    assert connected_gateway.requests[-1].path == "/fine_tuning/jobs/team%2Fa%20b%3Fc%23d"


# ------------------------------------------------------------------------------------------
# Connection reuse
# ------------------------------------------------------------------------------------------


def test_one_session_and_one_connection_read_per_hook(connected_gateway, monkeypatch):
    from airflow.providers.common.compat.sdk import BaseHook

    reads: list[str] = []
    real_get_connection = BaseHook.get_connection

    def spy(cls, conn_id):
        reads.append(conn_id)
        return real_get_connection(conn_id)

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(spy))
    scripted = connected_gateway.add_job(statuses=("queued", "running", "succeeded"), polls_per_status=4)

    hook = fast_hook()
    statuses = [hook.get_fine_tuning_job(scripted.id).status for _ in range(12)]
    ok, _ = hook.test_connection()

    assert statuses == ["queued"] * 4 + ["running"] * 4 + ["succeeded"] * 4
    assert ok
    assert len(connected_gateway.requests) == 13
    assert connected_gateway.connections_opened == 1
    assert len({r.connection_id for r in connected_gateway.requests}) == 1
    assert reads == ["truefoundry_default"]

    # Per hook, not per process: a new hook reads the connection again.
    fast_hook().get_fine_tuning_job(scripted.id)
    assert reads == ["truefoundry_default", "truefoundry_default"]
    assert connected_gateway.connections_opened == 2


# ------------------------------------------------------------------------------------------
# Retries
# ------------------------------------------------------------------------------------------


def test_429_retry_after_seconds_is_honoured(connected_gateway, capfd, api_key):
    scripted = connected_gateway.add_job(statuses=("running",), faults=[Fault.rate_limit(retry_after=1)])
    capfd.readouterr()

    started = time.monotonic()
    job = fast_hook(max_retries=2, retry_delay=0.01).get_fine_tuning_job(scripted.id)
    elapsed = time.monotonic() - started

    assert job.status == "running"
    assert elapsed >= 1.0
    assert elapsed < 5.0
    first, second = connected_gateway.requests
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 0.95
    warnings = [line for line in structlog_lines(capfd.readouterr().out, "warning") if "TrueFoundry" in line]
    assert len(warnings) == 1
    assert "rate-limited" in warnings[0]
    assert "retry 1 of 2 in 1.0 s" in warnings[0]
    assert_secret_free(api_key, *warnings)


def test_429_without_retry_after_backs_off_briefly(connected_gateway):
    faults = [Fault.rate_limit(), Fault.rate_limit()]
    scripted = connected_gateway.add_job(statuses=("running",), faults=faults)

    started = time.monotonic()
    job = fast_hook(max_retries=2, retry_delay=0.05).get_fine_tuning_job(scripted.id)
    elapsed = time.monotonic() - started

    assert job.status == "running"
    assert [r.status for r in connected_gateway.requests] == [429, 429, 200]
    # Backoff waits at least half of each step (0.05 s, then 0.1 s) and at most the full step.
    assert 0.075 <= elapsed < 2.0


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param([Fault.server_error(500)], id="500"),
        pytest.param([Fault.server_error(502)], id="502"),
        pytest.param([Fault.server_error(503)], id="503"),
        pytest.param([Fault.server_error(504)], id="504"),
        pytest.param([Fault.server_error(s) for s in (500, 502, 503, 504)], id="burst-500-502-503-504"),
        pytest.param([Fault.html_error(502), Fault.html_error(503)], id="proxy-html-pages"),
        pytest.param([Fault.reset()], id="connection-reset"),
        pytest.param([Fault.reset(), Fault.server_error(503), Fault.reset()], id="resets-and-503"),
        pytest.param([Fault.truncated()], id="truncated-body"),
        pytest.param([Fault.malformed()], id="not-json-once"),
        pytest.param([Fault.rate_limit(0), Fault.server_error(500)], id="429-then-500"),
    ],
)
def test_transient_failures_are_retried_until_the_job_comes_back(connected_gateway, capfd, api_key, faults):
    scripted = connected_gateway.add_job(statuses=("running",), faults=faults)
    capfd.readouterr()

    job = fast_hook(max_retries=len(faults), retry_delay=0.01).get_fine_tuning_job(scripted.id)

    assert job.status == "running"
    assert connected_gateway.request_count(scripted.id) == len(faults) + 1
    assert connected_gateway.requests[-1].status == 200
    warnings = [line for line in structlog_lines(capfd.readouterr().out, "warning") if "TrueFoundry" in line]
    assert len(warnings) == len(faults)
    for number, (line, fault) in enumerate(zip(warnings, faults, strict=True), start=1):
        assert re.search(rf"retry {number} of {len(faults)} in \d+\.\d s", line), line
        assert f"GET {connected_gateway.url}/fine_tuning/jobs/{scripted.id}" in line
        assert reason_for(fault) in line, line
    assert_secret_free(api_key, *warnings)


def test_a_reset_connection_is_replaced_by_a_new_one(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("running",), faults=[Fault.reset()])

    fast_hook().get_fine_tuning_job(scripted.id)

    assert [r.status for r in connected_gateway.requests] == [None, 200]
    assert connected_gateway.connections_opened == 2


def test_an_answer_slower_than_the_timeout_is_retried_then_raises(connected_gateway, api_key):
    scripted = connected_gateway.add_job(statuses=("running",), faults=[Fault.delay(5.0), Fault.delay(5.0)])

    started = time.monotonic()
    with pytest.raises(TrueFoundryConnectionError) as excinfo:
        fast_hook(timeout=0.3, max_retries=1, retry_delay=0.01).get_fine_tuning_job(scripted.id)
    elapsed = time.monotonic() - started

    assert connected_gateway.request_count(scripted.id) == 2
    # Two 0.3 s read timeouts, never the gateway's 5 s (room for a busy machine in between).
    assert 0.6 <= elapsed < 4.0
    assert "did not answer in time" in str(excinfo.value)
    assert excinfo.value.retryable
    assert_secret_free(api_key, excinfo.value)


def test_one_slow_answer_then_a_fast_one_recovers(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("running",), faults=[Fault.delay(2.0)])

    job = fast_hook(timeout=0.3, max_retries=1, retry_delay=0.01).get_fine_tuning_job(scripted.id)

    assert job.status == "running"
    assert connected_gateway.request_count(scripted.id) == 2


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_a_failure_that_persists_makes_exactly_max_retries_plus_one_requests(
    connected_gateway, capfd, api_key, max_retries
):
    scripted = connected_gateway.add_job(
        statuses=("running",), faults=[Fault.server_error(503)] * (max_retries + 5)
    )
    capfd.readouterr()

    with pytest.raises(TrueFoundryAPIError) as excinfo:
        fast_hook(max_retries=max_retries, retry_delay=0.01).get_fine_tuning_job(scripted.id)

    assert connected_gateway.request_count(scripted.id) == max_retries + 1
    assert excinfo.value.status_code == 503
    assert excinfo.value.retryable
    assert "HTTP 503" in str(excinfo.value)
    warnings = [line for line in structlog_lines(capfd.readouterr().out, "warning") if "TrueFoundry" in line]
    assert len(warnings) == max_retries
    assert_secret_free(api_key, excinfo.value, *warnings)


def test_a_retry_after_longer_than_the_cap_is_not_waited_for_within_a_call(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("running",), faults=[Fault.rate_limit(retry_after=3600)])

    started = time.monotonic()
    with pytest.raises(TrueFoundryAPIError) as excinfo:
        fast_hook(max_retries=3).get_fine_tuning_job(scripted.id)

    assert time.monotonic() - started < 5.0
    assert connected_gateway.request_count(scripted.id) == 1
    assert excinfo.value.status_code == 429
    assert excinfo.value.retry_after == 3600


# ------------------------------------------------------------------------------------------
# Errors that are never retried
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "status", "error_class", "phrase"),
    [
        ("fault-400", 400, TrueFoundryAPIError, "HTTP 400"),
        ("wrong-key", 401, TrueFoundryAuthError, "rejected the API key"),
        ("fault-403", 403, TrueFoundryAuthError, "refused access"),
        ("unknown-job", 404, FineTuningJobNotFound, "was not found"),
    ],
)
def test_client_errors_are_not_retried_and_raise_the_right_class(
    gateway, set_connection, api_key, case, status, error_class, phrase
):
    wrong_key = new_api_key()
    set_connection(gateway, password=wrong_key if case == "wrong-key" else api_key)
    scripted = gateway.add_job(statuses=("running",))
    job_id = "ftjob-does-not-exist" if case == "unknown-job" else scripted.id
    if case.startswith("fault-"):
        gateway.add_fault(job_id, Fault.status(status))

    with pytest.raises(error_class) as excinfo:
        fast_hook(max_retries=3, retry_delay=0.01).get_fine_tuning_job(job_id)

    error = excinfo.value
    assert gateway.request_count(job_id) == 1
    assert type(error) is error_class
    assert error.status_code == status
    assert not error.retryable
    assert phrase in str(error)
    assert_secret_free(api_key, error)
    assert_secret_free(wrong_key, error)


# ------------------------------------------------------------------------------------------
# Bodies that are not a job
# ------------------------------------------------------------------------------------------


def test_a_200_that_is_never_json_raises_a_response_error_after_retries(connected_gateway, api_key):
    scripted = connected_gateway.add_job(statuses=("running",), faults=[Fault.malformed("<html>oops")] * 3)

    with pytest.raises(TrueFoundryResponseError) as excinfo:
        fast_hook(max_retries=1, retry_delay=0.01).get_fine_tuning_job(scripted.id)

    assert connected_gateway.request_count(scripted.id) == 2
    assert "not JSON" in str(excinfo.value)
    assert excinfo.value.retryable
    assert_secret_free(api_key, excinfo.value)


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ("[]", "JSON array"),
        ('{"id": 5, "status": "running"}', "'id'"),
        ('{"id": "ftjob-1"}', "'status'"),
        ('{"id": "ftjob-1", "status": "running", "created_at": "yesterday"}', "'created_at'"),
        ('{"id": "ftjob-1", "status": "running", "result_files": [1]}', "'result_files'"),
        ('{"id": "ftjob-1", "status": "running", "object": "list"}', "'object'"),
    ],
    ids=["array", "id-not-string", "no-status", "bad-timestamp", "bad-result-files", "wrong-object"],
)
def test_json_that_is_not_a_job_raises_a_response_error_without_retrying(connected_gateway, body, phrase):
    scripted = connected_gateway.add_job(statuses=("running",), faults=[Fault.malformed(body)] * 3)

    with pytest.raises(TrueFoundryResponseError) as excinfo:
        fast_hook(max_retries=3, retry_delay=0.01).get_fine_tuning_job(scripted.id)

    assert connected_gateway.request_count(scripted.id) == 1
    assert phrase in str(excinfo.value)
    assert not excinfo.value.retryable


# ------------------------------------------------------------------------------------------
# test_connection()
# ------------------------------------------------------------------------------------------


def test_test_connection_succeeds_with_one_cheap_call(connected_gateway):
    ok, message = fast_hook().test_connection()

    assert ok is True
    assert connected_gateway.url in message
    assert "accepted" in message
    (record,) = connected_gateway.requests
    assert (record.path, record.query, record.status) == ("/fine_tuning/jobs", {"limit": "1"}, 200)
    assert record.has_valid_auth


def test_test_connection_with_a_wrong_key_says_it_was_rejected(gateway, set_connection, api_key):
    wrong_key = new_api_key()
    set_connection(gateway, password=wrong_key)

    ok, message = fast_hook(max_retries=3).test_connection()

    assert ok is False
    assert "rejected the API key" in message
    assert "401" in message
    assert len(gateway.requests) == 1
    assert_secret_free(wrong_key, message)
    assert_secret_free(api_key, message)


def test_test_connection_to_a_closed_port_says_unreachable(set_connection, api_key):
    set_connection(host=f"http://127.0.0.1:{closed_port()}", password=api_key)

    started = time.monotonic()
    ok, message = fast_hook(max_retries=3, retry_delay=1.0).test_connection()

    assert ok is False
    assert "Could not reach the gateway" in message
    assert "could not be reached" in message
    assert time.monotonic() - started < 5.0  # one attempt, no retry backoff
    assert_secret_free(api_key, message)


def test_test_connection_reports_a_bad_connection_config(set_connection, api_key):
    set_connection(host="gateway.example.com", password=api_key)

    ok, message = fast_hook().test_connection()

    assert ok is False
    assert "no scheme" in message
    assert_secret_free(api_key, message)


# ------------------------------------------------------------------------------------------
# The key never leaks
# ------------------------------------------------------------------------------------------


def test_the_key_is_in_no_exception_and_no_log_record(gateway, set_connection, api_key, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    wrong_key = new_api_key()
    scripted = gateway.add_job(
        statuses=("queued", "running", "failed"),
        faults=[
            Fault.rate_limit(0),
            Fault.server_error(500),
            Fault.reset(),
            Fault.malformed(f"echo {api_key}"),
            Fault.status(400, body={"error": {"message": f"bad key {api_key}"}}),
        ],
    )
    errors: list[BaseException] = []

    set_connection(gateway)
    hook = fast_hook(max_retries=4, retry_delay=0.01)
    with pytest.raises(TrueFoundryAPIError) as bad_request:
        hook.get_fine_tuning_job(scripted.id)  # 429, 500, reset, not-JSON, then the 400
    errors.append(bad_request.value)
    for _ in range(3):
        hook.get_fine_tuning_job(scripted.id)
    for job_id in ("ftjob-missing", "../x"):
        with pytest.raises(FineTuningJobNotFound) as not_found:
            hook.get_fine_tuning_job(job_id)
        errors.append(not_found.value)
    messages = [hook.test_connection()[1]]

    set_connection(gateway, password=wrong_key)
    wrong = fast_hook()
    with pytest.raises(TrueFoundryAuthError) as rejected:
        wrong.get_fine_tuning_job(scripted.id)
    errors.append(rejected.value)
    messages.append(wrong.test_connection()[1])

    set_connection(host=f"http://127.0.0.1:{closed_port()}", password=api_key)
    with pytest.raises(TrueFoundryConnectionError) as unreachable:
        fast_hook(max_retries=1, retry_delay=0.01).get_fine_tuning_job(scripted.id)
    errors.append(unreachable.value)

    output = capfd.readouterr()
    records = log_messages(caplog)
    # The capture saw the traffic (urllib3 at DEBUG) and the retries (the hook at WARNING).
    assert any("/fine_tuning/jobs/" in message for message in records if "HTTP/1.1" in message)
    assert any("TrueFoundry call failed" in line for line in structlog_lines(output.out, "warning"))
    assert "bad key ***" in str(bad_request.value)  # the gateway echoed it; we masked it
    for secret in (api_key, wrong_key):
        assert_secret_free(secret, *errors, *messages, *records, caplog.text, output.out, output.err)
        for error in errors:
            assert_secret_free(secret, error.args, getattr(error, "body_excerpt", ""))
