"""Unit tests of the sans-I/O protocol core: config, requests, responses, jobs, retries."""

from __future__ import annotations

import json
import logging
import math
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_tfy import protocol
from airflow_provider_tfy.exceptions import (
    FineTuningJobCancelled,
    FineTuningJobFailed,
    FineTuningJobNotFound,
    TrueFoundryAPIError,
    TrueFoundryAuthError,
    TrueFoundryConfigError,
    TrueFoundryConnectionError,
    TrueFoundryError,
    TrueFoundryResponseError,
)
from airflow_provider_tfy.header_spec import HEADER_NAMES
from airflow_provider_tfy.models import FineTuningJob, FineTuningJobError, FineTuningJobStatus
from airflow_provider_tfy.protocol.answers import BODY_EXCERPT_CHARS, check_status, excerpt, parse_retry_after
from airflow_provider_tfy.protocol.gateway import validate_job_id

KEY = "tfy-SECRET-abc123"
CONN_ID = "tfy_conn"
BASE = "https://gw.example.com"
JOB_ID = "ftjob-abc123"
NOW = 1_700_000_000.0

FULL_JOB: dict[str, Any] = {
    "object": "fine_tuning.job",
    "id": JOB_ID,
    "model": "gpt-4o-mini-2024-07-18",
    "created_at": 1_700_000_000,
    "finished_at": 1_700_003_600,
    "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:org::abc",
    "organization_id": "org-123",
    "result_files": ["file-result-1", "file-result-2"],
    "status": "succeeded",
    "validation_file": "file-val",
    "training_file": "file-train",
    "hyperparameters": {"n_epochs": 3, "batch_size": "auto"},
    "trained_tokens": 123_456,
    "integrations": [{"type": "wandb", "wandb": {"project": "p"}}],
    "seed": 42,
    "estimated_finish": 1_700_003_000,
    "method": {"type": "supervised"},
    "metadata": {"team": "ml-platform"},
}

NULLABLE = (
    "finished_at",
    "fine_tuned_model",
    "validation_file",
    "hyperparameters",
    "trained_tokens",
    "integrations",
    "seed",
    "estimated_finish",
    "method",
    "metadata",
)


def make_config(
    host: str | None = BASE,
    *,
    password: str | None = KEY,
    extra: dict[str, Any] | None = None,
    timeout: Any = None,
) -> protocol.GatewayConfig:
    return protocol.gateway_config(CONN_ID, host=host, password=password, extra=extra or {}, timeout=timeout)


def expect_error(exc_type: type[BaseException], func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``func``, expect ``exc_type``, and check the message never carries the API key."""
    with pytest.raises(exc_type) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert KEY not in message
    assert message.strip(), "an error must say what went wrong"
    return info.value


def config_error(**kwargs: Any) -> str:
    err = expect_error(TrueFoundryConfigError, make_config, **kwargs)
    assert isinstance(err, AirflowFailException)
    return str(err)


@pytest.fixture
def config() -> protocol.GatewayConfig:
    return make_config()


@pytest.fixture
def request_(config: protocol.GatewayConfig) -> protocol.Request:
    return protocol.Gateway(config).retrieve(JOB_ID)


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


# --------------------------------------------------------------------------------------------
# Base URL
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "extra", "expected"),
    [
        ("https://gw.example.com", {}, "https://gw.example.com"),
        ("https://gw.example.com/", {}, "https://gw.example.com"),
        ("https://gw.example.com///", {}, "https://gw.example.com"),
        ("  https://gw.example.com/  ", {}, "https://gw.example.com"),
        ("https://x.truefoundry.cloud/api/llm/", {}, "https://x.truefoundry.cloud/api/llm"),
        ("https://x.truefoundry.cloud/api/llm", {}, "https://x.truefoundry.cloud/api/llm"),
        ("https://gw.example.com:8443/api/llm/", {}, "https://gw.example.com:8443/api/llm"),
        ("http://127.0.0.1:8080", {}, "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/", {}, "http://127.0.0.1:8080"),
        ("http://localhost:8080/api/llm/", {}, "http://localhost:8080/api/llm"),
        ("http://LOCALHOST:8080", {}, "http://LOCALHOST:8080"),
        ("http://[::1]:8080", {}, "http://[::1]:8080"),
        ("http://gw.internal", {"allow_insecure_http": True}, "http://gw.internal"),
        ("http://gw.internal/", {"allow_insecure_http": "true"}, "http://gw.internal"),
        ("http://10.0.0.5:80", {"allow_insecure_http": "yes"}, "http://10.0.0.5:80"),
    ],
)
def test_base_url_is_normalised(host: str, extra: dict[str, Any], expected: str) -> None:
    assert make_config(host, extra=extra).base_url == expected


def test_path_prefix_is_kept_in_the_job_url() -> None:
    config = make_config("https://x.truefoundry.cloud/api/llm/")
    request = protocol.Gateway(config).retrieve("ftjob-1")
    assert request.url == "https://x.truefoundry.cloud/api/llm/fine_tuning/jobs/ftjob-1"
    assert config.origin == "https://x.truefoundry.cloud"


@pytest.mark.parametrize(
    ("host", "fragments"),
    [
        pytest.param(None, ["no host", "https://"], id="none"),
        pytest.param("", ["no host", "https://"], id="empty"),
        pytest.param("   ", ["no host", "https://"], id="blank"),
        pytest.param("gw.example.com", ["no scheme", "write it in full", "https://"], id="no-scheme"),
        pytest.param("ftp://gw.example.com", ["ftp://", "must start with https://"], id="ftp"),
        pytest.param("https://gw example.com", ["spaces", "https://"], id="space"),
        pytest.param("https://gw.example.com/a\tb", ["spaces"], id="tab"),
        pytest.param("https://gw.example.com/\r\nX: y", ["spaces"], id="crlf"),
        pytest.param(f"https://user:{KEY}@gw.example.com", ["credentials", "password"], id="user-pass"),
        pytest.param(f"https://{KEY}@gw.example.com", ["credentials", "password"], id="user-only"),
        pytest.param(f"ftp://{KEY}:x@gw.example.com", ["credentials"], id="ftp-credentials"),
        pytest.param("https://gw.example.com/?a=1", ["a query (?...) or fragment", "https://"], id="query"),
        pytest.param("https://gw.example.com/api#frag", ["a query (?...) or fragment"], id="fragment"),
        pytest.param("https://gw.example.com:abc", ["not a valid URL (bad port"], id="bad-port"),
        pytest.param("https://gw.example.com:99999", ["not a valid URL (bad port"], id="port-range"),
        pytest.param("https:///api/llm", ["no host name"], id="no-hostname"),
        pytest.param("http://gw.example.com", ["plain http", "use https", "allow_insecure_http"], id="http"),
        pytest.param("http://10.0.0.5", ["plain http", "allow_insecure_http"], id="http-private-ip"),
        pytest.param("http://localhost.evil.com", ["plain http"], id="http-localhost-lookalike"),
        pytest.param("http://127.0.0.1.nip.io", ["plain http"], id="http-loopback-lookalike"),
    ],
)
def test_bad_base_url_is_refused_with_a_useful_message(host: str | None, fragments: list[str]) -> None:
    message = config_error(host=host)
    assert repr(CONN_ID) in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("value", [False, "false", "no", "0", "", None])
def test_plain_http_stays_refused_unless_allowed(value: Any) -> None:
    message = config_error(host="http://gw.example.com", extra={"allow_insecure_http": value})
    assert "plain http" in message


def test_allow_insecure_http_must_be_a_flag() -> None:
    message = config_error(host="http://gw.example.com", extra={"allow_insecure_http": "maybe"})
    assert "allow_insecure_http" in message
    assert "true or false" in message


def test_credentials_in_a_url_without_scheme_are_not_echoed() -> None:
    config_error(host=f"user:{KEY}@gw.example.com")


def test_token_in_the_query_string_is_not_echoed() -> None:
    config_error(host=f"https://gw.example.com/api/llm?api_key={KEY}")


def test_malformed_ipv6_host_is_a_config_error() -> None:
    config_error(host="https://[::1")


# --------------------------------------------------------------------------------------------
# API key
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("password", [None, "", "   ", "\n"])
def test_missing_api_key_is_refused(password: str | None) -> None:
    message = config_error(password=password)
    assert "no API key" in message
    assert "password" in message
    assert repr(CONN_ID) in message


@pytest.mark.parametrize(
    "password",
    ["tfy-SECRET abc123", "tfy-SECRET\tabc123", "tfy-SECRET\x00abc123", "tfy-SECRÉT-abc123"],
)
def test_malformed_api_key_is_refused_without_echoing_it(password: str) -> None:
    message = config_error(password=password)
    assert password not in message
    assert "SECRET" not in message
    assert "API key" in message
    assert "paste the key" in message


def test_api_key_is_stripped_and_sent_as_bearer_token() -> None:
    config = make_config(password=f"  {KEY}\n")
    assert config.api_key == KEY
    assert protocol.Gateway(config).retrieve(JOB_ID).headers["Authorization"] == f"Bearer {KEY}"


def test_key_is_kept_out_of_config_and_request_reprs(config: protocol.GatewayConfig) -> None:
    request = protocol.Gateway(config).retrieve(JOB_ID)
    for text in (repr(config), str(config), repr(request), str(request), request.target):
        assert KEY not in text
    assert request.target == f"GET {BASE}/fine_tuning/jobs/{JOB_ID}"


# --------------------------------------------------------------------------------------------
# Timeout and TLS verification
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param", "expected"),
    [
        ({}, None, 30.0),
        ({"timeout": 12}, None, 12.0),
        ({"timeout": 12.5}, None, 12.5),
        ({"timeout": "7.5"}, None, 7.5),
        ({"timeout": ""}, None, 30.0),
        ({"timeout": None}, None, 30.0),
        ({"timeout": 12}, 5, 5.0),
        ({"timeout": "abc"}, 5, 5.0),
        ({}, 0.5, 0.5),
        ({}, "3", 3.0),
    ],
)
def test_timeout_from_extra_and_hook_parameter(extra: dict[str, Any], param: Any, expected: float) -> None:
    config = make_config(extra=extra, timeout=param)
    assert config.timeout == expected
    assert isinstance(config.timeout, float)


INVALID_TIMEOUTS = [0, -1, -0.5, "abc", "0", "-3", math.nan, math.inf, "nan", "inf", True, [5]]


@pytest.mark.parametrize("value", INVALID_TIMEOUTS)
def test_invalid_timeout_parameter_is_refused(value: Any) -> None:
    message = config_error(timeout=value)
    assert "'timeout'" in message
    assert "positive number of seconds" in message
    assert repr(value) in message


@pytest.mark.parametrize("value", [v for v in INVALID_TIMEOUTS if v != 0])
def test_invalid_timeout_in_extra_is_refused(value: Any) -> None:
    message = config_error(extra={"timeout": value})
    assert "'timeout'" in message
    assert "positive number of seconds" in message


@pytest.mark.parametrize("value", [0, 0.0, False])
def test_falsy_timeout_in_extra_is_refused(value: Any) -> None:
    config_error(extra={"timeout": value})


def test_huge_integer_timeout_is_a_config_error() -> None:
    config_error(extra={"timeout": 10**400})


@pytest.mark.parametrize(
    ("timeout", "connect", "read"), [(30, 10.0, 30.0), (5, 5.0, 5.0), (120, 10.0, 120.0)]
)
def test_request_timeouts(timeout: float, connect: float, read: float) -> None:
    request = protocol.Gateway(make_config(timeout=timeout)).retrieve(JOB_ID)
    assert (request.connect_timeout, request.read_timeout) == (connect, read)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("/etc/ssl/certs/corp-ca.pem", "/etc/ssl/certs/corp-ca.pem"),
        ("  /etc/ssl/ca.pem ", "/etc/ssl/ca.pem"),
    ],
)
def test_verify_values_that_keep_tls_on(value: Any, expected: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="airflow_provider_tfy"):
        assert make_config(extra={"verify": value}).verify == expected
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_verify_defaults_to_true(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="airflow_provider_tfy"):
        assert make_config().verify is True
        assert make_config(extra={"verify": None}).verify is True
    assert not caplog.records


@pytest.mark.parametrize("value", [False, "false", "False", "no", "off", "0"])
def test_verify_off_is_honoured_with_a_warning(value: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="airflow_provider_tfy"):
        assert make_config(extra={"verify": value}).verify is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "verification off" in text
    assert "CA bundle" in text
    assert CONN_ID in text
    assert KEY not in text


@pytest.mark.parametrize("value", [5, 0.5, ["a"]])
def test_verify_of_the_wrong_type_is_refused(value: Any) -> None:
    message = config_error(extra={"verify": value})
    assert "'verify'" in message
    assert "true or false" in message


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_verify_means_default(value: str) -> None:
    assert make_config(extra={"verify": value}).verify is True


# --------------------------------------------------------------------------------------------
# x-tfy-* headers
# --------------------------------------------------------------------------------------------


def tfy_headers(request: protocol.Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower().startswith("x-tfy-")}


def test_base_headers(request_: protocol.Request) -> None:
    assert request_.method == "GET"
    assert request_.headers["Authorization"] == f"Bearer {KEY}"
    assert request_.headers["Accept"] == "application/json"
    assert request_.headers["User-Agent"].startswith("airflow-provider-tfy/")
    assert tfy_headers(request_) == {}


@pytest.mark.parametrize(
    ("name", "value", "header", "sent"),
    [
        ("provider_name", "openai-main", "x-tfy-provider-name", "openai-main"),
        ("provider_model", "gemini-2.0-flash-001", "x-tfy-provider-model", "gemini-2.0-flash-001"),
        ("vertex_storage_bucket_name", "bucket", "x-tfy-vertex-storage-bucket-name", "bucket"),
        ("file_purpose", "fine-tune", "x-tfy-file-purpose", "fine-tune"),
        ("metadata", {"team": "ml"}, "x-tfy-metadata", '{"team":"ml"}'),
        ("provider_name", "  openai-main ", "x-tfy-provider-name", "openai-main"),
        ("provider_name", "with\ttab", "x-tfy-provider-name", "with\ttab"),
    ],
)
def test_each_header_is_sent_only_when_set(name: str, value: Any, header: str, sent: str) -> None:
    from_extra = protocol.Gateway(make_config(extra={name: value})).retrieve(JOB_ID)
    assert tfy_headers(from_extra) == {header: sent}
    from_argument = protocol.Gateway(make_config()).retrieve(JOB_ID, protocol.Headers.parse({name: value}))
    assert tfy_headers(from_argument) == {header: sent}


@pytest.mark.parametrize("empty", ["", None])
def test_empty_header_values_count_as_unset(empty: Any) -> None:
    extra = {name: empty for name in HEADER_NAMES}
    assert tfy_headers(protocol.Gateway(make_config(extra=extra)).retrieve(JOB_ID)) == {}


def test_empty_metadata_object_is_unset() -> None:
    assert tfy_headers(protocol.Gateway(make_config(extra={"metadata": {}})).retrieve(JOB_ID)) == {}


def test_blank_header_value_counts_as_unset() -> None:
    assert tfy_headers(protocol.Gateway(make_config(extra={"provider_name": "   "})).retrieve(JOB_ID)) == {}


def test_arguments_override_the_extra() -> None:
    config = make_config(
        extra={"provider_name": "from-extra", "provider_model": "model-extra", "metadata": {"a": "x"}}
    )
    overrides = protocol.Headers.parse(
        {"provider_name": "from-arg", "provider_model": "", "metadata": {"b": "y"}}
    )
    headers = tfy_headers(protocol.Gateway(config).retrieve(JOB_ID, overrides))
    assert headers == {
        "x-tfy-provider-name": "from-arg",
        # An empty argument is unset, so the connection's default stays.
        "x-tfy-provider-model": "model-extra",
        # Metadata is replaced as a whole, not merged.
        "x-tfy-metadata": '{"b":"y"}',
    }
    # The config's own defaults are untouched.
    assert tfy_headers(protocol.Gateway(config).retrieve(JOB_ID))["x-tfy-provider-name"] == "from-extra"


@pytest.mark.parametrize(
    ("metadata", "sent"),
    [
        ({"team": "ml", "env": "prod"}, '{"env":"prod","team":"ml"}'),
        ('{"team": "ml",  "env": "prod"}', '{"env":"prod","team":"ml"}'),
        ({"owner": "zoë"}, '{"owner":"zo\\u00eb"}'),
        ({"note": "a\r\nX-Evil: 1"}, '{"note":"a\\r\\nX-Evil: 1"}'),
    ],
)
def test_metadata_is_compact_sorted_ascii_json(metadata: Any, sent: str) -> None:
    header = tfy_headers(protocol.Gateway(make_config(extra={"metadata": metadata})).retrieve(JOB_ID))
    assert header == {"x-tfy-metadata": sent}
    assert sent.isascii()
    assert "\r" not in sent
    assert "\n" not in sent
    assert json.loads(sent) == (json.loads(metadata) if isinstance(metadata, str) else metadata)


@pytest.mark.parametrize(
    ("metadata", "fragments"),
    [
        ({"a": 1}, ["strings to strings", "'a': int", '"team"']),
        ('{"a": 1}', ["strings to strings", "'a': int"]),
        ({"a": None}, ["strings to strings", "'a': NoneType"]),
        ({"a": {"b": "c"}}, ["strings to strings", "'a': dict"]),
        ({1: "a"}, ["strings to strings", "key that is not a string"]),
        ("[1, 2]", ["strings to strings", "list"]),
        ('"text"', ["strings to strings", "str"]),
        (["a"], ["strings to strings", "list"]),
        ("not json", ["not valid JSON", '"team"']),
        ("{'a': 'b'}", ["not valid JSON"]),
    ],
)
def test_bad_metadata_is_refused(metadata: Any, fragments: list[str]) -> None:
    message = config_error(extra={"metadata": metadata})
    assert "'metadata'" in message
    assert f"Connection {CONN_ID!r} extra" in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("openai\r\nX-Evil: 1", "control character"),
        ("openai\nmain", "control character"),
        ("openai\rmain", "control character"),
        ("openai\x00", "control character"),
        ("openai\x7f", "control character"),
        ("openaï", "non-ASCII"),
        ("模型", "non-ASCII"),
        (5, "must be a string"),
        (["a"], "must be a string"),
        ({"a": "b"}, "must be a string"),
    ],
)
@pytest.mark.parametrize(
    "name", ["provider_name", "provider_model", "vertex_storage_bucket_name", "file_purpose"]
)
def test_bad_header_values_are_refused(name: str, value: Any, fragment: str) -> None:
    message = config_error(extra={name: value})
    assert repr(name) in message
    assert fragment in message
    assert HEADER_NAMES[name] in message or "ASCII" in message
    argument_error = expect_error(TrueFoundryConfigError, protocol.Headers.parse, {name: value})
    assert str(argument_error).startswith("argument ")
    assert fragment in str(argument_error)


# --------------------------------------------------------------------------------------------
# Job id and request URL
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_id", "segment"),
    [
        ("ftjob-abc123", "ftjob-abc123"),
        ("../x", "..%2Fx"),
        ("../../admin", "..%2F..%2Fadmin"),
        ("a/b", "a%2Fb"),
        ("%2F", "%252F"),
        ("ftjob-é", "ftjob-%C3%A9"),
        ("任务", "%E4%BB%BB%E5%8A%A1"),
        ("a b", "a%20b"),
        ("a?b#c", "a%3Fb%23c"),
        ("a;b=c&d", "a%3Bb%3Dc%26d"),
        ("...", "..."),
        ("x" * 256, "x" * 256),
    ],
)
def test_job_id_is_one_percent_encoded_segment(job_id: str, segment: str) -> None:
    config = make_config("https://x.truefoundry.cloud/api/llm/")
    url = protocol.Gateway(config).retrieve(job_id).url
    assert url == f"https://x.truefoundry.cloud/api/llm/fine_tuning/jobs/{segment}"
    parts = urlsplit(url)
    assert not parts.query
    assert not parts.fragment
    assert parts.path.split("/")[:-1] == ["", "api", "llm", "fine_tuning", "jobs"]
    assert unquote(parts.path.split("/")[-1]) == job_id


def test_list_request(config: protocol.GatewayConfig) -> None:
    request = protocol.Gateway(config).list(limit=1)
    assert request.url == f"{BASE}/fine_tuning/jobs?limit=1"
    assert request.headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("job_id", "fragment"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("   ", "empty", id="blank"),
        pytest.param("\n", "empty", id="newline-only"),
        pytest.param(".", "not a job id", id="dot"),
        pytest.param("..", "not a job id", id="dotdot"),
        pytest.param(" ftjob-1", "spaces", id="leading-space"),
        pytest.param("ftjob-1 ", "spaces", id="trailing-space"),
        pytest.param("ftjob-1\n", "spaces", id="trailing-newline"),
        pytest.param("ft\njob", "control characters", id="inner-newline"),
        pytest.param("ft\x00job", "control characters", id="nul"),
        pytest.param("ft\x7fjob", "control characters", id="del"),
        pytest.param("x" * 257, "more than 256", id="257-chars"),
        pytest.param("x" * 10_000, "10000 characters long", id="10000-chars"),
        pytest.param(5, "must be a string, got int", id="int"),
        pytest.param(None, "must be a string, got NoneType", id="none"),
        pytest.param(["ftjob-1"], "must be a string, got list", id="list"),
        pytest.param(b"ftjob-1", "must be a string, got bytes", id="bytes"),
    ],
)
def test_unusable_job_id_is_a_config_error(job_id: Any, fragment: str) -> None:
    err = expect_error(TrueFoundryConfigError, validate_job_id, job_id)
    assert isinstance(err, AirflowFailException)
    message = str(err)
    assert "job_id" in message
    assert fragment in message
    assert "e.g. 'ftjob-abc123'" in message
    assert len(message) < 500
    # retrieve validates too: no request is ever built for such an id.
    expect_error(TrueFoundryConfigError, protocol.Gateway(make_config()).retrieve, job_id)


@pytest.mark.parametrize("job_id", ["ftjob-abc123", "a", "x" * 256, "ftjob with inner space", "a/b"])
def test_usable_job_id_is_returned_unchanged(job_id: str) -> None:
    assert validate_job_id(job_id) == job_id


# --------------------------------------------------------------------------------------------
# Response classification
# --------------------------------------------------------------------------------------------


def read(
    config: protocol.GatewayConfig,
    request: protocol.Request,
    status: int,
    payload: bytes,
    headers: dict[str, str] | None = None,
) -> FineTuningJob:
    return protocol.Gateway(config).read(request, protocol.Answer(status, headers or {}, payload), now=NOW)


def test_200_is_parsed(config: protocol.GatewayConfig, request_: protocol.Request) -> None:
    job = read(config, request_, 200, body(FULL_JOB))
    assert job.id == JOB_ID
    assert job.status == "succeeded"
    assert job.fine_tuned_model == FULL_JOB["fine_tuned_model"]


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors(status: int, config: protocol.GatewayConfig, request_: protocol.Request) -> None:
    payload = body({"error": {"message": "Invalid API key", "type": "auth"}})
    err = expect_error(TrueFoundryAuthError, read, config, request_, status, payload)
    assert isinstance(err, AirflowFailException)
    assert err.status_code == status
    assert err.body_excerpt == "Invalid API key"
    assert err.retryable is False
    message = str(err)
    assert f"HTTP {status}" in message
    assert "Invalid API key" in message
    assert f"connection {CONN_ID!r}" in message
    assert "Check the API key" in message
    if status == 403:
        assert repr(JOB_ID) in message


def test_404_is_job_not_found(config: protocol.GatewayConfig, request_: protocol.Request) -> None:
    err = expect_error(FineTuningJobNotFound, read, config, request_, 404, b'{"error": "no such job"}')
    assert isinstance(err, AirflowFailException)
    assert not isinstance(err, TrueFoundryAuthError)
    assert err.status_code == 404
    assert err.body_excerpt == "no such job"
    assert err.retryable is False
    message = str(err)
    assert repr(JOB_ID) in message
    assert "Check the job id" in message
    assert "/api/llm" in message


@pytest.mark.parametrize("status", [400, 409, 422])
def test_client_errors_are_not_retryable(
    status: int, config: protocol.GatewayConfig, request_: protocol.Request
) -> None:
    err = expect_error(TrueFoundryAPIError, read, config, request_, status, b'{"message": "bad header"}')
    assert type(err) is TrueFoundryAPIError
    assert err.status_code == status
    assert err.retryable is False
    assert err.body_excerpt == "bad header"
    assert f"HTTP {status}" in str(err)
    assert "Check the request's arguments" in str(err)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": " 2.5 "}, 2.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-5"}, 0.0),
        # 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT; NOW is that instant.
        ({"retry-after": "Tue, 14 Nov 2023 22:15:20 GMT"}, 120.0),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:20 GMT"}, 0.0),
        ({"retry-after": "Mon, 13 Nov 2023 22:13:20 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "1e999"}, None),
    ],
)
def test_transient_errors_are_retryable(
    status: int,
    headers: dict[str, str],
    retry_after: float | None,
    config: protocol.GatewayConfig,
    request_: protocol.Request,
) -> None:
    err = expect_error(TrueFoundryAPIError, read, config, request_, status, b"upstream hiccup", headers)
    assert type(err) is TrueFoundryAPIError
    assert not isinstance(err, AirflowFailException)
    assert err.retryable is True
    assert err.status_code == status
    assert err.retry_after == retry_after
    assert "usually temporary" in str(err)
    assert ("rate-limited" in str(err)) == (status == 429)


def test_retry_after_http_date_uses_the_clock_when_now_is_not_given() -> None:
    assert parse_retry_after("Tue, 14 Nov 2023 22:15:20 GMT", now=NOW - 30) == 150.0
    # A date in the past (relative to the real clock) waits not at all.
    assert parse_retry_after("Tue, 14 Nov 2023 22:15:20 GMT") == 0.0
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_errors_not_followed(
    status: int, config: protocol.GatewayConfig, request_: protocol.Request
) -> None:
    headers = {"location": "https://login.example.com/sso"}
    err = expect_error(TrueFoundryAPIError, read, config, request_, status, b"", headers)
    assert err.status_code == status
    assert err.retryable is False
    message = str(err)
    assert "redirect" in message
    assert f"HTTP {status}" in message
    assert "https://login.example.com/sso" in message
    assert "final gateway URL" in message


def test_redirect_location_echoing_the_key_is_redacted(
    config: protocol.GatewayConfig, request_: protocol.Request
) -> None:
    headers = {"Location": f"https://evil.example.com/?k={KEY}"}
    err = expect_error(TrueFoundryAPIError, read, config, request_, 302, b"", headers)
    assert "https://evil.example.com/?k=***" in str(err)


def test_body_excerpt_is_short_and_single_line(
    config: protocol.GatewayConfig, request_: protocol.Request
) -> None:
    payload = ("<html>\n<body>\r\n\t" + "upstream error " * 400 + "\n</body></html>").encode()
    err = expect_error(TrueFoundryAPIError, read, config, request_, 502, payload)
    assert 0 < len(err.body_excerpt) <= BODY_EXCERPT_CHARS
    assert err.body_excerpt.startswith("<html> <body> upstream error")
    for text in (err.body_excerpt, str(err)):
        assert "\n" not in text
        assert "\r" not in text
        assert "\t" not in text


@pytest.mark.parametrize(
    "payload",
    [
        f"invalid key {KEY}".encode(),
        body({"error": {"message": f"The key {KEY} is not valid"}}),
        body({"message": f"bad token: Bearer {KEY}"}),
        ("x" * 250 + f" {KEY}").encode(),
    ],
)
@pytest.mark.parametrize("status", [401, 404, 400, 500])
def test_body_echoing_the_key_is_redacted(
    payload: bytes, status: int, config: protocol.GatewayConfig, request_: protocol.Request
) -> None:
    err = expect_error(TrueFoundryAPIError, read, config, request_, status, payload)
    assert KEY not in err.body_excerpt
    assert "***" in err.body_excerpt


def test_key_straddling_the_excerpt_window_is_not_leaked_in_part() -> None:
    text = excerpt(" " * 1195 + KEY, KEY)
    assert KEY[:5] not in text


def test_excerpt_handles_invalid_utf8() -> None:
    assert excerpt(b"bad \xff\xfe bytes") == "bad \ufffd\ufffd bytes"


def test_non_json_200_is_a_retryable_response_error(
    config: protocol.GatewayConfig, request_: protocol.Request
) -> None:
    payload = f"<html>proxy error {KEY}</html>".encode()
    err = expect_error(TrueFoundryResponseError, read, config, request_, 200, payload)
    assert err.retryable is True
    assert not isinstance(err, AirflowFailException)
    assert "not JSON" in str(err)
    assert "Retrying may help" in str(err)


@pytest.mark.parametrize("payload", [b"", b'{"id": "ftjob-1", "status": "runn', b"\xff\xfe"])
def test_truncated_or_undecodable_200_is_retryable(
    payload: bytes, config: protocol.GatewayConfig, request_: protocol.Request
) -> None:
    err = expect_error(TrueFoundryResponseError, read, config, request_, 200, payload)
    assert err.retryable is True


@pytest.mark.parametrize("payload", [b"[]", b'"ftjob-1"', b"null", b"42", b'{"id": "ftjob-1"}'])
def test_json_of_the_wrong_shape_is_not_retryable(
    payload: bytes, config: protocol.GatewayConfig, request_: protocol.Request
) -> None:
    err = expect_error(TrueFoundryResponseError, read, config, request_, 200, payload)
    assert err.retryable is False
    assert "not a fine-tuning job" in str(err)


@pytest.mark.parametrize("status", [200, 500])
def test_deeply_nested_json_is_a_provider_error(
    status: int, config: protocol.GatewayConfig, request_: protocol.Request
) -> None:
    with pytest.raises(TrueFoundryError):
        read(config, request_, status, b"[" * 100_000)


def test_transport_error(request_: protocol.Request) -> None:
    refused = protocol.transport_error(request_, "ConnectionRefusedError: [Errno 111]")
    timed_out = protocol.transport_error(request_, "ReadTimeout", timed_out=True)
    for err in (refused, timed_out):
        assert isinstance(err, TrueFoundryConnectionError)
        assert err.retryable is True
        assert not isinstance(err, AirflowFailException)
        assert request_.url in str(err)
        assert KEY not in str(err)
    assert "could not be reached" in str(refused)
    assert "Errno 111" in str(refused)
    assert "did not answer in time" in str(timed_out)


def _api_error(status: int) -> TrueFoundryError:
    config = make_config()
    request = protocol.Gateway(config).retrieve(JOB_ID)
    with pytest.raises(TrueFoundryError) as info:
        check_status(config, request, protocol.Answer(status, {}, b""))
    return info.value


@pytest.mark.parametrize(
    ("make", "fails_task"),
    [
        pytest.param(lambda: _api_error(401), True, id="auth-401"),
        pytest.param(lambda: _api_error(403), True, id="auth-403"),
        pytest.param(lambda: _api_error(404), True, id="not-found"),
        pytest.param(lambda: FineTuningJobFailed("failed"), True, id="job-failed"),
        pytest.param(lambda: FineTuningJobCancelled("cancelled"), True, id="job-cancelled"),
        pytest.param(lambda: TrueFoundryConfigError("bad"), True, id="config"),
        pytest.param(lambda: _api_error(429), False, id="429"),
        pytest.param(lambda: _api_error(500), False, id="500"),
        pytest.param(lambda: _api_error(503), False, id="503"),
        pytest.param(lambda: TrueFoundryConnectionError("down"), False, id="connection"),
        pytest.param(lambda: TrueFoundryResponseError("garbled", retryable=True), False, id="response"),
    ],
)
def test_which_errors_fail_the_task_without_retries(make: Any, fails_task: bool) -> None:
    err = make()
    assert isinstance(err, TrueFoundryError)
    assert isinstance(err, AirflowFailException) is fails_task


def test_check_status_passes_2xx(config: protocol.GatewayConfig, request_: protocol.Request) -> None:
    for status in (200, 201, 204, 299):
        assert check_status(config, request_, protocol.Answer(status, {}, b"")) is None


def test_check_status_without_job_id_names_the_api(config: protocol.GatewayConfig) -> None:
    request = protocol.Gateway(config).list()  # a request for no one job: its job_id is None
    err = expect_error(FineTuningJobNotFound, check_status, config, request, protocol.Answer(404, {}, b""))
    assert "/fine_tuning/jobs was not found" in str(err)


# --------------------------------------------------------------------------------------------
# parse_job
# --------------------------------------------------------------------------------------------


def test_every_spec_field_is_parsed_and_typed() -> None:
    job = protocol.parse_job(dict(FULL_JOB))
    assert job == FineTuningJob(
        id=JOB_ID,
        status="succeeded",
        object="fine_tuning.job",
        model="gpt-4o-mini-2024-07-18",
        created_at=1_700_000_000,
        finished_at=1_700_003_600,
        fine_tuned_model="ft:gpt-4o-mini-2024-07-18:org::abc",
        organization_id="org-123",
        result_files=["file-result-1", "file-result-2"],
        validation_file="file-val",
        training_file="file-train",
        hyperparameters={"n_epochs": 3, "batch_size": "auto"},
        trained_tokens=123_456,
        integrations=[{"type": "wandb", "wandb": {"project": "p"}}],
        seed=42,
        estimated_finish=1_700_003_000,
        method={"type": "supervised"},
        metadata={"team": "ml-platform"},
        error=None,
    )
    assert job.raw == FULL_JOB


def test_nullable_fields_read_as_none() -> None:
    job = protocol.parse_job({**FULL_JOB, **dict.fromkeys(NULLABLE)})
    for name in NULLABLE:
        assert getattr(job, name) is None, name
    assert job.to_xcom() == {**FULL_JOB, **dict.fromkeys(NULLABLE)}


def test_minimal_job_has_defaults() -> None:
    job = protocol.parse_job({"id": "ftjob-1", "status": "queued"})
    assert job.id == "ftjob-1"
    assert job.status == "queued"
    assert job.result_files == []
    assert job.created_at is None
    assert job.error is None


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        pytest.param({"id": None}, ["'id'", "missing"], id="no-id"),
        pytest.param({"status": None}, ["'status'", "missing"], id="no-status"),
        pytest.param({"id": 5}, ["'id'", "integer", "non-empty string"], id="id-int"),
        pytest.param({"id": ""}, ["'id'", "non-empty string"], id="id-empty"),
        pytest.param({"status": ["running"]}, ["'status'", "array"], id="status-list"),
        pytest.param({"created_at": "x"}, ["'created_at'", "string", "expected integer"], id="created-str"),
        pytest.param(
            {"created_at": True}, ["'created_at'", "boolean", "expected integer"], id="created-bool"
        ),
        pytest.param({"created_at": 1.5}, ["'created_at'", "number", "expected integer"], id="created-float"),
        pytest.param({"created_at": None}, ["'created_at'", "null"], id="created-null"),
        pytest.param({"organization_id": None}, ["'organization_id'", "null"], id="org-null"),
        pytest.param({"model": 5}, ["'model'", "expected string"], id="model-int"),
        pytest.param({"result_files": ["a", 1]}, ["'result_files'", "array of strings"], id="files-mixed"),
        pytest.param({"result_files": "a"}, ["'result_files'", "expected array"], id="files-str"),
        pytest.param({"integrations": [1]}, ["'integrations'", "array of objects"], id="integrations"),
        pytest.param({"hyperparameters": []}, ["'hyperparameters'", "expected object"], id="hyper-list"),
        pytest.param({"metadata": {"a": 1}}, ["'metadata'", "strings to strings"], id="metadata-int"),
        pytest.param({"metadata": "x"}, ["'metadata'", "expected object"], id="metadata-str"),
        pytest.param({"object": "list"}, ["'object'", "fine_tuning.job", "4 characters"], id="object-list"),
        pytest.param({"trained_tokens": "12"}, ["'trained_tokens'", "expected integer"], id="tokens-str"),
        pytest.param({"seed": False}, ["'seed'", "boolean"], id="seed-bool"),
    ],
)
def test_wrong_shapes_are_response_errors(changes: dict[str, Any], fragments: list[str]) -> None:
    data = {**FULL_JOB, **changes}
    data = {k: v for k, v in data.items() if not (k in ("id", "status") and v is None)}
    err = expect_error(TrueFoundryResponseError, protocol.parse_job, data)
    assert err.retryable is False
    message = str(err)
    assert "not a fine-tuning job" in message
    assert "base URL" in message
    for fragment in fragments:
        assert fragment in message


def test_status_null_is_refused() -> None:
    err = expect_error(TrueFoundryResponseError, protocol.parse_job, {**FULL_JOB, "status": None})
    assert "'status'" in str(err)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ([], "array"),
        ([FULL_JOB], "array"),
        ("ftjob-1", "string"),
        (None, "null"),
        (42, "integer"),
        (1.5, "number"),
    ],
)
def test_bodies_that_are_not_objects(data: Any, kind: str) -> None:
    err = expect_error(TrueFoundryResponseError, protocol.parse_job, data)
    assert f"JSON {kind}, not an object" in str(err)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("created_at", 1_700_000_000_000, 1_700_000_000),
        ("created_at", 1_700_000_000_999, 1_700_000_000),
        ("finished_at", 1_700_003_600_500, 1_700_003_600),
        ("estimated_finish", 1_700_003_000_000, 1_700_003_000),
        ("created_at", 1_700_000_000, 1_700_000_000),
        ("created_at", 99_999_999_999, 99_999_999_999),
        ("created_at", 100_000_000_000, 100_000_000),
        ("created_at", 0, 0),
    ],
)
def test_millisecond_timestamps_become_seconds(name: str, value: int, expected: int) -> None:
    data = {**FULL_JOB, name: value}
    job = protocol.parse_job(data)
    assert getattr(job, name) == expected
    assert job.to_xcom()[name] == expected
    assert job.raw[name] == value
    assert {k: v for k, v in job.to_xcom().items() if k != name} == {
        k: v for k, v in data.items() if k != name
    }


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            {"code": "invalid_training_file", "message": "Bad line 3", "param": "training_file"},
            FineTuningJobError(code="invalid_training_file", message="Bad line 3", param="training_file"),
        ),
        ({"message": "Out of quota"}, FineTuningJobError(message="Out of quota")),
        ({"code": 500, "message": ""}, FineTuningJobError(code="500")),
        ("boom", FineTuningJobError(message="boom")),
        (None, None),
        ("", None),
        ({}, None),
        ({"code": None, "message": None, "param": None}, None),
        (5, None),
        (["x"], None),
    ],
)
def test_error_object(error: Any, expected: FineTuningJobError | None) -> None:
    job = protocol.parse_job({**FULL_JOB, "status": "failed", "error": error})
    assert job.error == expected
    assert job.to_xcom()["error"] == error


def test_absent_error_is_none() -> None:
    assert protocol.parse_job(dict(FULL_JOB)).error is None


def test_unknown_fields_are_kept_in_raw_and_xcom() -> None:
    data = {**FULL_JOB, "x_vendor": {"nested": [1, 2.5, None, True]}, "user_provided_suffix": "s"}
    job = protocol.parse_job(data)
    assert job.raw["x_vendor"] == {"nested": [1, 2.5, None, True]}
    xcom = job.to_xcom()
    assert xcom["x_vendor"] == {"nested": [1, 2.5, None, True]}
    assert xcom["user_provided_suffix"] == "s"
    assert json.loads(json.dumps(xcom)) == data


def test_to_xcom_is_a_copy() -> None:
    job = protocol.parse_job({**FULL_JOB, "created_at": 1_700_000_000_000})
    xcom = job.to_xcom()
    xcom["id"] = "changed"
    xcom["created_at"] = 1
    assert job.raw["id"] == JOB_ID
    assert job.to_xcom()["created_at"] == 1_700_000_000


def test_status_compares_equal_to_plain_strings() -> None:
    job = protocol.parse_job(dict(FULL_JOB))
    assert job.status == "succeeded"
    assert job.status == FineTuningJobStatus.SUCCEEDED
    assert type(job.to_xcom()["status"]) is str


# --------------------------------------------------------------------------------------------
# Retry policy
# --------------------------------------------------------------------------------------------


def transient(retry_after: float | None = None, status: int = 503) -> TrueFoundryAPIError:
    return TrueFoundryAPIError("transient", status_code=status, retry_after=retry_after, retryable=True)


def test_default_policy() -> None:
    policy = protocol.RetryPolicy.from_params()
    assert policy == protocol.RetryPolicy()
    assert (policy.max_retries, policy.retry_delay, policy.max_delay) == (8, 1.0, 30.0)


@pytest.mark.parametrize(
    ("max_retries", "retry_delay", "expected"),
    [
        (3, 2, (3, 2.0, 30.0)),
        (0, 0, (0, 0.0, 30.0)),
        (None, 0.5, (8, 0.5, 30.0)),
        (5, None, (5, 1.0, 30.0)),
        (2, 60, (2, 60.0, 60.0)),
    ],
)
def test_from_params(max_retries: Any, retry_delay: Any, expected: tuple[int, float, float]) -> None:
    policy = protocol.RetryPolicy.from_params(max_retries=max_retries, retry_delay=retry_delay)
    assert (policy.max_retries, policy.retry_delay, policy.max_delay) == expected
    assert isinstance(policy.retry_delay, float)


@pytest.mark.parametrize("value", [-1, True, False, 1.5, 3.0, "3", [3]])
def test_from_params_refuses_bad_max_retries(value: Any) -> None:
    err = expect_error(TrueFoundryConfigError, protocol.RetryPolicy.from_params, max_retries=value)
    assert "max_retries" in str(err)
    assert "whole number 0 or more" in str(err)
    assert repr(value) in str(err)


@pytest.mark.parametrize("value", [-1, -0.1, math.nan, math.inf, True, "1", [1]])
def test_from_params_refuses_bad_retry_delay(value: Any) -> None:
    err = expect_error(TrueFoundryConfigError, protocol.RetryPolicy.from_params, retry_delay=value)
    assert "retry_delay" in str(err)
    assert "seconds 0 or more" in str(err)


@pytest.mark.parametrize(
    ("retry_number", "step"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0), (7, 30.0), (8, 30.0), (1000, 30.0)],
)
def test_backoff_doubles_up_to_the_cap_with_bounded_jitter(retry_number: int, step: float) -> None:
    policy = protocol.RetryPolicy()
    assert policy.backoff(retry_number, rng=lambda: 0.0) == step / 2
    assert policy.backoff(retry_number, rng=lambda: 1.0) == step
    assert policy.backoff(retry_number, rng=lambda: 0.5) == 0.75 * step
    for _ in range(50):
        assert step / 2 <= policy.backoff(retry_number) <= step


def test_backoff_scales_with_retry_delay() -> None:
    policy = protocol.RetryPolicy.from_params(retry_delay=5)
    assert [policy.backoff(n, rng=lambda: 1.0) for n in range(1, 6)] == [5.0, 10.0, 20.0, 30.0, 30.0]


# Failures no retry can mend: refused arguments or key, an unknown job, a wrong shape, not ours.
NOT_RETRYABLE = [
    TrueFoundryAPIError("bad request", status_code=400),
    TrueFoundryAuthError("no", status_code=401),
    FineTuningJobNotFound("gone", status_code=404),
    TrueFoundryConfigError("bad config"),
    TrueFoundryResponseError("wrong shape"),
    ValueError("not ours"),
    RuntimeError("not ours"),
]


@pytest.mark.parametrize("error", NOT_RETRYABLE)
def test_not_retryable_errors_are_not_retried(error: BaseException) -> None:
    policy = protocol.RetryPolicy()
    assert policy.should_retry(1, error) is False
    assert policy.wait_before_retry(1, error, rng=lambda: 0.0) is None


@pytest.mark.parametrize(
    "error",
    [
        transient(),
        transient(status=429),
        TrueFoundryConnectionError("down"),
        TrueFoundryResponseError("x", retryable=True),
    ],
)
def test_retryable_errors_back_off(error: TrueFoundryError) -> None:
    policy = protocol.RetryPolicy(max_retries=3)
    assert policy.wait_before_retry(1, error, rng=lambda: 0.0) == 0.5
    assert policy.wait_before_retry(3, error, rng=lambda: 1.0) == 4.0
    assert policy.should_retry(4, error) is False
    assert policy.wait_before_retry(4, error, rng=lambda: 0.0) is None


def test_no_retries_when_max_retries_is_zero() -> None:
    assert protocol.RetryPolicy(max_retries=0).wait_before_retry(1, transient(), rng=lambda: 0.0) is None


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(0.0, 0.0), (5.0, 5.0), (59.5, 59.5), (60.0, 60.0), (60.01, None), (3600.0, None)],
)
def test_retry_after_within_a_call(retry_after: float, expected: float | None) -> None:
    policy = protocol.RetryPolicy()
    assert policy.wait_before_retry(1, transient(retry_after), rng=lambda: 0.0) == expected
    assert policy.should_retry(1, transient(retry_after)) is (expected is not None)


def test_default_policy_rides_out_a_one_minute_blip() -> None:
    policy = protocol.RetryPolicy.from_params()
    waits = [
        policy.wait_before_retry(n, transient(), rng=lambda: 0.0) for n in range(1, policy.max_retries + 1)
    ]
    assert None not in waits
    assert sum(waits) >= 60.0
    assert policy.wait_before_retry(policy.max_retries + 1, transient(), rng=lambda: 0.0) is None
    # ... but one call never blocks for more than a few minutes.
    worst = sum(policy.backoff(n, rng=lambda: 1.0) for n in range(1, policy.max_retries + 1))
    assert worst <= 180.0


# A long wait's transient failures are first retried like a call's (backoff within the call's
# retries: wait_before_retry); after that, or for a Retry-After too long for a call, the wait falls
# back to its poll interval, or a longer Retry-After honoured in full (wait_after_failed_poll).
@pytest.mark.parametrize(
    ("failures", "retry_after", "expected"),
    [
        (1, None, 0.5),
        (8, None, 15.0),
        (1, 10.0, 10.0),
    ],
)
def test_a_waits_first_failures_are_retried_like_a_call(
    failures: int, retry_after: float | None, expected: float
) -> None:
    policy = protocol.RetryPolicy()
    assert policy.wait_before_retry(failures, transient(retry_after), rng=lambda: 0.0) == expected


@pytest.mark.parametrize(
    ("failures", "retry_after", "poll", "expected"),
    [
        (9, None, 60.0, 60.0),
        (50, None, 60.0, 60.0),
        (9, 45.0, 30.0, 45.0),
        (9, 10.0, 30.0, 30.0),
        (1, 600.0, 60.0, 600.0),
        (1, 600.0, 900.0, 900.0),
        (3, 3600.0, 60.0, 3600.0),
    ],
)
def test_a_wait_falls_back_to_its_poll_interval_or_a_longer_retry_after(
    failures: int, retry_after: float | None, poll: float, expected: float
) -> None:
    policy = protocol.RetryPolicy()
    # Past the call's retries, or a Retry-After longer than a call honours: no retry within the call ...
    assert policy.wait_before_retry(failures, transient(retry_after), rng=lambda: 0.0) is None
    # ... so the wait polls again after its interval, or the longer Retry-After in full.
    assert protocol.wait_after_failed_poll(transient(retry_after), poll) == expected


@pytest.mark.parametrize("error", NOT_RETRYABLE)
def test_a_wait_re_raises_a_failure_no_retry_can_mend(error: BaseException) -> None:
    with pytest.raises(type(error)) as info:
        protocol.wait_after_failed_poll(error, 60.0)
    assert info.value is error


# --------------------------------------------------------------------------------------------
# tenacity arguments: the one retry policy driving tenacity.Retrying
# --------------------------------------------------------------------------------------------


class Attempts:
    """A call that fails with the given errors in turn, then answers ``"done"``; sleeps are recorded."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.sleeps: list[float] = []

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def retrying(attempts: Attempts, policy: protocol.RetryPolicy, **kwargs: Any) -> Any:
    import tenacity

    return tenacity.Retrying(sleep=attempts.sleep, **policy.tenacity_args(**kwargs))(attempts)


def test_tenacity_args_retry_a_retryable_error_up_to_max_retries_then_reraise_it() -> None:
    policy = protocol.RetryPolicy(max_retries=2, retry_delay=0.0)
    recovers = Attempts(transient(), transient())
    assert retrying(recovers, policy) == "done"
    assert recovers.calls == 3
    errors = [transient(), transient(), transient(), transient()]
    attempts = Attempts(*errors)
    with pytest.raises(TrueFoundryAPIError) as info:
        retrying(attempts, policy)
    assert info.value is errors[2]  # the error itself, not tenacity's RetryError
    assert attempts.calls == 3  # the first attempt and max_retries retries
    assert attempts.sleeps == [0.0, 0.0]


def test_tenacity_args_do_not_retry_what_no_retry_can_mend() -> None:
    error = TrueFoundryAuthError("no", status_code=401)
    attempts = Attempts(error)
    with pytest.raises(TrueFoundryAuthError) as info:
        retrying(attempts, protocol.RetryPolicy(max_retries=3, retry_delay=0.0))
    assert info.value is error
    assert attempts.calls == 1


def test_tenacity_args_sleep_the_backoff_or_the_retry_after() -> None:
    attempts = Attempts(transient(retry_after=2.5), transient())
    assert retrying(attempts, protocol.RetryPolicy(max_retries=3, retry_delay=0.0)) == "done"
    assert attempts.sleeps == [2.5, 0.0]


def test_tenacity_args_do_not_repeat_a_request_the_gateway_may_have_applied() -> None:
    policy = protocol.RetryPolicy(max_retries=3, retry_delay=0.0)
    applied = TrueFoundryConnectionError("reset", request_sent=True)
    attempts = Attempts(applied)
    with pytest.raises(TrueFoundryConnectionError) as info:
        retrying(attempts, policy, safe_to_repeat=False)
    assert info.value is applied
    assert attempts.calls == 1
    # One that certainly never reached the gateway is repeated, and so is any safe to repeat.
    never_sent = Attempts(TrueFoundryConnectionError("refused", request_sent=False))
    assert retrying(never_sent, policy, safe_to_repeat=False) == "done"
    assert never_sent.calls == 2
    safe = Attempts(TrueFoundryConnectionError("reset", request_sent=True))
    assert retrying(safe, policy) == "done"
    assert safe.calls == 2


def test_tenacity_args_stop_instead_of_sleeping_past_the_deadline() -> None:
    import time

    policy = protocol.RetryPolicy(max_retries=8, retry_delay=0.0)
    error = transient(retry_after=30.0)
    attempts = Attempts(error, transient())
    with pytest.raises(TrueFoundryAPIError) as info:
        retrying(attempts, policy, deadline=time.time() + 10.0)
    assert info.value is error
    assert attempts.calls == 1
    assert attempts.sleeps == []
    # A sleep that ends before the deadline is slept.
    in_time = Attempts(transient(retry_after=1.0))
    assert retrying(in_time, policy, deadline=time.time() + 10.0) == "done"
    assert in_time.sleeps == [1.0]


def test_tenacity_args_suit_async_retrying_too() -> None:
    import asyncio

    import tenacity

    policy = protocol.RetryPolicy(max_retries=2, retry_delay=0.0)
    errors = [transient(), transient(), transient()]
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        raise errors[calls - 1]

    async def no_sleep(seconds: float) -> None:
        return None

    async def run() -> str:
        return await tenacity.AsyncRetrying(sleep=no_sleep, **policy.tenacity_args())(call)

    with pytest.raises(TrueFoundryAPIError) as info:
        asyncio.run(run())
    assert info.value is errors[2]
    assert calls == 3
