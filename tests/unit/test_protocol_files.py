"""Unit tests of the file object, the JSONL check, list pages and cancel's answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_tfy import protocol
from airflow_provider_tfy.exceptions import (
    FineTuningJobNotFound,
    TrueFoundryAPIError,
    TrueFoundryAuthError,
    TrueFoundryConfigError,
    TrueFoundryResponseError,
)
from airflow_provider_tfy.models import TrueFoundryFile
from airflow_provider_tfy.protocol.files import MAX_FILE_BYTES
from airflow_provider_tfy.protocol.objects import parse_file

KEY = "tfy-SECRET-abc123"
FILE: dict[str, Any] = {
    "id": "file-abc",
    "object": "file",
    "bytes": 120,
    "created_at": 1_700_000_000,
    "filename": "train.jsonl",
    "purpose": "fine-tune",
    "status": "processed",
    "expires_at": None,
    "status_details": None,
}


@pytest.fixture
def config() -> protocol.GatewayConfig:
    return protocol.gateway_config(
        "tfy", host="https://gw.example.com", password=KEY, extra={"provider_name": "p"}
    )


def encoded(data: Any) -> bytes:
    return json.dumps(data).encode()


def read(
    config: protocol.GatewayConfig,
    request: protocol.Request[Any],
    status: int,
    headers: dict[str, str],
    body: bytes,
) -> Any:
    """What :meth:`Gateway.read` makes of this answer to ``request``."""
    return protocol.Gateway(config).read(request, protocol.Answer(status, headers, body))


# --------------------------------------------------------------------------------------------
# The file object
# --------------------------------------------------------------------------------------------


def test_parse_file_reads_every_field_and_keeps_unknown_ones() -> None:
    data = {**FILE, "expires_at": 1_800_000_000, "status_details": "ok", "new_field": [1]}
    file = parse_file(data)
    assert file == TrueFoundryFile(
        id="file-abc",
        object="file",
        bytes=120,
        created_at=1_700_000_000,
        filename="train.jsonl",
        purpose="fine-tune",
        status="processed",
        expires_at=1_800_000_000,
        status_details="ok",
    )
    assert file.raw == data
    assert file.to_xcom() == data


def test_parse_file_needs_only_an_id() -> None:
    assert parse_file({"id": "file-1"}) == TrueFoundryFile(id="file-1")


def test_parse_file_normalises_millisecond_timestamps_for_xcom_too() -> None:
    file = parse_file({**FILE, "created_at": 1_700_000_000_123})
    assert file.created_at == 1_700_000_000
    assert file.to_xcom()["created_at"] == 1_700_000_000
    assert file.raw["created_at"] == 1_700_000_000_123


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([FILE], "the body is a JSON array, not an object"),
        ({**FILE, "id": None}, "field 'id' is missing"),
        ({k: v for k, v in FILE.items() if k != "id"}, "field 'id' is missing"),
        ({**FILE, "id": 5}, "field 'id' is integer, not a non-empty string"),
        ({**FILE, "id": ""}, "field 'id' is string, not a non-empty string"),
        ({**FILE, "bytes": "120"}, "field 'bytes' is string, expected integer"),
        ({**FILE, "bytes": True}, "field 'bytes' is boolean, expected integer"),
        ({**FILE, "created_at": 1.5}, "field 'created_at' is number, expected integer"),
        ({**FILE, "filename": ["a"]}, "field 'filename' is array, expected string"),
        ({**FILE, "object": None}, "field 'object' is null"),
        ({**FILE, "object": "fine_tuning.job"}, "field 'object' is not 'file' (15 characters)"),
    ],
)
def test_parse_file_names_what_is_wrong(data: Any, fragment: str) -> None:
    with pytest.raises(TrueFoundryResponseError) as info:
        parse_file(data)
    assert fragment in str(info.value)
    assert "is not a file object" in str(info.value)
    assert not info.value.retryable


def test_read_file_response_classifies_like_every_answer(config: protocol.GatewayConfig) -> None:
    request = protocol.Gateway(config).upload(filename="t.jsonl", purpose="fine-tune")
    assert read(config, request, 200, {}, encoded(FILE)).id == "file-abc"
    with pytest.raises(TrueFoundryAuthError):
        read(config, request, 401, {}, b"{}")
    with pytest.raises(FineTuningJobNotFound, match="/files was not found"):
        read(config, request, 404, {}, b"")
    with pytest.raises(TrueFoundryAPIError) as info:
        read(config, request, 503, {"retry-after": "2"}, b"busy")
    assert info.value.retryable
    assert info.value.retry_after == 2.0
    with pytest.raises(TrueFoundryResponseError) as garbled:
        read(config, request, 200, {}, b"<html>")
    assert garbled.value.retryable


def test_read_file_response_redacts_an_echoed_key(config: protocol.GatewayConfig) -> None:
    request = protocol.Gateway(config).upload(filename="t.jsonl", purpose="fine-tune")
    file = read(config, request, 200, {}, encoded({**FILE, "status_details": f"k={KEY}"}))
    assert KEY not in repr(file)
    assert KEY not in json.dumps(file.to_xcom())


# --------------------------------------------------------------------------------------------
# The JSONL check
# --------------------------------------------------------------------------------------------


def check(data: bytes, *, chunk: int = 7, max_bytes: int = MAX_FILE_BYTES) -> protocol.JsonlValidator:
    validator = protocol.JsonlValidator("train.jsonl", max_bytes=max_bytes)
    for start in range(0, len(data), chunk):
        validator.feed(data[start : start + chunk])
    validator.close()
    return validator


def refusal(data: bytes, **kwargs: Any) -> str:
    with pytest.raises(TrueFoundryConfigError) as info:
        check(data, **kwargs)
    assert "'train.jsonl'" in str(info.value)
    return str(info.value)


GOOD = b'{"messages": [{"role": "user", "content": "hi\\nthere"}]}\n{"a": 1}\r\n{"b": "\xc3\xa9"}'


@pytest.mark.parametrize("chunk", [1, 2, 5, 64, 10_000])
def test_valid_jsonl_passes_whatever_the_chunking(chunk: int) -> None:
    validator = check(GOOD, chunk=chunk)
    assert (validator.lines, validator.size) == (3, len(GOOD))
    assert check(GOOD + b"\n", chunk=chunk).lines == 3


def test_an_empty_file_is_refused() -> None:
    assert "is empty" in refusal(b"")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"a": 1}\n{"a": 2}\n{"a": \n', "1 bad line(s) — line 3: not valid JSON"),
        (b'{"a": 1}\n[1, 2]\n', "line 2: a JSON array, not an object"),
        (b'"text"\n', "line 1: a JSON string, not an object"),
        (b"null\n", "line 1: a JSON null, not an object"),
        (b'{"a": 1}\n\n{"a": 2}\n', "line 2: blank line"),
        (b'{"a": "\xff"}\n', "line 1: not UTF-8 text"),
        (b"{'a': 1}", "line 1: not valid JSON"),
    ],
)
def test_a_bad_line_is_named_by_number(data: bytes, fragment: str) -> None:
    message = refusal(data)
    assert fragment in message
    assert "validate=False" in message


def test_only_the_first_bad_lines_are_named_but_all_are_counted() -> None:
    data = b"".join(b"x\n" if i % 2 else b"{}\n" for i in range(1, 21))
    message = refusal(data, chunk=3)
    assert "10 bad line(s)" in message
    assert "line 1: not valid JSON; line 3:" in message
    assert "line 9: not valid JSON" in message
    assert "line 11" not in message
    assert "(and 5 more)" in message


def test_a_file_over_the_limit_is_refused_and_reading_can_stop() -> None:
    validator = protocol.JsonlValidator("big.jsonl", max_bytes=10)
    validator.feed(b'{"a": 1}\n')
    assert not validator.too_large
    validator.feed(b'{"b"')
    assert validator.too_large
    with pytest.raises(TrueFoundryConfigError, match="is over 0 MB, the gateway's limit"):
        validator.close()


def test_the_limit_is_512_mib() -> None:
    assert MAX_FILE_BYTES == 512 * 1024 * 1024
    validator = protocol.JsonlValidator("t")
    validator.size = MAX_FILE_BYTES + 1
    with pytest.raises(TrueFoundryConfigError, match="is over 512 MB"):
        validator.close()


# --------------------------------------------------------------------------------------------
# List pages and cancel
# --------------------------------------------------------------------------------------------


def job(job_id: str, status: str = "running", **extra: Any) -> dict[str, Any]:
    return {"id": job_id, "status": status, "object": "fine_tuning.job", **extra}


def test_read_jobs_page_returns_the_jobs_and_has_more(config: protocol.GatewayConfig) -> None:
    request = protocol.Gateway(config).list(2)
    page = {
        "object": "list",
        "data": [job("ftjob-2"), job("ftjob-1", error={"message": KEY})],
        "has_more": True,
    }
    jobs, has_more = read(config, request, 200, {}, encoded(page))
    assert [j.id for j in jobs] == ["ftjob-2", "ftjob-1"]
    assert has_more is True
    assert KEY not in repr(jobs)
    assert KEY not in json.dumps(jobs[1].to_xcom())
    assert read(config, request, 200, {}, encoded({"data": []})) == ([], False)


@pytest.mark.parametrize(
    ("page", "fragment"),
    [
        ([], "it has a JSON array"),
        ({"object": "list"}, "it has no 'data' array"),
        ({"data": {"id": "x"}}, "it has no 'data' array"),
        ({"data": [], "has_more": "yes"}, "'has_more' is string, not a boolean"),
        ({"data": [{"status": "running"}]}, "field 'id' is missing"),
    ],
)
def test_read_jobs_page_refuses_what_is_not_a_list(
    config: protocol.GatewayConfig, page: Any, fragment: str
) -> None:
    request = protocol.Gateway(config).list(2)
    with pytest.raises(TrueFoundryResponseError) as info:
        read(config, request, 200, {}, encoded(page))
    assert fragment in str(info.value)


def test_read_cancel_response_returns_the_job(config: protocol.GatewayConfig) -> None:
    request = protocol.Gateway(config).cancel("ftjob-1")
    cancelled = read(config, request, 200, {}, encoded(job("ftjob-1", "cancelled")))
    assert cancelled.status == "cancelled"


@pytest.mark.parametrize("status", [404, 405])
def test_a_gateway_that_cannot_cancel_says_so(config: protocol.GatewayConfig, status: int) -> None:
    request = protocol.Gateway(config).cancel("ftjob-1")
    with pytest.raises(TrueFoundryAPIError) as info:
        read(config, request, status, {}, encoded({"error": {"message": "Method Not Allowed"}}))
    message = str(info.value)
    assert "this gateway cannot cancel fine-tuning jobs" in message
    assert f"HTTP {status}" in message
    assert "Method Not Allowed" in message
    assert ("does not know job 'ftjob-1'" in message) is (status == 404)
    assert info.value.status_code == status
    assert not info.value.retryable
    assert isinstance(info.value, FineTuningJobNotFound) is (status == 404)


def test_other_cancel_errors_are_classified_as_usual(config: protocol.GatewayConfig) -> None:
    request = protocol.Gateway(config).cancel("ftjob-1")
    with pytest.raises(TrueFoundryAPIError) as info:
        read(config, request, 400, {}, b'{"error": {"message": "already done"}}')
    assert "already done" in str(info.value)
    assert not info.value.retryable


def test_next_page_after_follows_the_last_job_and_refuses_a_repeated_page() -> None:
    jobs = [protocol.parse_job(job("ftjob-2")), protocol.parse_job(job("ftjob-1"))]
    assert protocol.next_page_after(jobs, True, None) == "ftjob-1"
    assert protocol.next_page_after(jobs, True, "ftjob-3") == "ftjob-1"
    assert protocol.next_page_after(jobs, False, None) is None
    assert protocol.next_page_after([], True, "ftjob-3") is None
    with pytest.raises(TrueFoundryResponseError, match="answered the same page of fine-tuning jobs again"):
        protocol.next_page_after(jobs, True, "ftjob-1")
