"""What an answer, or its absence, means: status classes, excerpts, ``Retry-After``, transport errors."""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_tfy.exceptions import (
    FineTuningJobNotFound,
    TrueFoundryAPIError,
    TrueFoundryAuthError,
    TrueFoundryConfigError,
    TrueFoundryConnectionError,
    TrueFoundryResponseError,
)

if TYPE_CHECKING:
    from airflow_provider_tfy.protocol.gateway import Answer, Request
    from airflow_provider_tfy.protocol.settings import GatewayConfig

BODY_EXCERPT_CHARS = 300
# A job, a file object or a page of 100 jobs is far smaller; a body past this is not an answer
# of ours, and must not fill a worker's memory.
MAX_BODY_BYTES = 4 * 1024 * 1024
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def excerpt(body: bytes | str, secret: str | None = None, limit: int = BODY_EXCERPT_CHARS) -> str:
    """A short, single-line, key-free excerpt of a response body for messages and logs."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if secret:  # the whole body before cutting, so no part of a key survives at the cut
        text = text.replace(secret, "***")
    text = re.sub(r"\s+", " ", text[: limit * 4]).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def check_status(
    config: GatewayConfig, request: Request[Any], answer: Answer, *, now: float | None = None
) -> None:
    """Raise the right :class:`TrueFoundryAPIError` for a non-2xx answer; return on 2xx."""
    status, job_id = answer.status, request.job_id
    if 200 <= status < 300:
        return
    headers = {name.lower(): value for name, value in answer.headers.items()}
    text = excerpt(_error_message(answer.body) or answer.body, config.api_key)
    detail = f": {text.rstrip('. ')}" if text else ""
    if status in (401, 403):
        subject = f"fine-tuning job {job_id!r}" if job_id else "the fine-tuning API"
        verb = "rejected the API key" if status == 401 else "refused access to " + subject
        raise TrueFoundryAuthError(
            f"The gateway at {config.origin} {verb} (HTTP {status}){detail}. Check the API key in "
            f"connection {config.conn_id!r} and that it may read fine-tuning jobs.",
            status_code=status,
            body_excerpt=text,
        )
    if status == 404:
        what = (
            f"Fine-tuning job {job_id!r}" if job_id else "/files" if request.upload else "/fine_tuning/jobs"
        )
        raise FineTuningJobNotFound(
            f"{what} was not found at {config.base_url} (HTTP 404){detail}. Check the job id, the provider "
            "account (x-tfy-provider-name) and that the base URL includes any path prefix such as /api/llm.",
            status_code=status,
            body_excerpt=text,
        )
    if 300 <= status < 400:  # never followed: a redirect could carry the key to another origin
        raise TrueFoundryAPIError(
            f"The gateway answered {request.target} with a redirect (HTTP {status}) to "
            f"{excerpt(headers.get('location') or 'elsewhere', config.api_key)}; set the "
            "connection's host to the final gateway URL.",
            status_code=status,
            body_excerpt=text,
        )
    retryable = status in RETRYABLE_STATUSES
    reason = "rate-limited the request" if status == 429 else f"answered HTTP {status}"
    raise TrueFoundryAPIError(
        f"The gateway {reason} for {request.target}{detail}."
        + (" This is usually temporary." if retryable else " Check the request's arguments."),
        status_code=status,
        body_excerpt=text,
        retry_after=parse_retry_after(headers.get("retry-after"), now),
        retryable=retryable,
    )


def json_body(config: GatewayConfig, request: Request[Any], answer: Answer) -> Any:
    """Decode a 2xx answer's JSON; a body that is not JSON is retryable (cut off, a proxy's page)."""
    try:
        return json.loads(answer.body)
    except (ValueError, RecursionError):
        raise TrueFoundryResponseError(
            f"The gateway answered {request.target} with HTTP {answer.status} but the body is not JSON "
            f"(cut off, or a proxy's page?): {excerpt(answer.body, config.api_key, 120)!r}. "
            "Retrying may help.",
            retryable=True,
        ) from None


def transport_error(
    request: Request[Any], reason: str, *, timed_out: bool = False, sent: bool = True
) -> TrueFoundryConnectionError:
    """The error for a request that got no HTTP answer (refused, reset, timed out).

    ``sent=False`` only when the transport knows the request never left (refused, never opened);
    after a reset or a read timeout the gateway may have acted on it.
    """
    what = "did not answer in time" if timed_out else "could not be reached"
    return TrueFoundryConnectionError(
        f"The gateway {what} for {request.target} ({reason}). This is usually temporary; if it "
        "persists, check the connection's gateway base URL and the network.",
        request_sent=sent,
    )


def body_too_large(request: Request[Any]) -> TrueFoundryConnectionError:
    """The error for an answer whose body is far larger than any job."""
    return transport_error(request, f"the body is larger than {MAX_BODY_BYTES} bytes")


def tls_error(request: Request[Any], reason: str) -> TrueFoundryConnectionError:
    """The error for a certificate that failed verification: not retried, since it will not start
    verifying within a wait, and retrying a possible interception only sends the key again."""
    error = TrueFoundryConnectionError(
        f"TLS verification failed for {request.target} ({reason[:200]}). Check the gateway's "
        "certificate, or give the connection's extra 'verify' the path of the CA bundle that signs it.",
        request_sent=False,  # the handshake fails before any request is written
    )
    error.retryable = False
    return error


def ca_bundle_error(verify: bool | str, reason: str) -> TrueFoundryConfigError:
    """The error for a ``verify`` CA bundle path that cannot be loaded."""
    return TrueFoundryConfigError(
        f"The connection's extra 'verify' names the CA bundle {verify!r}, which could not be loaded "
        f"({reason[:200]}); give the path of a PEM file readable by Airflow's workers and triggerer."
    )


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    names = {bool: "boolean", str: "string", int: "integer", float: "number", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _error_message(body: bytes) -> str | None:
    """The gateway's own error text, from an OpenAI-style ``{"error": {"message": ...}}`` body."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error", data)
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    return data["message"] if isinstance(data.get("message"), str) else None
