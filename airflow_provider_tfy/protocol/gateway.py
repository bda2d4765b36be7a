"""The sans-I/O core: one object that builds every request to a gateway and reads every answer.

As h11's ``Connection`` does for HTTP, :class:`Gateway` holds the settings and does no I/O: a
transport asks it for a :class:`Request`, moves the bytes, and hands the :class:`Answer` back to
:meth:`Gateway.read`, which returns the typed object or raises the error that says what to do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar, cast
from urllib.parse import quote, urlencode

from airflow_provider_tfy import __version__
from airflow_provider_tfy.exceptions import FineTuningJobNotFound, TrueFoundryAPIError, TrueFoundryConfigError
from airflow_provider_tfy.models import FineTuningJob, TrueFoundryFile
from airflow_provider_tfy.protocol.answers import check_status, excerpt, json_body
from airflow_provider_tfy.protocol.objects import JobPage, parse_file, parse_job, parse_page, without_secret
from airflow_provider_tfy.protocol.settings import (
    MAX_CONNECT_TIMEOUT,
    GatewayConfig,
    Headers,
    has_control_chars,
)

T = TypeVar("T")
JOBS_PATH = "/fine_tuning/jobs"
FILES_PATH = "/files"
MAX_JOB_ID_LENGTH = 256
MAX_LIST_LIMIT = 100
DEFAULT_PURPOSE = "fine-tune"
USER_AGENT = f"airflow-provider-tfy/{__version__}"


class Answer(NamedTuple):
    """What came back for a request: status, headers (lower-case names) and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class MultipartUpload:
    """The fields of an upload's ``multipart/form-data`` body, which the transport streams."""

    filename: str
    purpose: str
    file_field: str = "file"
    purpose_field: str = "purpose"
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Request(Generic[T]):
    """An HTTP request to send, typed by what :meth:`Gateway.read` makes of its answer.

    ``headers`` hold the key: never log them, log :attr:`target`. ``read_timeout`` (the
    connection's ``timeout``) bounds each socket read and also the whole exchange, so a server
    trickling bytes cannot hold a call for ever (an upload's, from the answer on).
    ``safe_to_repeat``: whether it may be sent again after a failure the gateway might have acted
    on (see :func:`~.retry.could_have_been_applied`).
    """

    kind: str  # retrieve, list, create, cancel or upload: how to read the answer
    method: str
    url: str
    headers: dict[str, str] = field(repr=False)
    connect_timeout: float
    read_timeout: float
    body: bytes | None = field(default=None, repr=False)
    upload: MultipartUpload | None = None
    safe_to_repeat: bool = True
    job_id: str | None = None

    @property
    def target(self) -> str:
        """``METHOD url``, safe to log."""
        return f"{self.method} {self.url}"


class Gateway:
    """Requests to one gateway and the reading of its answers, without I/O.

    :param config: the gateway's settings (:func:`~.settings.gateway_config`).

    Every builder takes ``headers``, the call's header arguments, which override the connection's.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config

    def retrieve(self, job_id: Any, headers: Headers | None = None) -> Request[FineTuningJob]:
        """``GET {base}/fine_tuning/jobs/{job_id}``; the id is exactly one path segment."""
        return self._request("retrieve", "GET", self._job_url(job_id), headers, job_id=job_id)

    def list(
        self,
        limit: int = 1,
        *,
        after: str | None = None,
        job_metadata: Mapping[str, str] | None = None,
        headers: Headers | None = None,
    ) -> Request[JobPage]:
        """``GET {base}/fine_tuning/jobs?limit=N[&after=ID][&metadata[k]=v...]``.

        The filter is written as OpenAI writes it; TrueFoundry does not document it, so callers
        also filter the answers (:func:`~.objects.carries_metadata`).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise TrueFoundryConfigError(
                f"page_size must be a whole number from 1 to {MAX_LIST_LIMIT} (the gateway's limit), "
                f"got {limit!r}."
            )
        query = [("limit", str(limit))] + ([] if after is None else [("after", validate_job_id(after))])
        query += [(f"metadata[{k}]", v) for k, v in sorted(validate_metadata_filter(job_metadata).items())]
        return self._request("list", "GET", f"{self.config.base_url}{JOBS_PATH}?{urlencode(query)}", headers)

    def create(self, body: Mapping[str, Any], headers: Headers | None = None) -> Request[FineTuningJob]:
        """``POST {base}/fine_tuning/jobs`` with a JSON body (see :func:`~.create.create_body`).

        Not safe to repeat: a create the gateway acted on and whose answer was lost would start a
        second paid job.
        """
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        return self._request(
            "create", "POST", f"{self.config.base_url}{JOBS_PATH}", headers, body=data, safe_to_repeat=False
        )

    def cancel(self, job_id: Any, headers: Headers | None = None) -> Request[FineTuningJob]:
        """``POST {base}/fine_tuning/jobs/{job_id}/cancel``: cancelling twice is harmless."""
        return self._request("cancel", "POST", f"{self._job_url(job_id)}/cancel", headers, job_id=job_id)

    def upload(
        self, *, filename: str, purpose: Any, headers: Headers | None = None
    ) -> Request[TrueFoundryFile]:
        """``POST {base}/files``, whose multipart body the transport streams; repeating it is safe.

        The gateway requires ``x-tfy-provider-name`` here, so a missing one is refused first.
        """
        if self.config.headers.overridden_by(headers).provider_name is None:
            raise TrueFoundryConfigError(
                "Uploading a file needs a provider name (the x-tfy-provider-name header): pass "
                f"provider_name= or set 'provider_name' in connection {self.config.conn_id!r}'s extra, "
                "e.g. 'openai-main'."
            )
        if not isinstance(purpose, str) or not purpose.strip():
            raise TrueFoundryConfigError(
                f"purpose must be a non-empty string such as {DEFAULT_PURPOSE!r}, got {purpose!r}."
            )
        if not filename or has_control_chars(filename):
            raise TrueFoundryConfigError(
                f"The file name {filename!r} is empty or has control characters; rename the file."
            )
        upload = MultipartUpload(filename=filename, purpose=purpose.strip())
        return self._request("upload", "POST", f"{self.config.base_url}{FILES_PATH}", headers, upload=upload)

    def read(self, request: Request[T], answer: Answer, *, now: float | None = None) -> T:
        """The object ``request``'s answer carries, or the error that says what went wrong.

        Gateway text that reaches messages, logs, events or XCom is cut short and key-free.
        """
        config = self.config
        if request.kind == "cancel" and answer.status in (404, 405):
            raise _cannot_cancel(config, request, answer)
        check_status(config, request, answer, now=now)
        data = json_body(config, request, answer)
        if request.kind == "upload":
            file = parse_file(data)
            if file.status_details and config.api_key in file.status_details:
                file = parse_file(
                    {**file.raw, "status_details": excerpt(file.status_details, config.api_key)}
                )
            return cast(T, file)
        if request.kind == "list":
            return cast(T, parse_page(data, request.target, config.api_key))
        return cast(T, without_secret(parse_job(data), config.api_key))

    def _job_url(self, job_id: Any) -> str:
        # One percent-encoded segment, ``/`` included: ``../x`` never leaves ``/fine_tuning/jobs/``.
        return f"{self.config.base_url}{JOBS_PATH}/{quote(validate_job_id(job_id), safe='')}"

    def _request(
        self, kind: str, method: str, url: str, headers: Headers | None, **fields: Any
    ) -> Request[Any]:
        sent = {
            "Authorization": f"Bearer {self.config.api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            **self.config.headers.overridden_by(headers).to_headers(),
            **({"Content-Type": "application/json"} if fields.get("body") is not None else {}),
        }
        timeout = self.config.timeout
        return Request(kind, method, url, sent, min(timeout, MAX_CONNECT_TIMEOUT), timeout, **fields)


def validate_job_id(job_id: Any) -> str:
    """The job id if it is usable, else a :class:`TrueFoundryConfigError` saying what to pass."""
    hint = "pass the fine-tuning job id the gateway returned when the job was created, e.g. 'ftjob-abc123'"
    if not isinstance(job_id, str):
        raise TrueFoundryConfigError(f"job_id must be a string, got {type(job_id).__name__}; {hint}.")
    if not job_id.strip():
        raise TrueFoundryConfigError(f"job_id is empty (did its template render to nothing?); {hint}.")
    if len(job_id) > MAX_JOB_ID_LENGTH:
        raise TrueFoundryConfigError(
            f"job_id is {len(job_id)} characters long, more than {MAX_JOB_ID_LENGTH}; {hint}."
        )
    if job_id != job_id.strip() or has_control_chars(job_id):
        raise TrueFoundryConfigError(f"job_id {job_id!r} has spaces or control characters around it; {hint}.")
    if job_id in (".", ".."):
        raise TrueFoundryConfigError(f"job_id {job_id!r} is not a job id; {hint}.")
    return job_id


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


def _cannot_cancel(config: GatewayConfig, request: Request[Any], answer: Answer) -> TrueFoundryAPIError:
    # TrueFoundry does not document cancel for the gateway: a 404 may mean the path or the job.
    text = excerpt(answer.body, config.api_key)
    detail = f" ({text.rstrip('. ')})" if text else ""
    kind = FineTuningJobNotFound if answer.status == 404 else TrueFoundryAPIError
    return kind(
        f"The gateway at {config.origin} answered HTTP {answer.status} to {request.target}{detail}: this "
        "gateway cannot cancel fine-tuning jobs"
        + (f", or it does not know job {request.job_id!r}" if answer.status == 404 else "")
        + ". Cancel the job in the TrueFoundry console (or the provider's own console) instead.",
        status_code=answer.status,
        body_excerpt=text,
    )
