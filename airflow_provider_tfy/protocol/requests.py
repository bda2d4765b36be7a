"""The requests to send: URL, headers, body and whether repeating one is safe.

Named after what it builds, not the library: nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlencode

from airflow_provider_tfy.exceptions import TrueFoundryConfigError
from airflow_provider_tfy.protocol.configuration import MAX_CONNECT_TIMEOUT, GatewayConfig
from airflow_provider_tfy.protocol.headers import Headers

JOBS_PATH = "/fine_tuning/jobs"
FILES_PATH = "/files"
MAX_JOB_ID_LENGTH = 256
MAX_LIST_LIMIT = 100
DEFAULT_PURPOSE = "fine-tune"


@dataclass(frozen=True)
class MultipartUpload:
    """What an upload's ``multipart/form-data`` body carries.

    The hook streams the body (requests-toolbelt's encoder) from the file; the field names, the
    file name and the purpose are the protocol's.
    """

    filename: str
    purpose: str
    file_field: str = "file"
    purpose_field: str = "purpose"
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Request:
    """An HTTP request to send. ``headers`` holds the key: never log them, log :attr:`target`.

    :param body: a JSON body to send as is (create).
    :param upload: the multipart fields of an upload, whose body the transport streams.
    :param safe_to_repeat: whether the request may be sent again after a failure that the
        gateway might have acted on (see :func:`~.retry.could_have_been_applied`).
    """

    method: str
    url: str
    headers: dict[str, str] = field(repr=False)
    connect_timeout: float
    read_timeout: float
    body: bytes | None = field(default=None, repr=False)
    upload: MultipartUpload | None = None
    safe_to_repeat: bool = True

    @property
    def deadline(self) -> float:
        """Seconds the whole exchange may take: the connection's ``timeout``, as documented.

        The read timeout alone bounds each socket read; a server trickling bytes could otherwise
        hold a call for ever. For an upload it counts from the answer: sending 512 MB may take
        longer than ``timeout`` while every socket write still makes progress.
        """
        return self.read_timeout

    @property
    def target(self) -> str:
        """``METHOD url``, safe to log."""
        return f"{self.method} {self.url}"


def validate_job_id(job_id: Any) -> str:
    """Return the job id if it is usable, else raise a :class:`TrueFoundryConfigError`."""
    hint = "pass the fine-tuning job id the gateway returned when the job was created, e.g. 'ftjob-abc123'"
    if not isinstance(job_id, str):
        raise TrueFoundryConfigError(f"job_id must be a string, got {type(job_id).__name__}; {hint}.")
    if not job_id.strip():
        raise TrueFoundryConfigError(f"job_id is empty (did its template render to nothing?); {hint}.")
    if len(job_id) > MAX_JOB_ID_LENGTH:
        raise TrueFoundryConfigError(
            f"job_id is {len(job_id)} characters long, more than {MAX_JOB_ID_LENGTH}; {hint}."
        )
    if job_id != job_id.strip() or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in job_id):
        raise TrueFoundryConfigError(f"job_id {job_id!r} has spaces or control characters around it; {hint}.")
    if job_id in (".", ".."):
        raise TrueFoundryConfigError(f"job_id {job_id!r} is not a job id; {hint}.")
    return job_id


def build_headers(config: GatewayConfig, overrides: Headers | None = None) -> dict[str, str]:
    """The headers for one call: auth, JSON, and the ``x-tfy-*`` values (arguments over extra)."""
    options = config.headers.overridden_by(overrides) if overrides else config.headers
    return {
        "Authorization": f"Bearer {config.api_key}",
        "Accept": "application/json",
        "User-Agent": _user_agent(),
        **options.to_headers(),
    }


def job_request(config: GatewayConfig, job_id: Any, overrides: Headers | None = None) -> Request:
    """Build ``GET {base}/fine_tuning/jobs/{job_id}``.

    The id is percent-encoded as exactly one path segment (``/`` included), so ``../x`` can never
    leave ``/fine_tuning/jobs/``. The path is appended to the base, keeping any prefix.
    """
    return _request(config, "GET", _job_url(config, job_id), overrides)


def list_request(
    config: GatewayConfig,
    limit: int = 1,
    *,
    after: str | None = None,
    job_metadata: Mapping[str, str] | None = None,
    overrides: Headers | None = None,
) -> Request:
    """Build ``GET {base}/fine_tuning/jobs?limit=N[&after=ID][&metadata[k]=v...]``.

    The filter is written as OpenAI writes it; TrueFoundry does not document the form, so callers
    also filter the answers themselves (:func:`~.jobs.carries_metadata`).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise TrueFoundryConfigError(
            f"page_size must be a whole number from 1 to {MAX_LIST_LIMIT} (the gateway's limit), "
            f"got {limit!r}."
        )
    query: list[tuple[str, str]] = [("limit", str(limit))]
    if after is not None:
        query.append(("after", validate_job_id(after)))
    for key, value in sorted(validate_metadata_filter(job_metadata).items()):
        query.append((f"metadata[{key}]", value))
    return _request(config, "GET", f"{config.base_url}{JOBS_PATH}?{urlencode(query)}", overrides)


def validate_metadata_filter(job_metadata: Any) -> dict[str, str]:
    """Check a list's ``job_metadata`` filter: an object of strings (empty or None: no filter)."""
    if job_metadata is None:
        return {}
    if not isinstance(job_metadata, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in job_metadata.items()
    ):
        raise TrueFoundryConfigError(
            "job_metadata must map non-empty strings to strings (the jobs' own metadata), "
            f'e.g. {{"pipeline": "nightly"}}; got {type(job_metadata).__name__}.'
        )
    return dict(job_metadata)


def create_request(
    config: GatewayConfig, body: Mapping[str, Any], overrides: Headers | None = None
) -> Request:
    """Build ``POST {base}/fine_tuning/jobs`` with a JSON body (see :func:`~.jobs.create_body`).

    Not safe to repeat: a create the gateway acted on and whose answer was lost would start a
    second paid job.
    """
    request = _request(config, "POST", f"{config.base_url}{JOBS_PATH}", overrides)
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    headers = {**request.headers, "Content-Type": "application/json"}
    return replace(request, headers=headers, body=data, safe_to_repeat=False)


def cancel_request(config: GatewayConfig, job_id: Any, overrides: Headers | None = None) -> Request:
    """Build ``POST {base}/fine_tuning/jobs/{job_id}/cancel``: cancelling twice is harmless."""
    return _request(config, "POST", f"{_job_url(config, job_id)}/cancel", overrides)


def upload_request(
    config: GatewayConfig, *, filename: str, purpose: Any, overrides: Headers | None = None
) -> Request:
    """Build ``POST {base}/files`` whose multipart body the transport streams.

    The gateway requires ``x-tfy-provider-name`` here, so a missing one is refused before any
    request. Repeating an upload is safe: a duplicate file costs nothing.
    """
    options = config.headers.overridden_by(overrides) if overrides else config.headers
    if options.provider_name is None:
        raise TrueFoundryConfigError(
            "Uploading a file needs a provider name (the x-tfy-provider-name header): pass "
            f"provider_name= or set 'provider_name' in connection {config.conn_id!r}'s extra, "
            "e.g. 'openai-main'."
        )
    if not isinstance(purpose, str) or not purpose.strip():
        raise TrueFoundryConfigError(
            f"purpose must be a non-empty string such as {DEFAULT_PURPOSE!r}, got {purpose!r}."
        )
    if not filename or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in filename):
        raise TrueFoundryConfigError(
            f"The file name {filename!r} is empty or has control characters; rename the file."
        )
    request = _request(config, "POST", f"{config.base_url}{FILES_PATH}", overrides)
    return replace(request, upload=MultipartUpload(filename=filename, purpose=purpose.strip()))


def _job_url(config: GatewayConfig, job_id: Any) -> str:
    return f"{config.base_url}{JOBS_PATH}/{quote(validate_job_id(job_id), safe='')}"


def _request(config: GatewayConfig, method: str, url: str, overrides: Headers | None) -> Request:
    return Request(
        method=method,
        url=url,
        headers=build_headers(config, overrides),
        connect_timeout=min(config.timeout, MAX_CONNECT_TIMEOUT),
        read_timeout=config.timeout,
    )


def _user_agent() -> str:
    from airflow_provider_tfy import __version__

    return f"airflow-provider-tfy/{__version__}"
