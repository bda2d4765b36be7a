"""``POST /files``: reading a multipart upload as a stream, keeping only what tests look at."""

from __future__ import annotations

import secrets
import zlib
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from .answers import RequestError

__all__ = ["MAX_UPLOAD_BYTES", "UploadedFile", "new_file_id", "read_upload"]

#: The gateway's documented limit ("512 MB a file"), read generously as 512 MiB.
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
#: The purposes OpenAI's files API accepts.
PURPOSES = frozenset({"fine-tune", "batch", "assistants", "vision", "user_data", "evals"})
_CHUNK = 256 * 1024
_MAX_FIELD_BYTES = 64 * 1024
# Room for part headers and boundaries around a file of the maximum size.
_MULTIPART_OVERHEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file the simulator received through ``POST /files`` (its bytes are counted, not kept).

    ``content_type`` is the ``file`` part's own Content-Type (None if it sent none);
    ``field_names`` are the form's part names in the order they came; ``headers`` are the
    request's headers, lower-cased, Authorization replaced by ``"<redacted>"``. ``crc32`` is the
    file's CRC-32 (as :func:`zlib.crc32` computes it), so a test can check its bytes arrived
    intact (a cryptographic hash would cost the simulator more than reading the upload).
    """

    id: str
    filename: str
    purpose: str
    bytes: int
    content_type: str | None
    field_names: tuple[str, ...]
    headers: dict[str, str]
    created_at: int
    crc32: int

    def to_api(self) -> dict[str, Any]:
        """The file object the gateway answers with."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (for the admin surface)."""
        out = asdict(self)
        out["field_names"] = list(self.field_names)
        return out


@dataclass(frozen=True, slots=True)
class _Upload:
    filename: str
    purpose: str
    size: int
    content_type: str | None
    field_names: tuple[str, ...]
    crc32: int


def new_file_id() -> str:
    """A fresh OpenAI-style file id such as ``file-3f9c...``."""
    return f"file-{secrets.token_hex(12)}"


async def read_upload(http: web.BaseRequest, max_bytes: int = MAX_UPLOAD_BYTES) -> _Upload:
    """Stream the multipart body, counting the ``file`` part's bytes; RequestError if bad."""
    if http.content_type != "multipart/form-data":
        raise RequestError(400, "Expected a multipart/form-data body with the fields 'file' and 'purpose'.")
    if http.content_length is not None and http.content_length > max_bytes + _MULTIPART_OVERHEAD:
        # Refuse at once rather than read half a gigabyte we will not keep.
        raise _too_large(max_bytes)
    names: list[str] = []
    file: tuple[str, str | None, int, int] | None = None
    purpose: str | None = None
    try:
        reader = await http.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise RequestError(400, "Nested multipart parts are not supported.")
            name = part.name or ""
            names.append(name)
            if name == "file":
                if file is not None:
                    raise RequestError(400, "Send exactly one 'file' part.", param="file")
                if not part.filename:
                    raise RequestError(400, "The 'file' part must carry a filename.", param="file")
                size, crc = await _count(part, max_bytes)
                file = (part.filename, part.headers.get("Content-Type"), size, crc)
            elif name == "purpose":
                purpose = (await _read_field(part)).decode("utf-8", errors="replace").strip()
            else:
                await _count(part, max_bytes)  # unknown fields are read past, not kept
    except ValueError as exc:  # aiohttp's complaints about a malformed multipart body
        raise RequestError(400, f"Malformed multipart body: {exc}") from None
    if file is None:
        raise RequestError(
            400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
        )
    if not purpose:
        raise RequestError(
            400, "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
        )
    if purpose not in PURPOSES:
        raise RequestError(
            400,
            f"Invalid value for 'purpose': {purpose!r}; expected one of {sorted(PURPOSES)}.",
            param="purpose",
        )
    filename, content_type, size, crc = file
    return _Upload(filename, purpose, size, content_type, tuple(names), crc)


async def _count(part: BodyPartReader, max_bytes: int) -> tuple[int, int]:
    size = 0
    crc = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        crc = zlib.crc32(chunk, crc)
    return size, crc


async def _read_field(part: BodyPartReader) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > _MAX_FIELD_BYTES:
            raise RequestError(400, f"The form field {part.name!r} is too long.", param=part.name)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> RequestError:
    return RequestError(
        413, f"The file is larger than the gateway's limit of {max_bytes} bytes.", param="file"
    )
