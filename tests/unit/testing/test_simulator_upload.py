"""``POST /files``: multipart uploads read as a stream, counted, recorded; their faults."""

from __future__ import annotations

import io
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from requests_toolbelt import MultipartEncoder
from simulator_support import JSONL, PROVIDER

from airflow_provider_tfy.testing import Fault, GatewaySimulator


def _upload(
    session: requests.Session,
    sim: GatewaySimulator,
    content: bytes = JSONL * 10,
    *,
    filename: str = "train.jsonl",
    purpose: str = "fine-tune",
    headers: dict[str, str] | None = None,
) -> requests.Response:
    return session.post(
        f"{sim.url}/files",
        files={"file": (filename, io.BytesIO(content), "application/jsonl")},
        data={"purpose": purpose},
        headers=PROVIDER if headers is None else headers,
    )


def test_upload_answers_a_file_object_and_records_the_multipart_body(
    sim: GatewaySimulator, session: requests.Session
) -> None:
    content = JSONL * 100
    response = _upload(session, sim, content, headers={**PROVIDER, "x-tfy-metadata": '{"team": "ml"}'})
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("file-")
    assert body["object"] == "file"
    assert body["bytes"] == len(content)
    assert body["filename"] == "train.jsonl"
    assert body["purpose"] == "fine-tune"
    assert body["status"] == "processed"
    assert isinstance(body["created_at"], int)
    (stored,) = sim.files
    assert stored.id == body["id"]
    assert (stored.filename, stored.purpose, stored.bytes) == ("train.jsonl", "fine-tune", len(content))
    assert stored.content_type == "application/jsonl"
    assert set(stored.field_names) == {"file", "purpose"}
    assert stored.crc32 == zlib.crc32(content)
    assert stored.headers["authorization"] == "<redacted>"
    assert stored.headers["x-tfy-provider-name"] == "openai-main"
    assert stored.headers["x-tfy-metadata"] == '{"team": "ml"}'
    assert stored.headers["content-type"].startswith("multipart/form-data; boundary=")
    record = sim.requests[-1]
    assert (record.method, record.endpoint, record.status, record.job_id) == ("POST", "upload", 200, None)


def test_field_order_and_extra_fields_are_recorded_not_kept(
    sim: GatewaySimulator, session: requests.Session
) -> None:
    encoder = MultipartEncoder(
        [
            ("note", "ignored"),
            ("file", ("data.jsonl", JSONL, "application/octet-stream")),
            ("purpose", "fine-tune"),
        ]
    )
    response = session.post(
        f"{sim.url}/files", data=encoder, headers={**PROVIDER, "Content-Type": encoder.content_type}
    )
    assert response.status_code == 200
    (stored,) = sim.files
    assert stored.field_names == ("note", "file", "purpose")
    assert stored.content_type == "application/octet-stream"
    assert stored.bytes == len(JSONL)


def test_an_empty_file_is_stored_with_zero_bytes(sim: GatewaySimulator, session: requests.Session) -> None:
    response = _upload(session, sim, b"")
    assert response.status_code == 200
    assert response.json()["bytes"] == 0


def test_the_provider_name_header_is_required(sim: GatewaySimulator, session: requests.Session) -> None:
    for headers in ({}, {"x-tfy-provider-name": ""}):
        response = _upload(session, sim, headers=headers)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "x-tfy-provider-name"
        assert "x-tfy-provider-name" in error["message"]
    assert sim.files == []


def _multipart(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, str]:
    boundary = "sim-test-boundary"
    chunks = []
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    ("parts", "param"),
    [
        ((("purpose", None, b"fine-tune"),), "file"),
        ((("file", "a.jsonl", JSONL),), "purpose"),
        ((("file", "a.jsonl", JSONL), ("purpose", None, b"")), "purpose"),
        ((("file", "a.jsonl", JSONL), ("purpose", None, b"training")), "purpose"),
        ((("file", None, JSONL), ("purpose", None, b"fine-tune")), "file"),
        ((("file", "a.jsonl", JSONL), ("file", "b.jsonl", JSONL), ("purpose", None, b"fine-tune")), "file"),
    ],
    ids=["no-file", "no-purpose", "empty-purpose", "unknown-purpose", "no-filename", "two-files"],
)
def test_bad_forms_are_400_naming_the_field(
    sim: GatewaySimulator,
    session: requests.Session,
    parts: tuple[tuple[str, str | None, bytes], ...],
    param: str,
) -> None:
    body, content_type = _multipart(*parts)
    response = session.post(f"{sim.url}/files", data=body, headers={**PROVIDER, "Content-Type": content_type})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert sim.files == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"file": "x", "purpose": "fine-tune"}', "application/json"),
        (b"--nope\r\nbroken", "multipart/form-data; boundary=other"),
    ],
    ids=["json", "broken-multipart"],
)
def test_bodies_that_are_not_multipart_forms_are_400(
    sim: GatewaySimulator, session: requests.Session, body: bytes, content_type: str
) -> None:
    response = session.post(f"{sim.url}/files", data=body, headers={**PROVIDER, "Content-Type": content_type})
    assert response.status_code == 400
    assert "multipart" in response.json()["error"]["message"].lower()
    assert sim.files == []


def test_a_file_over_the_limit_is_413_whether_announced_or_streamed(
    sim: GatewaySimulator, session: requests.Session
) -> None:
    sim.max_upload_bytes = 1000
    assert _upload(session, sim, b"x" * 1000).status_code == 200  # the limit itself is allowed
    announced = _upload(session, sim, b"x" * 200_000)  # Content-Length says so: refused unread
    assert announced.status_code == 413
    assert "1000 bytes" in announced.json()["error"]["message"]

    body, content_type = _multipart(("purpose", None, b"fine-tune"), ("file", "big.jsonl", b"x" * 1001))

    def chunks() -> Iterator[bytes]:  # no Content-Length: only counting can tell
        yield from (body[i : i + 100] for i in range(0, len(body), 100))

    streamed = session.post(
        f"{sim.url}/files", data=chunks(), headers={**PROVIDER, "Content-Type": content_type}
    )
    assert streamed.status_code == 413
    assert len(sim.files) == 1
    assert session.get(f"{sim.url}/fine_tuning/jobs").status_code == 200  # the connection is still good


def test_a_large_upload_is_streamed_not_held_in_memory(
    sim: GatewaySimulator, session: requests.Session, tmp_path: Path
) -> None:
    size = 32 * 1024 * 1024
    path = tmp_path / "big.jsonl"
    crc = 0
    with path.open("wb") as handle:
        block = JSONL * (1024 * 1024 // len(JSONL))
        written = 0
        while written < size:
            piece = block[: size - written]
            handle.write(piece)
            crc = zlib.crc32(piece, crc)
            written += len(piece)
    with path.open("rb") as handle:
        encoder = MultipartEncoder(
            {"purpose": "fine-tune", "file": ("big.jsonl", handle, "application/jsonl")}
        )
        tracemalloc.start()
        try:
            response = session.post(
                f"{sim.url}/files", data=encoder, headers={**PROVIDER, "Content-Type": encoder.content_type}
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert response.status_code == 200
    assert sim.files[-1].bytes == size
    assert sim.files[-1].crc32 == crc
    # Client and simulator together: a few buffers, never the 32 MiB file.
    assert peak < 8 * 1024 * 1024, peak


def test_faults_on_upload_store_nothing_unless_applied(
    sim: GatewaySimulator, session: requests.Session
) -> None:
    sim.add_endpoint_fault("upload", Fault.server_error(503))
    sim.add_endpoint_fault("upload", Fault.rate_limit(2))
    sim.add_endpoint_fault("upload", Fault.reset())
    assert _upload(session, sim).status_code == 503
    limited = _upload(session, sim)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2"
    with pytest.raises(requests.ConnectionError):
        _upload(session, sim)
    assert sim.files == []
    assert _upload(session, sim).status_code == 200
    assert len(sim.files) == 1
    assert [r.status for r in sim.requests] == [503, 429, None, 200]


def test_an_applied_upload_is_stored_even_when_its_answer_is_lost(
    sim: GatewaySimulator, session: requests.Session
) -> None:
    sim.add_endpoint_fault("upload", Fault.applied(then=Fault.server_error(500)))
    sim.add_endpoint_fault("upload", Fault.applied(then=Fault.reset()))
    assert _upload(session, sim).status_code == 500
    with pytest.raises(requests.ConnectionError):
        _upload(session, sim)
    assert len(sim.files) == 2
    assert all(f.bytes == len(JSONL) * 10 for f in sim.files)


def test_upload_needs_the_key_and_a_401_consumes_no_fault(sim: GatewaySimulator) -> None:
    sim.add_endpoint_fault("upload", Fault.server_error())
    response = requests.post(
        f"{sim.url}/files",
        files={"file": ("a.jsonl", JSONL)},
        data={"purpose": "fine-tune"},
        headers=PROVIDER,
        timeout=10,
    )
    assert response.status_code == 401
    assert sim.files == []
    assert sim.requests[-1].endpoint == "upload"


def test_outage_and_latency_apply_to_uploads(sim: GatewaySimulator, session: requests.Session) -> None:
    sim.outage(fault=Fault.html_error(502))
    assert _upload(session, sim).status_code == 502
    sim.end_outage()
    assert sim.files == []
    assert _upload(session, sim).status_code == 200


def test_get_on_files_is_405(sim: GatewaySimulator, session: requests.Session) -> None:
    response = session.get(f"{sim.url}/files")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
