"""The gateway protocol without I/O: requests to send, responses to read, when to retry.

Everything here is a plain function of its inputs (the sans-I/O idea): it builds the request,
classifies the response, decides whether and how long to wait before trying again, and parses
the job. The sync hook (requests) and the async trigger (aiohttp) only move bytes and sleep, so the
two can never disagree on what an answer means.
"""

from __future__ import annotations

import dataclasses
import email.utils
import ipaddress
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from airflow_provider_tfy.exceptions import (
    FineTuningJobNotFound,
    TrueFoundryAPIError,
    TrueFoundryAuthError,
    TrueFoundryConfigError,
    TrueFoundryConnectionError,
    TrueFoundryError,
    TrueFoundryResponseError,
)
from airflow_provider_tfy.models import TIMESTAMP_FIELDS, FineTuningJob, FineTuningJobError

log = logging.getLogger(__name__)

JOBS_PATH = "/fine_tuning/jobs"
DEFAULT_TIMEOUT = 30.0
# Connecting should be quick even when the gateway is slow to answer: cap it separately.
MAX_CONNECT_TIMEOUT = 10.0
# Eight retries with backoff from 1 s capped at 30 s wait at least 60 s in all: a one-minute
# gateway blip passes inside a single call.
DEFAULT_MAX_RETRIES = 8
DEFAULT_RETRY_DELAY = 1.0
MAX_BACKOFF = 30.0
# A Retry-After up to this is honoured inside the call; a longer one is left to the next poll,
# so one call never blocks a worker for longer than the gateway's blip is likely to last.
MAX_RETRY_AFTER = 60.0
BODY_EXCERPT_CHARS = 300
MAX_JOB_ID_LENGTH = 256
# A job is a few KB; a body past this is not one, and must not fill a worker's memory.
MAX_BODY_BYTES = 4 * 1024 * 1024
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
HEADER_NAMES = {
    "provider_name": "x-tfy-provider-name",
    "provider_model": "x-tfy-provider-model",
    "vertex_storage_bucket_name": "x-tfy-vertex-storage-bucket-name",
    "file_purpose": "x-tfy-file-purpose",
    "metadata": "x-tfy-metadata",
}
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderOptions:
    """Values for the gateway's ``x-tfy-*`` headers; ``None`` sends no header."""

    provider_name: str | None = None
    provider_model: str | None = None
    vertex_storage_bucket_name: str | None = None
    file_purpose: str | None = None
    metadata: dict[str, str] | None = None

    def overridden_by(self, other: HeaderOptions) -> HeaderOptions:
        """Return these defaults with every value that ``other`` sets taking precedence."""
        return HeaderOptions(
            **{
                name: getattr(other, name) if getattr(other, name) is not None else getattr(self, name)
                for name in HEADER_NAMES
            }
        )

    def to_headers(self) -> dict[str, str]:
        """Render the set values as HTTP headers."""
        headers: dict[str, str] = {}
        for name, header in HEADER_NAMES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if name == "metadata":
                value = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
            headers[header] = value
        return headers


def header_options(
    *,
    provider_name: Any = None,
    provider_model: Any = None,
    vertex_storage_bucket_name: Any = None,
    file_purpose: Any = None,
    metadata: Any = None,
    source: str = "argument",
) -> HeaderOptions:
    """Validate header values from arguments or a connection's extra.

    Empty strings count as unset (a cleared UI field stores ``""``). ``metadata`` may be a dict or
    its JSON text. A value with CR or LF is refused: it could smuggle a header.
    """
    values: dict[str, Any] = {}
    for name, value in (
        ("provider_name", provider_name),
        ("provider_model", provider_model),
        ("vertex_storage_bucket_name", vertex_storage_bucket_name),
        ("file_purpose", file_purpose),
    ):
        value = _unset_as(value, None)
        if value is None:
            continue
        if not isinstance(value, str):
            raise TrueFoundryConfigError(
                f"{source} {name!r} must be a string, got {type(value).__name__}; "
                f"give the {HEADER_NAMES[name]} header's value as text."
            )
        values[name] = _header_value(name, value.strip(), source)
    values["metadata"] = _metadata(metadata, source)
    return HeaderOptions(**values)


def _header_value(name: str, value: str, source: str) -> str:
    if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in value):
        raise TrueFoundryConfigError(
            f"{source} {name!r} contains a control character (CR, LF or similar), which cannot go into "
            f"the {HEADER_NAMES.get(name, name)} header; remove it."
        )
    if not value.isascii():
        raise TrueFoundryConfigError(
            f"{source} {name!r} contains non-ASCII characters, which HTTP headers cannot carry; "
            "use plain ASCII (metadata values may use any characters: they are JSON-escaped)."
        )
    return value


def _metadata(value: Any, source: str) -> dict[str, str] | None:
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise TrueFoundryConfigError(
                f"{source} 'metadata' is not valid JSON; give an object of strings, "
                'e.g. {"team": "ml-platform"}.'
            ) from None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TrueFoundryConfigError(
            f"{source} 'metadata' must map strings to strings (the gateway's x-tfy-metadata), "
            f'e.g. {{"team": "ml-platform"}}; got {_describe_type(value)}.'
        )
    return dict(value)


def _describe_type(value: Any) -> str:
    if isinstance(value, Mapping):
        bad = next((f"{k!r}: {type(v).__name__}" for k, v in value.items() if not isinstance(v, str)), None)
        if bad:
            return f"a value that is not a string ({bad})"
        return "a key that is not a string"
    return type(value).__name__


@dataclass(frozen=True)
class GatewayConfig:
    """Everything needed to talk to one gateway, read once from an Airflow connection.

    The key is kept out of ``repr`` so the config can be logged or shown in a traceback safely.
    """

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    headers: HeaderOptions = HeaderOptions()
    timeout: float = DEFAULT_TIMEOUT
    verify: bool | str = True

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` of the gateway, for messages and connection pools."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"


def gateway_config(
    conn_id: str,
    *,
    host: str | None,
    password: str | None,
    extra: Mapping[str, Any],
    timeout: float | None = None,
) -> GatewayConfig:
    """Build a :class:`GatewayConfig` from a connection's fields, or say exactly what is wrong.

    ``timeout`` (a hook parameter) takes precedence over the extra's ``timeout``.
    """
    where = f"Connection {conn_id!r}"
    if not password or not password.strip():
        raise TrueFoundryConfigError(
            f"{where} has no API key: put your TrueFoundry API key (personal access token or "
            "virtual-account token) in the connection's password."
        )
    api_key = password.strip()
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in api_key) or not api_key.isascii():
        raise TrueFoundryConfigError(
            f"{where}: the API key contains spaces, control or non-ASCII characters; paste the key "
            "exactly as TrueFoundry shows it."
        )
    allow_http = _flag(extra.get("allow_insecure_http"), "allow_insecure_http", where)
    return GatewayConfig(
        conn_id=conn_id,
        base_url=normalize_base_url(host, where=where, allow_insecure_http=allow_http),
        api_key=api_key,
        headers=header_options(
            provider_name=extra.get("provider_name"),
            provider_model=extra.get("provider_model"),
            vertex_storage_bucket_name=extra.get("vertex_storage_bucket_name"),
            file_purpose=extra.get("file_purpose"),
            metadata=extra.get("metadata"),
            source=f"{where} extra",
        ),
        timeout=positive_number(
            timeout if timeout is not None else _unset_as(extra.get("timeout"), DEFAULT_TIMEOUT),
            "timeout",
            where,
        ),
        verify=_verify(extra.get("verify", True), where),
    )


def normalize_base_url(host: str | None, *, where: str, allow_insecure_http: bool = False) -> str:
    """Check the gateway base URL and drop trailing slashes; a path prefix is kept.

    Plain http would send the key in clear text, so it is accepted only for loopback hosts (the
    simulator, a local port-forward) unless the connection's extra sets ``allow_insecure_http``.
    """
    example = "e.g. https://gateway.truefoundry.ai or https://<org>.truefoundry.cloud/api/llm"
    # Messages below never echo the URL: a mistyped one may carry a token in its user info or query.
    if not host or not host.strip():
        raise TrueFoundryConfigError(f"{where} has no host: set it to the gateway base URL, {example}.")
    url = host.strip()
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise TrueFoundryConfigError(
            f"{where}: the gateway base URL contains spaces or control characters; {example}."
        )
    if "://" not in url:
        raise TrueFoundryConfigError(
            f"{where}: the gateway base URL has no scheme; write it in full, {example}."
        )
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise TrueFoundryConfigError(
            f"{where}: the gateway base URL is not a valid URL (bad port or address); {example}."
        ) from None
    if parts.username is not None or parts.password is not None:
        raise TrueFoundryConfigError(
            f"{where}: the gateway base URL contains credentials (user:password@); remove them "
            "and put the API key in the connection's password."
        )
    if parts.scheme not in ("http", "https"):
        raise TrueFoundryConfigError(
            f"{where}: the gateway base URL must start with https:// (got {parts.scheme[:10]}://); {example}."
        )
    if not hostname:
        raise TrueFoundryConfigError(f"{where}: the gateway base URL has no host name; {example}.")
    if parts.query or parts.fragment:
        raise TrueFoundryConfigError(
            f"{where}: the gateway base URL must not have a query (?...) or fragment (#...); {example}."
        )
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(hostname):
        raise TrueFoundryConfigError(
            f"{where}: plain http would send the API key unencrypted to {hostname}; use https, "
            'or set "allow_insecure_http": true in the extra if the network is trusted.'
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def positive_number(value: Any, name: str, where: str) -> float:
    """Read a positive, finite number (int, float or numeric text)."""
    number: float | None = None
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            number = None
    if number is None or not math.isfinite(number) or number <= 0:
        raise TrueFoundryConfigError(
            f"{where}: {name!r} must be a positive number of seconds, got {value!r}."
        )
    return number


def _unset_as(value: Any, default: Any) -> Any:
    """A connection form stores a cleared field as None or blank text: both mean the default."""
    return default if value is None or (isinstance(value, str) and not value.strip()) else value


def _flag(value: Any, name: str, where: str) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise TrueFoundryConfigError(f"{where} extra {name!r} must be true or false, got {value!r}.")


def _verify(value: Any, where: str) -> bool | str:
    """TLS verification: on by default; a CA bundle path; or explicitly off (with a warning)."""
    value = _unset_as(value, True)
    if isinstance(value, str) and value.strip().lower() not in _TRUE | _FALSE:
        return value.strip()
    verify = _flag(value, "verify", where)
    if not verify:
        log.warning(
            "%s turns TLS certificate verification off: the API key could be read by anyone able to "
            "intercept the connection. Give a CA bundle path in 'verify' instead.",
            where,
        )
    return verify


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """An HTTP request to send. ``headers`` holds the key: never log them, log :attr:`target`."""

    method: str
    url: str
    headers: dict[str, str] = field(repr=False)
    connect_timeout: float
    read_timeout: float

    @property
    def deadline(self) -> float:
        """Seconds the whole exchange may take: the connection's ``timeout``, as documented.

        The read timeout alone bounds each socket read; a server trickling bytes could otherwise
        hold a call for ever.
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


def build_headers(config: GatewayConfig, overrides: HeaderOptions | None = None) -> dict[str, str]:
    """The headers for one call: auth, JSON, and the ``x-tfy-*`` values (arguments over extra)."""
    options = config.headers.overridden_by(overrides) if overrides else config.headers
    return {
        "Authorization": f"Bearer {config.api_key}",
        "Accept": "application/json",
        "User-Agent": _user_agent(),
        **options.to_headers(),
    }


def job_request(config: GatewayConfig, job_id: Any, overrides: HeaderOptions | None = None) -> Request:
    """Build ``GET {base}/fine_tuning/jobs/{job_id}``.

    The id is percent-encoded as exactly one path segment (``/`` included), so ``../x`` can never
    leave ``/fine_tuning/jobs/``. The path is appended to the base, keeping any prefix.
    """
    segment = quote(validate_job_id(job_id), safe="")
    return _request(config, f"{config.base_url}{JOBS_PATH}/{segment}", overrides)


def list_request(config: GatewayConfig, limit: int = 1) -> Request:
    """Build ``GET {base}/fine_tuning/jobs?limit=N``: the cheapest authenticated call."""
    return _request(config, f"{config.base_url}{JOBS_PATH}?limit={int(limit)}", None)


def _request(config: GatewayConfig, url: str, overrides: HeaderOptions | None) -> Request:
    return Request(
        method="GET",
        url=url,
        headers=build_headers(config, overrides),
        connect_timeout=min(config.timeout, MAX_CONNECT_TIMEOUT),
        read_timeout=config.timeout,
    )


def _user_agent() -> str:
    from airflow_provider_tfy import __version__

    return f"airflow-provider-tfy/{__version__}"


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------


def excerpt(body: bytes | str, secret: str | None = None, limit: int = BODY_EXCERPT_CHARS) -> str:
    """A short, single-line, key-free excerpt of a response body for messages and logs."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    # Redact the whole body before cutting, so no part of a key can survive at the cut.
    if secret:
        text = text.replace(secret, "***")
    text = re.sub(r"\s+", " ", text[: limit * 4]).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _error_message(body: bytes) -> str | None:
    """The gateway's own error text, from an OpenAI-style ``{"error": {"message": ...}}`` body."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(data.get("message"), str):
            return data["message"]
    return None


def check_status(
    config: GatewayConfig,
    request: Request,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    job_id: str | None = None,
    now: float | None = None,
) -> None:
    """Raise the right :class:`TrueFoundryAPIError` for a non-2xx answer; return on 2xx."""
    if 200 <= status < 300:
        return
    text = excerpt(_error_message(body) or body, config.api_key)
    detail = f": {text.rstrip('. ')}" if text else ""
    subject = f"fine-tuning job {job_id!r}" if job_id else "the fine-tuning API"
    if status in (401, 403):
        verb = "rejected the API key" if status == 401 else "refused access to " + subject
        raise TrueFoundryAuthError(
            f"The gateway at {config.origin} {verb} (HTTP {status}){detail}. Check the API key in "
            f"connection {config.conn_id!r} and that it may read fine-tuning jobs.",
            status_code=status,
            body_excerpt=text,
        )
    if status == 404:
        what = f"Fine-tuning job {job_id!r} was not found" if job_id else f"{JOBS_PATH} was not found"
        raise FineTuningJobNotFound(
            f"{what} at {config.base_url} (HTTP 404){detail}. Check the job id, the provider account "
            "(x-tfy-provider-name) and that the base URL includes any path prefix such as /api/llm.",
            status_code=status,
            body_excerpt=text,
        )
    if 300 <= status < 400:
        location = headers.get("location") or headers.get("Location") or "elsewhere"
        # Redirects are never followed: a redirect could carry the key to another origin.
        raise TrueFoundryAPIError(
            f"The gateway answered {request.target} with a redirect (HTTP {status}) to "
            f"{excerpt(location, config.api_key)}; set the connection's host to the final gateway URL.",
            status_code=status,
            body_excerpt=text,
        )
    retryable = status in RETRYABLE_STATUSES
    retry_after = parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"), now)
    reason = "rate-limited the request" if status == 429 else f"answered HTTP {status}"
    raise TrueFoundryAPIError(
        f"The gateway {reason} for {request.target}{detail}."
        + (" This is usually temporary." if retryable else " Check the request's arguments."),
        status_code=status,
        body_excerpt=text,
        retry_after=retry_after,
        retryable=retryable,
    )


def read_job_response(
    config: GatewayConfig,
    request: Request,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    job_id: str,
    now: float | None = None,
) -> FineTuningJob:
    """Classify the answer to :func:`job_request` and return the job, or raise."""
    check_status(config, request, status, headers, body, job_id=job_id, now=now)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise TrueFoundryResponseError(
            f"The gateway answered {request.target} with HTTP {status} but the body is not JSON "
            f"(cut off, or a proxy's page?): {excerpt(body, config.api_key, 120)!r}. Retrying may help.",
            retryable=True,
        ) from None
    return _without_secret(parse_job(data), config.api_key)


def _without_secret(job: FineTuningJob, secret: str) -> FineTuningJob:
    """The job with its ``error`` cut short and any echo of the key redacted.

    The gateway's error text travels into exceptions, logs, trigger events and XCom; a gateway
    that echoes the request (or a huge message) must not carry the key or megabytes there.
    """
    if job.error is None:
        return job
    error = FineTuningJobError(
        **{
            name: excerpt(value, secret) if value else value
            for name, value in (
                ("code", job.error.code),
                ("message", job.error.message),
                ("param", job.error.param),
            )
        }
    )
    raw = dict(job.raw)
    raw["error"] = {"code": error.code, "message": error.message, "param": error.param}
    return dataclasses.replace(job, error=error, raw=raw)


def read_list_response(
    config: GatewayConfig, request: Request, status: int, headers: Mapping[str, str], body: bytes
) -> None:
    """Classify the answer to :func:`list_request`; return if the gateway accepted the key."""
    check_status(config, request, status, headers, body)


def transport_error(request: Request, reason: str, *, timed_out: bool = False) -> TrueFoundryConnectionError:
    """The error for a request that got no HTTP answer (refused, reset, timed out)."""
    what = "did not answer in time" if timed_out else "could not be reached"
    return TrueFoundryConnectionError(
        f"The gateway {what} for {request.target} ({reason}). This is usually temporary; if it "
        "persists, check the connection's gateway base URL and the network."
    )


def body_too_large(request: Request) -> TrueFoundryConnectionError:
    """The error for an answer whose body is far larger than any job."""
    return transport_error(request, f"the body is larger than {MAX_BODY_BYTES} bytes")


def tls_error(request: Request, reason: str) -> TrueFoundryConnectionError:
    """The error for a gateway whose TLS certificate failed verification: not retried.

    A certificate that does not verify will not start verifying within a wait, and retrying a
    possible interception only sends the key again.
    """
    error = TrueFoundryConnectionError(
        f"TLS verification failed for {request.target} ({reason[:200]}). Check the gateway's "
        "certificate, or give the connection's extra 'verify' the path of the CA bundle that signs it."
    )
    error.retryable = False
    return error


def ca_bundle_error(verify: bool | str, reason: str) -> TrueFoundryConfigError:
    """The error for a ``verify`` CA bundle path that cannot be loaded."""
    return TrueFoundryConfigError(
        f"The connection's extra 'verify' names the CA bundle {verify!r}, which could not be loaded "
        f"({reason[:200]}); give the path of a PEM file readable by Airflow's workers and triggerer."
    )


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------

_STR, _INT, _LIST, _DICT = (str,), (int,), (list,), (dict,)
# name: (accepted types, nullable) from the spec's 200 schema. ``id`` and ``status`` are needed to
# wait on a job at all; the rest is checked when present, and read as None when missing, since
# gateways of the same design omit some (Vertex jobs have no organization).
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "object": (_STR, False),
    "model": (_STR, False),
    "created_at": (_INT, False),
    "finished_at": (_INT, True),
    "fine_tuned_model": (_STR, True),
    "organization_id": (_STR, False),
    "result_files": (_LIST, False),
    "validation_file": (_STR, True),
    "training_file": (_STR, False),
    "hyperparameters": (_DICT, True),
    "trained_tokens": (_INT, True),
    "integrations": (_LIST, True),
    "seed": (_INT, True),
    "estimated_finish": (_INT, True),
    "method": (_DICT, True),
    "metadata": (_DICT, True),
}
# Unix seconds pass 1e11 only in the year 5138: anything larger is milliseconds.
_MILLISECONDS_FROM = 10**11


def parse_job(data: Any) -> FineTuningJob:
    """Turn the decoded JSON of a retrieve response into a :class:`FineTuningJob`.

    Anything that is not a fine-tuning job raises :class:`TrueFoundryResponseError` naming the
    field and what was wrong, never a bare KeyError or TypeError.
    """
    if not isinstance(data, dict):
        raise _bad_job(f"the body is a JSON {_json_type(data)}, not an object")
    for name in ("id", "status"):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            problem = "is missing" if value is None else f"is {_json_type(value)}, not a non-empty string"
            raise _bad_job(f"field {name!r} {problem}")
    values: dict[str, Any] = {}
    for name, (types, nullable) in _FIELDS.items():
        value = data.get(name)
        if value is None:
            if name in data and not nullable:
                raise _bad_job(f"field {name!r} is null")
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            raise _bad_job(f"field {name!r} is {_json_type(value)}, expected {_json_type(types[0]())}")
        values[name] = value
    if values.get("object", "fine_tuning.job") != "fine_tuning.job":
        # The value is not quoted: a misbehaving gateway could echo anything there, even the key.
        raise _bad_job(f"field 'object' is not 'fine_tuning.job' ({len(values['object'])} characters)")
    _check_items(values, "result_files", str)
    _check_items(values, "integrations", dict)
    metadata = values.get("metadata")
    if metadata is not None and not all(isinstance(v, str) for v in metadata.values()):
        raise _bad_job("field 'metadata' must map strings to strings")
    for name in TIMESTAMP_FIELDS & values.keys():
        if values[name] >= _MILLISECONDS_FROM:
            values[name] //= 1000
    return FineTuningJob(
        id=data["id"], status=data["status"], error=_job_error(data.get("error")), raw=data, **values
    )


def _check_items(values: dict[str, Any], name: str, item_type: type) -> None:
    items = values.get(name)
    if items is not None and not all(isinstance(item, item_type) for item in items):
        raise _bad_job(f"field {name!r} must be an array of {_json_type(item_type())}s")


def _job_error(value: Any) -> FineTuningJobError | None:
    """Read the gateway's optional ``error``; lenient, since the spec does not define it."""
    if isinstance(value, str) and value:
        return FineTuningJobError(message=value)
    if not isinstance(value, dict) or not any(value.get(k) for k in ("code", "message", "param")):
        return None

    def text(key: str) -> str | None:
        item = value.get(key)
        return None if item is None or item == "" else str(item)

    return FineTuningJobError(code=text("code"), message=text("message"), param=text("param"))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "number", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _bad_job(problem: str) -> TrueFoundryResponseError:
    return TrueFoundryResponseError(
        f"The gateway's answer is not a fine-tuning job: {problem}. The gateway may not follow "
        "TrueFoundry's fine-tuning API; check the connection's base URL."
    )


# --------------------------------------------------------------------------------------------
# Retry policy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before asking again after a transient failure.

    :param max_retries: retries after the first attempt within one call.
    :param retry_delay: the first backoff in seconds; it doubles per retry, up to ``max_delay``.
    :param max_delay: the backoff's cap.
    :param max_retry_after: the longest ``Retry-After`` honoured within one call.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    retry_delay: float = DEFAULT_RETRY_DELAY
    max_delay: float = MAX_BACKOFF
    max_retry_after: float = MAX_RETRY_AFTER

    @classmethod
    def from_params(cls, *, max_retries: Any = None, retry_delay: Any = None) -> RetryPolicy:
        """Validate user-facing hook parameters (``None`` keeps the default)."""
        if max_retries is None:
            max_retries = DEFAULT_MAX_RETRIES
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise TrueFoundryConfigError(
                f"max_retries must be a whole number 0 or more, got {max_retries!r}."
            )
        if retry_delay is None:
            retry_delay = DEFAULT_RETRY_DELAY
        if (
            isinstance(retry_delay, bool)
            or not isinstance(retry_delay, int | float)
            or not math.isfinite(retry_delay)
            or retry_delay < 0
        ):
            raise TrueFoundryConfigError(
                f"retry_delay must be a number of seconds 0 or more, got {retry_delay!r}."
            )
        return cls(
            max_retries=max_retries,
            retry_delay=float(retry_delay),
            max_delay=max(MAX_BACKOFF, float(retry_delay)),
        )

    def backoff(self, retry_number: int, rng: Callable[[], float] = random.random) -> float:
        """Exponential backoff with jitter for the n-th retry (1-based).

        Half the step is fixed and half random: callers that failed together spread out, and a
        wait is never near zero, so a struggling gateway is not hammered.
        """
        step = min(self.max_delay, self.retry_delay * 2 ** min(retry_number - 1, 30))
        return step / 2 + rng() * step / 2

    def should_retry(self, retry_number: int, error: BaseException) -> bool:
        """Whether retry ``retry_number`` (1-based) of one call should happen after ``error``."""
        if retry_number > self.max_retries or not isinstance(error, TrueFoundryError) or not error.retryable:
            return False
        retry_after = getattr(error, "retry_after", None)
        return retry_after is None or retry_after <= self.max_retry_after

    def wait_before_retry(
        self, retry_number: int, error: BaseException, rng: Callable[[], float] = random.random
    ) -> float | None:
        """Seconds to wait before retry ``retry_number`` within one call, or None to give up."""
        if not self.should_retry(retry_number, error):
            return None
        retry_after = getattr(error, "retry_after", None)
        return retry_after if retry_after is not None else self.backoff(retry_number, rng)

    def wait_after_failure(
        self,
        failures_in_a_row: int,
        error: BaseException,
        poll_interval: float,
        rng: Callable[[], float] = random.random,
    ) -> float:
        """Seconds a long-running poller waits after its n-th transient failure in a row.

        The first ``max_retries`` failures are retried like a call retries them; after that the
        poller falls back to its usual interval, as a sensor does at its next poke. A long
        ``Retry-After`` is honoured in full: a poller that keeps waiting has no reason to hurry.
        """
        wait = self.wait_before_retry(failures_in_a_row, error, rng)
        if wait is not None:
            return wait
        retry_after = getattr(error, "retry_after", None)
        return max(poll_interval, retry_after or 0.0)
