"""TrueFoundryHook.upload_file over real HTTP: the multipart body on the wire, streaming, validation."""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest

from airflow_provider_tfy.exceptions import TrueFoundryAPIError, TrueFoundryConfigError
from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
from airflow_provider_tfy.models import TrueFoundryFile
from airflow_provider_tfy.testing import Fault

from .conftest import assert_secret_free, log_messages, structlog_lines

PROVIDER = {"provider_name": "openai-main"}
LINE = json.dumps(
    {"messages": [{"role": "user", "content": "x" * 900}, {"role": "assistant", "content": "y"}]}
)


def fast_hook(**kwargs) -> TrueFoundryHook:
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("retry_delay", 0.01)
    return TrueFoundryHook(**kwargs)


def write_jsonl(path: Path, lines: int = 3) -> Path:
    path.write_text("".join(f"{LINE}\n" for _ in range(lines)))
    return path


def crc32(path: Path) -> int:
    """The file's CRC-32, as the simulator computes it over what it received."""
    value = 0
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            value = zlib.crc32(chunk, value)
    return value


@pytest.fixture
def provider_gateway(gateway, set_connection):
    """The simulator, with a connection whose extra names the provider account."""
    set_connection(gateway, extra=PROVIDER)
    return gateway


def test_the_multipart_body_on_the_wire(connected_gateway, tmp_path, caplog, capfd):
    path = write_jsonl(tmp_path / "train.jsonl")
    capfd.readouterr()

    with caplog.at_level(logging.DEBUG):
        uploaded = fast_hook().upload_file(
            path, provider_name="openai-main", metadata={"team": "ml"}, vertex_storage_bucket_name="b"
        )

    (stored,) = connected_gateway.files
    assert stored.field_names == ("purpose", "file")
    assert stored.filename == "train.jsonl"
    assert stored.purpose == "fine-tune"
    assert stored.bytes == path.stat().st_size
    assert stored.crc32 == crc32(path)
    assert stored.content_type == "application/octet-stream"
    assert stored.headers["x-tfy-provider-name"] == "openai-main"
    assert stored.headers["x-tfy-metadata"] == '{"team":"ml"}'
    assert stored.headers["x-tfy-vertex-storage-bucket-name"] == "b"
    assert stored.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert (
        stored.headers["content-length"] == str(stored.bytes + 0)
        or int(stored.headers["content-length"]) > stored.bytes
    )
    (record,) = connected_gateway.requests
    assert (record.method, record.endpoint, record.status, record.has_valid_auth) == (
        "POST",
        "upload",
        200,
        True,
    )
    assert isinstance(uploaded, TrueFoundryFile)
    assert (uploaded.id, uploaded.bytes, uploaded.filename, uploaded.purpose) == (
        stored.id,
        stored.bytes,
        "train.jsonl",
        "fine-tune",
    )
    assert uploaded.object == "file"
    assert uploaded.to_xcom()["id"] == stored.id
    output = capfd.readouterr().out
    assert any(f"as file {stored.id}" in line for line in structlog_lines(output, "info"))
    assert_secret_free(connected_gateway.api_key, output, *log_messages(caplog), uploaded, uploaded.to_xcom())


def test_provider_name_and_purpose_from_the_extra_and_arguments(provider_gateway, tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl")

    uploaded = fast_hook().upload_file(str(path), purpose="user_data")

    (stored,) = provider_gateway.files
    assert stored.headers["x-tfy-provider-name"] == "openai-main"
    assert stored.purpose == uploaded.purpose == "user_data"


def test_a_100_mb_file_is_streamed_with_memory_flat(provider_gateway, tmp_path):
    path = tmp_path / "big.jsonl"
    with path.open("w") as stream:
        block = "".join(f"{LINE}\n" for _ in range(1000))
        while stream.tell() < 100 * 1024 * 1024:
            stream.write(block)
    size = path.stat().st_size
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        uploaded = fast_hook().upload_file(path)  # validated (read once), then streamed
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()

    (stored,) = provider_gateway.files
    assert stored.bytes == uploaded.bytes == size
    assert stored.crc32 == crc32(path)
    # The simulator runs in this process too, so this bounds both sides; the file is 100 MB.
    assert peak < 16 * 1024 * 1024, (
        f"memory grew by {peak / 2**20:.1f} MiB while uploading {size / 2**20:.0f} MiB"
    )


def test_an_object_storage_path_is_read_through_airflow(provider_gateway, tmp_path):
    from airflow.sdk import ObjectStoragePath

    path = write_jsonl(tmp_path / "remote.jsonl", lines=5)

    uploaded = fast_hook().upload_file(ObjectStoragePath(f"file://{path}"))

    (stored,) = provider_gateway.files
    assert stored.filename == "remote.jsonl"
    assert stored.crc32 == crc32(path)
    assert uploaded.bytes == path.stat().st_size


def test_a_url_string_is_read_as_an_object_storage_path(provider_gateway, tmp_path):
    path = write_jsonl(tmp_path / "url.jsonl")

    fast_hook().upload_file(f"file://{path}")

    assert provider_gateway.files[0].crc32 == crc32(path)


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        pytest.param(b"", ["is empty"], id="empty"),
        pytest.param(
            f"{LINE}\n{LINE}\n{{not json\n{LINE}\n".encode(), ["line 3: not valid JSON"], id="bad-json-line-3"
        ),
        pytest.param(
            f"{LINE}\n[1, 2, 3]\n".encode(), ["line 2: a JSON array, not an object"], id="array-line"
        ),
    ],
)
def test_a_file_that_is_not_jsonl_is_refused_with_zero_requests(
    provider_gateway, tmp_path, content, fragments
):
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)

    with pytest.raises(TrueFoundryConfigError) as info:
        fast_hook().upload_file(path)

    for fragment in fragments:
        assert fragment in str(info.value)
    assert "'train.jsonl'" in str(info.value)
    assert provider_gateway.requests == []


def test_validate_false_sends_the_file_as_it_is(provider_gateway, tmp_path):
    path = tmp_path / "raw.txt"
    path.write_bytes(b"not json at all\n")

    fast_hook().upload_file(path, validate=False)

    assert provider_gateway.files[0].bytes == 16


@pytest.mark.parametrize("validate", [True, False])
def test_a_missing_file_or_a_directory_is_refused_with_zero_requests(provider_gateway, tmp_path, validate):
    with pytest.raises(TrueFoundryConfigError, match="does not exist"):
        fast_hook().upload_file(tmp_path / "nope.jsonl", validate=validate)
    with pytest.raises(TrueFoundryConfigError, match="is a directory"):
        fast_hook().upload_file(tmp_path, validate=validate)
    assert provider_gateway.requests == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_refused_with_zero_requests(provider_gateway, tmp_path):
    path = write_jsonl(tmp_path / "secret.jsonl")
    path.chmod(0)
    with pytest.raises(TrueFoundryConfigError, match="permission denied"):
        fast_hook().upload_file(path)
    assert provider_gateway.requests == []


def test_no_provider_name_is_refused_with_zero_requests(connected_gateway, tmp_path):
    with pytest.raises(TrueFoundryConfigError) as info:
        fast_hook().upload_file(write_jsonl(tmp_path / "t.jsonl"))
    assert "provider_name" in str(info.value)
    assert connected_gateway.requests == []


def test_something_that_is_not_a_path_is_refused(provider_gateway):
    with pytest.raises(TrueFoundryConfigError, match=r"local path .* or an ObjectStoragePath, got bytes"):
        fast_hook().upload_file(b"{}\n")
    assert provider_gateway.requests == []


@pytest.mark.parametrize(
    "fault",
    [
        Fault.server_error(503),
        Fault.reset(),
        Fault.rate_limit(retry_after=0.1),
        Fault.applied(then=Fault.reset()),
    ],
    ids=["503", "reset", "429", "applied-then-reset"],
)
def test_a_transient_failure_is_retried_streaming_the_file_again(provider_gateway, tmp_path, fault):
    path = write_jsonl(tmp_path / "t.jsonl", lines=50)
    provider_gateway.add_endpoint_fault("upload", fault)

    uploaded = fast_hook().upload_file(path)

    uploads = [r for r in provider_gateway.requests if r.endpoint == "upload"]
    assert len(uploads) == 2
    stored = provider_gateway.files
    # A lost answer leaves a harmless duplicate; both copies arrived whole, from the start.
    assert len(stored) == (2 if fault.kind == "applied" else 1)
    assert {file.crc32 for file in stored} == {crc32(path)}
    assert uploaded.id == stored[-1].id


def test_an_upload_error_names_the_gateways_reason_without_the_key(provider_gateway, tmp_path, caplog, capfd):
    provider_gateway.add_endpoint_fault("upload", Fault.server_error(500))
    provider_gateway.add_endpoint_fault("upload", Fault.server_error(500))
    provider_gateway.add_endpoint_fault("upload", Fault.server_error(500))

    with caplog.at_level(logging.DEBUG), pytest.raises(TrueFoundryAPIError) as info:
        fast_hook().upload_file(write_jsonl(tmp_path / "t.jsonl"))

    assert "answered HTTP 500 for POST" in str(info.value)
    assert "/files" in str(info.value)
    output = capfd.readouterr()
    assert any("TrueFoundry call failed" in line for line in structlog_lines(output.out, "warning"))
    assert_secret_free(provider_gateway.api_key, info.value, *log_messages(caplog), output.out, output.err)


def test_sending_may_outlast_the_timeout_while_it_makes_progress(gateway, set_connection, tmp_path):
    set_connection(gateway, extra={**PROVIDER, "timeout": 0.5})
    path = tmp_path / "big.bin"
    with path.open("wb") as stream:
        for _ in range(100):
            stream.write(os.urandom(1 << 20))

    started = time.monotonic()
    uploaded = fast_hook(max_retries=0).upload_file(path, validate=False)
    elapsed = time.monotonic() - started

    # A whole-exchange deadline counted from the request would have cut this upload off.
    assert uploaded.bytes == 100 << 20
    if elapsed <= 0.5:  # only meaningful when sending outlasted the timeout (about 1.5 s here)
        pytest.skip(f"sending took only {elapsed:.2f} s, less than the timeout")
