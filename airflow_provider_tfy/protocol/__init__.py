"""The gateway protocol without I/O: requests to send, answers to read, when to retry.

Everything here is a plain function of its inputs (the sans-I/O idea): it builds the request,
classifies the answer, decides whether and how long to wait before trying again, and parses the
job or file. The sync hook (requests) and the async trigger (aiohttp) only move bytes and sleep,
so the two can never disagree on what an answer means. One module per concern:

- :mod:`.headers`: the ``x-tfy-*`` header arguments, validated once (:class:`Headers`).
- :mod:`.configuration`: a gateway's settings from an Airflow connection, URL and TLS checks.
- :mod:`.requests`: every request (retrieve, list, create, cancel, upload).
- :mod:`.responses`: status classification, excerpts, ``Retry-After``, transport errors.
- :mod:`.jobs`: the fine-tuning job, list pages, cancel's answer.
- :mod:`.create`: create arguments, the body, the idempotency key and which keyed job survives.
- :mod:`.files`: the file object and the JSONL check before upload.
- :mod:`.retry`: :class:`RetryPolicy` and :func:`could_have_been_applied`.
- :mod:`.watch`: which jobs an event watcher reports (:func:`watch_step`).
"""

from __future__ import annotations

from airflow_provider_tfy.protocol.configuration import (
    DEFAULT_TIMEOUT,
    MAX_CONNECT_TIMEOUT,
    GatewayConfig,
    gateway_config,
    normalize_base_url,
    positive_number,
)
from airflow_provider_tfy.protocol.create import (
    IDEMPOTENCY_KEY_PATTERN,
    IDEMPOTENCY_METADATA_KEY,
    LOOKUP_MAX_PAGES,
    LOOKUP_PAGE_SIZE,
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_PAIRS,
    MAX_METADATA_VALUE_CHARS,
    MAX_SUFFIX_CHARS,
    Convergence,
    converge,
    create_body,
    create_not_done,
    create_outcome_unknown,
    job_metadata_with_key,
    reattachable,
    validate_idempotency_key,
)
from airflow_provider_tfy.protocol.files import (
    MAX_FILE_BYTES,
    MAX_REPORTED_LINES,
    JsonlValidator,
    parse_file,
    read_file_response,
)
from airflow_provider_tfy.protocol.headers import (
    HEADER_NAMES,
    HeaderArgs,
    Headers,
    check_header_names,
)
from airflow_provider_tfy.protocol.jobs import (
    carries_metadata,
    next_page_after,
    parse_job,
    read_cancel_response,
    read_job_response,
    read_jobs_page,
)
from airflow_provider_tfy.protocol.requests import (
    DEFAULT_PURPOSE,
    FILES_PATH,
    JOBS_PATH,
    MAX_JOB_ID_LENGTH,
    MAX_LIST_LIMIT,
    MultipartUpload,
    Request,
    build_headers,
    cancel_request,
    create_request,
    job_request,
    list_request,
    upload_request,
    validate_job_id,
    validate_metadata_filter,
)
from airflow_provider_tfy.protocol.responses import (
    BODY_EXCERPT_CHARS,
    MAX_BODY_BYTES,
    RETRYABLE_STATUSES,
    body_too_large,
    ca_bundle_error,
    check_status,
    excerpt,
    json_body,
    parse_retry_after,
    read_list_response,
    tls_error,
    transport_error,
)
from airflow_provider_tfy.protocol.retry import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_DELAY,
    MAX_BACKOFF,
    MAX_RETRY_AFTER,
    RetryPolicy,
    could_have_been_applied,
    wait_after_failed_poll,
)
from airflow_provider_tfy.protocol.watch import WatchState, covers, read_enough, watch_step

__all__ = [
    "BODY_EXCERPT_CHARS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_PURPOSE",
    "DEFAULT_RETRY_DELAY",
    "DEFAULT_TIMEOUT",
    "FILES_PATH",
    "HEADER_NAMES",
    "IDEMPOTENCY_KEY_PATTERN",
    "IDEMPOTENCY_METADATA_KEY",
    "JOBS_PATH",
    "LOOKUP_MAX_PAGES",
    "LOOKUP_PAGE_SIZE",
    "MAX_BACKOFF",
    "MAX_BODY_BYTES",
    "MAX_CONNECT_TIMEOUT",
    "MAX_FILE_BYTES",
    "MAX_JOB_ID_LENGTH",
    "MAX_LIST_LIMIT",
    "MAX_METADATA_KEY_CHARS",
    "MAX_METADATA_PAIRS",
    "MAX_METADATA_VALUE_CHARS",
    "MAX_REPORTED_LINES",
    "MAX_RETRY_AFTER",
    "MAX_SUFFIX_CHARS",
    "RETRYABLE_STATUSES",
    "Convergence",
    "GatewayConfig",
    "HeaderArgs",
    "Headers",
    "JsonlValidator",
    "MultipartUpload",
    "Request",
    "RetryPolicy",
    "WatchState",
    "body_too_large",
    "build_headers",
    "ca_bundle_error",
    "cancel_request",
    "carries_metadata",
    "check_header_names",
    "check_status",
    "converge",
    "could_have_been_applied",
    "covers",
    "create_body",
    "create_not_done",
    "create_outcome_unknown",
    "create_request",
    "excerpt",
    "gateway_config",
    "job_metadata_with_key",
    "job_request",
    "json_body",
    "list_request",
    "next_page_after",
    "normalize_base_url",
    "parse_file",
    "parse_job",
    "parse_retry_after",
    "positive_number",
    "read_cancel_response",
    "read_enough",
    "read_file_response",
    "read_job_response",
    "read_jobs_page",
    "read_list_response",
    "reattachable",
    "tls_error",
    "transport_error",
    "upload_request",
    "validate_idempotency_key",
    "validate_job_id",
    "validate_metadata_filter",
    "wait_after_failed_poll",
    "watch_step",
]
