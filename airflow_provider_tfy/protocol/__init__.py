"""The gateway protocol without I/O: the requests to send, what the answers mean, when to retry.

The sync hook (requests) and the async triggers (aiohttp) only move bytes and sleep; everything
they decide comes from here, so the two can never disagree. One module per concern:

- :mod:`.settings`: a gateway's settings from a connection, and the ``x-tfy-*`` header values.
- :mod:`.gateway`: :class:`Gateway`, which builds every request and reads every answer.
- :mod:`.answers`: status classes, excerpts, ``Retry-After``, transport errors.
- :mod:`.objects`: the job, a page of jobs and the file, parsed strictly.
- :mod:`.create`: create arguments, the idempotency key, which keyed job survives.
- :mod:`.retry`: :class:`RetryPolicy` (one retry rule for both transports) and the wait's decision.
- :mod:`.files`: the JSONL check before an upload; :mod:`.watch`: what an event watcher reports.
"""

from __future__ import annotations

from airflow_provider_tfy.header_spec import HeaderArgs
from airflow_provider_tfy.protocol.answers import (
    MAX_BODY_BYTES,
    body_too_large,
    ca_bundle_error,
    tls_error,
    transport_error,
)
from airflow_provider_tfy.protocol.create import (
    IDEMPOTENCY_METADATA_KEY,
    LOOKUP_MAX_PAGES,
    LOOKUP_PAGE_SIZE,
    converge,
    create_body,
    create_not_done,
    create_outcome_unknown,
    validate_idempotency_key,
)
from airflow_provider_tfy.protocol.files import JsonlValidator
from airflow_provider_tfy.protocol.gateway import (
    DEFAULT_PURPOSE,
    JOBS_PATH,
    MAX_LIST_LIMIT,
    Answer,
    Gateway,
    MultipartUpload,
    Request,
    validate_metadata_filter,
)
from airflow_provider_tfy.protocol.objects import JobPage, carries_metadata, next_page_after, parse_job
from airflow_provider_tfy.protocol.retry import (
    RetryPolicy,
    could_have_been_applied,
    sleeps_past,
    wait_after_failed_poll,
)
from airflow_provider_tfy.protocol.settings import (
    GatewayConfig,
    Headers,
    check_header_names,
    gateway_config,
    positive_number,
)
from airflow_provider_tfy.protocol.watch import WatchState, covers, read_enough, watch_step

__all__ = [
    "DEFAULT_PURPOSE",
    "IDEMPOTENCY_METADATA_KEY",
    "JOBS_PATH",
    "LOOKUP_MAX_PAGES",
    "LOOKUP_PAGE_SIZE",
    "MAX_BODY_BYTES",
    "MAX_LIST_LIMIT",
    "Answer",
    "Gateway",
    "GatewayConfig",
    "HeaderArgs",
    "Headers",
    "JobPage",
    "JsonlValidator",
    "MultipartUpload",
    "Request",
    "RetryPolicy",
    "WatchState",
    "body_too_large",
    "ca_bundle_error",
    "carries_metadata",
    "check_header_names",
    "converge",
    "could_have_been_applied",
    "covers",
    "create_body",
    "create_not_done",
    "create_outcome_unknown",
    "gateway_config",
    "next_page_after",
    "parse_job",
    "positive_number",
    "read_enough",
    "sleeps_past",
    "tls_error",
    "transport_error",
    "validate_idempotency_key",
    "validate_metadata_filter",
    "wait_after_failed_poll",
    "watch_step",
]
