"""Reading the gateway's answers: status classification, excerpts, Retry-After, transport errors."""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from airflow_provider_tfy.exceptions import (
    FineTuningJobNotFound,
    TrueFoundryAPIError,
    TrueFoundryAuthError,
    TrueFoundryConfigError,
    TrueFoundryConnectionError,
    TrueFoundryResponseError,
)
from airflow_provider_tfy.protocol.configuration import GatewayConfig
from airflow_provider_tfy.protocol.requests import FILES_PATH, JOBS_PATH, Request

BODY_EXCERPT_CHARS = 300
# A job, a file object or a page of 100 jobs is far smaller; a body past this is not an answer
# of ours, and must not fill a worker's memory.
MAX_BODY_BYTES = 4 * 1024 * 1024
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


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
        what = (
            f"Fine-tuning job {job_id!r} was not found"
            if job_id
            else f"{FILES_PATH if request.upload else JOBS_PATH} was not found"
        )
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


def read_list_response(
    config: GatewayConfig, request: Request, status: int, headers: Mapping[str, str], body: bytes
) -> None:
    """Classify the answer to :func:`list_request`; return if the gateway accepted the key."""
    check_status(config, request, status, headers, body)


def transport_error(
    request: Request, reason: str, *, timed_out: bool = False, sent: bool = True
) -> TrueFoundryConnectionError:
    """The error for a request that got no HTTP answer (refused, reset, timed out).

    ``sent=False`` only when the transport knows the request never left: the connection was
    refused or never opened. Anything later (a reset, a read timeout) may follow a request the
    gateway acted on.
    """
    what = "did not answer in time" if timed_out else "could not be reached"
    return TrueFoundryConnectionError(
        f"The gateway {what} for {request.target} ({reason}). This is usually temporary; if it "
        "persists, check the connection's gateway base URL and the network.",
        request_sent=sent,
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


def json_body(config: GatewayConfig, request: Request, status: int, body: bytes) -> Any:
    """Decode a 2xx answer's JSON; a body that is not JSON is retryable (cut off, a proxy's page)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise TrueFoundryResponseError(
            f"The gateway answered {request.target} with HTTP {status} but the body is not JSON "
            f"(cut off, or a proxy's page?): {excerpt(body, config.api_key, 120)!r}. Retrying may help.",
            retryable=True,
        ) from None


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "number", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )
