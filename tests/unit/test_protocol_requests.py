"""Unit tests of the requests added for the whole fine-tuning API: list, create, cancel, upload."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from airflow_provider_tfy import protocol
from airflow_provider_tfy.exceptions import TrueFoundryConfigError
from airflow_provider_tfy.header_spec import HEADER_NAMES

KEY = "tfy-SECRET-abc123"
BASE = "https://gw.example.com/api/llm"


def make_config(extra: dict[str, Any] | None = None) -> protocol.GatewayConfig:
    return protocol.gateway_config("tfy", host=BASE, password=KEY, extra=extra or {})


def config_error(func: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(TrueFoundryConfigError) as info:
        func(*args, **kwargs)
    assert KEY not in str(info.value)
    return str(info.value)


# --------------------------------------------------------------------------------------------
# Header arguments, declared once
# --------------------------------------------------------------------------------------------


def test_header_args_declares_exactly_the_five_headers() -> None:
    assert set(protocol.HeaderArgs.__annotations__) == set(HEADER_NAMES)
    assert protocol.HeaderArgs.__total__ is False


def test_header_args_validate_like_the_connections_extra() -> None:
    options = protocol.Headers.from_args({"provider_name": " openai-main ", "metadata": '{"a": "b"}'}, "m")
    assert options == protocol.Headers(provider_name="openai-main", metadata={"a": "b"})
    assert protocol.Headers.from_args({}, "m") == protocol.Headers()


def test_header_args_names_the_method_and_the_arguments_it_takes() -> None:
    with pytest.raises(TypeError) as info:
        protocol.Headers.from_args({"provider": "x", "provider_name": "y"}, "upload_file")
    message = str(info.value)
    assert "upload_file()" in message
    assert "'provider'" in message
    assert "provider_name" in message
    assert "vertex_storage_bucket_name" in message


def test_header_args_refuses_a_bad_value_as_config_error() -> None:
    assert "control character" in config_error(protocol.Headers.from_args, {"provider_name": "a\r\nb"}, "m")


# --------------------------------------------------------------------------------------------
# List
# --------------------------------------------------------------------------------------------


def query(request: protocol.Request) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(request.url).query)


def test_list_request_keeps_the_old_call_form() -> None:
    request = protocol.Gateway(make_config()).list(limit=1)
    assert request.method == "GET"
    assert request.url == f"{BASE}/fine_tuning/jobs?limit=1"
    assert request.safe_to_repeat


def test_list_request_sends_limit_after_and_the_metadata_filter_as_openai_writes_it() -> None:
    request = protocol.Gateway(make_config()).list(
        100, after="ftjob-9", job_metadata={"team": "ml", "run": "a b&c"}
    )
    assert urlsplit(request.url).path == "/api/llm/fine_tuning/jobs"
    assert query(request) == [
        ("limit", "100"),
        ("after", "ftjob-9"),
        ("metadata[run]", "a b&c"),
        ("metadata[team]", "ml"),
    ]


def test_list_request_sends_header_overrides() -> None:
    request = protocol.Gateway(make_config({"provider_name": "from-extra"})).list(
        5, headers=protocol.Headers(provider_name="arg")
    )
    assert request.headers["x-tfy-provider-name"] == "arg"
    assert request.headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("limit", [0, 101, -1, 1.5, "20", True, None])
def test_list_request_refuses_a_page_size_outside_1_to_100(limit: Any) -> None:
    assert "page_size must be a whole number from 1 to 100" in config_error(
        protocol.Gateway(make_config()).list, limit
    )


@pytest.mark.parametrize("bad", [{"a": 1}, {1: "a"}, {"": "a"}, ["a"], "a=b"])
def test_list_request_refuses_a_filter_that_is_not_strings(bad: Any) -> None:
    assert "job_metadata must map" in config_error(protocol.Gateway(make_config()).list, 20, job_metadata=bad)


def test_list_request_checks_the_after_cursor_like_a_job_id() -> None:
    assert "job_id" in config_error(protocol.Gateway(make_config()).list, 20, after=" x ")


# --------------------------------------------------------------------------------------------
# Create and cancel
# --------------------------------------------------------------------------------------------


def test_create_request_posts_the_json_body_and_is_not_safe_to_repeat() -> None:
    body = {"model": "m", "training_file": "file-1", "metadata": {"k": "é"}}
    request = protocol.Gateway(make_config()).create(body, protocol.Headers(provider_name="p"))
    assert request.method == "POST"
    assert request.url == f"{BASE}/fine_tuning/jobs"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["x-tfy-provider-name"] == "p"
    assert request.body is not None
    assert json.loads(request.body) == body
    assert not request.safe_to_repeat
    assert KEY not in repr(request)


def test_cancel_request_posts_to_the_jobs_cancel_path_and_may_be_repeated() -> None:
    request = protocol.Gateway(make_config()).cancel("ftjob-a/../b")
    assert request.method == "POST"
    assert request.url == f"{BASE}/fine_tuning/jobs/ftjob-a%2F..%2Fb/cancel"
    assert request.body is None
    assert request.safe_to_repeat


def test_cancel_request_checks_the_job_id() -> None:
    assert "job_id is empty" in config_error(protocol.Gateway(make_config()).cancel, "")


# --------------------------------------------------------------------------------------------
# Upload
# --------------------------------------------------------------------------------------------


def test_upload_request_names_the_multipart_fields_and_may_be_repeated() -> None:
    request = protocol.Gateway(make_config()).upload(
        filename="train.jsonl",
        purpose="fine-tune",
        headers=protocol.Headers(provider_name="p"),
    )
    assert request.method == "POST"
    assert request.url == f"{BASE}/files"
    assert request.upload == protocol.MultipartUpload(filename="train.jsonl", purpose="fine-tune")
    assert (request.upload.file_field, request.upload.purpose_field) == ("file", "purpose")
    assert "Content-Type" not in request.headers  # the encoder sets it, with its boundary
    assert request.headers["x-tfy-provider-name"] == "p"
    assert request.safe_to_repeat


def test_upload_request_takes_the_provider_name_from_the_extra() -> None:
    request = protocol.Gateway(make_config({"provider_name": "openai-main"})).upload(
        filename="t", purpose="fine-tune"
    )
    assert request.headers["x-tfy-provider-name"] == "openai-main"


def test_upload_request_needs_a_provider_name() -> None:
    message = config_error(protocol.Gateway(make_config()).upload, filename="t.jsonl", purpose="fine-tune")
    assert "provider name" in message
    assert "provider_name" in message
    assert "'tfy'" in message


@pytest.mark.parametrize("purpose", ["", "  ", None, 3])
def test_upload_request_needs_a_purpose(purpose: Any) -> None:
    config = make_config({"provider_name": "p"})
    assert "purpose must be a non-empty string" in config_error(
        protocol.Gateway(config).upload, filename="t", purpose=purpose
    )


@pytest.mark.parametrize("filename", ["", "a\nb"])
def test_upload_request_refuses_an_unusable_file_name(filename: str) -> None:
    config = make_config({"provider_name": "p"})
    assert "rename the file" in config_error(
        protocol.Gateway(config).upload, filename=filename, purpose="fine-tune"
    )


def test_the_typed_mirrors_match_the_declaration() -> None:
    from dataclasses import fields

    from airflow_provider_tfy.header_spec import HEADERS

    names = [spec.name for spec in HEADERS]
    assert list(protocol.HeaderArgs.__annotations__) == names
    assert [f.name for f in fields(protocol.Headers)] == names
    for spec in HEADERS:
        assert f":param {spec.name}: ``{spec.header}``" in (protocol.HeaderArgs.__doc__ or "")


def test_unknown_header_names_are_refused_naming_the_caller() -> None:
    with pytest.raises(TypeError, match=r"Trigger\(\) got unexpected keyword argument\(s\) 'provider'"):
        protocol.check_header_names({"provider": "x"}, "Trigger")
    protocol.check_header_names({"provider_name": "x"}, "Trigger")


def test_the_create_fields_agree_everywhere() -> None:
    """The create arguments are listed where users and mypy read them: the lists must agree."""
    import inspect

    from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
    from airflow_provider_tfy.operators.fine_tuning import (
        CREATE_FIELDS,
        TrueFoundryCreateFineTuningJobOperator,
    )

    def keywords(func: Any) -> list[str]:
        params = inspect.signature(func).parameters.values()
        return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]

    assert keywords(protocol.create_body) == [*CREATE_FIELDS, "idempotency_key"]
    assert keywords(TrueFoundryHook.create_fine_tuning_job) == [*CREATE_FIELDS, "idempotency_key"]
    assert keywords(TrueFoundryCreateFineTuningJobOperator.__init__)[: len(CREATE_FIELDS)] == list(
        CREATE_FIELDS
    )
