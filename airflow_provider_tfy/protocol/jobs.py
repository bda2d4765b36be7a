"""The fine-tuning job: parsing it strictly, reading job and list answers, cancel's special case."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_tfy.exceptions import (
    FineTuningJobNotFound,
    TrueFoundryAPIError,
    TrueFoundryResponseError,
)
from airflow_provider_tfy.models import TIMESTAMP_FIELDS, FineTuningJob, FineTuningJobError
from airflow_provider_tfy.protocol.configuration import GatewayConfig
from airflow_provider_tfy.protocol.requests import Request
from airflow_provider_tfy.protocol.responses import check_status, excerpt, json_body, json_type

# name: (accepted types, nullable) from the spec's 200 schema. ``id`` and ``status`` are needed to
# wait on a job at all; the rest is checked when present, and read as None when missing, since
# gateways of the same design omit some (Vertex jobs have no organization).
_FIELDS: dict[str, tuple[type, bool]] = {
    "object": (str, False),
    "model": (str, False),
    "created_at": (int, False),
    "finished_at": (int, True),
    "fine_tuned_model": (str, True),
    "organization_id": (str, False),
    "result_files": (list, False),
    "validation_file": (str, True),
    "training_file": (str, False),
    "hyperparameters": (dict, True),
    "trained_tokens": (int, True),
    "integrations": (list, True),
    "seed": (int, True),
    "estimated_finish": (int, True),
    "method": (dict, True),
    "metadata": (dict, True),
}
# Unix seconds pass 1e11 only in the year 5138: anything larger is milliseconds.
_MILLISECONDS_FROM = 10**11


def typed_fields(
    data: Mapping[str, Any],
    fields: Mapping[str, tuple[type, bool]],
    bad: Callable[[str], TrueFoundryResponseError],
) -> dict[str, Any]:
    """The present, non-null ``fields`` of a decoded object, each checked against its JSON type.

    ``fields`` maps a name to (type, nullable); a missing field is left out, a null one is
    refused unless nullable, and ``bad`` builds the error naming what was wrong.
    """
    values: dict[str, Any] = {}
    for name, (kind, nullable) in fields.items():
        value = data.get(name)
        if value is None:
            if name in data and not nullable:
                raise bad(f"field {name!r} is null")
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(f"field {name!r} is {json_type(value)}, expected {json_type(kind())}")
        values[name] = value
    return values


def unix_seconds(value: int) -> int:
    """A timestamp in Unix seconds; some gateways send milliseconds (Vertex jobs)."""
    return value // 1000 if value >= _MILLISECONDS_FROM else value


def parse_job(data: Any) -> FineTuningJob:
    """Turn the decoded JSON of a retrieve response into a :class:`FineTuningJob`.

    Anything that is not a fine-tuning job raises :class:`TrueFoundryResponseError` naming the
    field and what was wrong, never a bare KeyError or TypeError.
    """
    if not isinstance(data, dict):
        raise _bad_job(f"the body is a JSON {json_type(data)}, not an object")
    for name in ("id", "status"):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            problem = "is missing" if value is None else f"is {json_type(value)}, not a non-empty string"
            raise _bad_job(f"field {name!r} {problem}")
    values = typed_fields(data, _FIELDS, _bad_job)
    if values.get("object", "fine_tuning.job") != "fine_tuning.job":
        # The value is not quoted: a misbehaving gateway could echo anything there, even the key.
        raise _bad_job(f"field 'object' is not 'fine_tuning.job' ({len(values['object'])} characters)")
    _check_items(values, "result_files", str)
    _check_items(values, "integrations", dict)
    metadata = values.get("metadata")
    if metadata is not None and not all(isinstance(v, str) for v in metadata.values()):
        raise _bad_job("field 'metadata' must map strings to strings")
    for name in TIMESTAMP_FIELDS & values.keys():
        values[name] = unix_seconds(values[name])
    return FineTuningJob(
        id=data["id"], status=data["status"], error=_job_error(data.get("error")), raw=data, **values
    )


def _check_items(values: dict[str, Any], name: str, item_type: type) -> None:
    items = values.get(name)
    if items is not None and not all(isinstance(item, item_type) for item in items):
        raise _bad_job(f"field {name!r} must be an array of {json_type(item_type())}s")


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


def _bad_job(problem: str) -> TrueFoundryResponseError:
    return TrueFoundryResponseError(
        f"The gateway's answer is not a fine-tuning job: {problem}. The gateway may not follow "
        "TrueFoundry's fine-tuning API; check the connection's base URL."
    )


def read_job_response(
    config: GatewayConfig,
    request: Request,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    job_id: str | None = None,
    now: float | None = None,
) -> FineTuningJob:
    """Classify the answer to a retrieve or a create and return the job, or raise."""
    check_status(config, request, status, headers, body, job_id=job_id, now=now)
    return _without_secret(parse_job(json_body(config, request, status, body)), config.api_key)


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


def read_jobs_page(
    config: GatewayConfig,
    request: Request,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
) -> tuple[list[FineTuningJob], bool]:
    """Read one page of a list answer: its jobs (newest first) and whether more follow."""
    check_status(config, request, status, headers, body, now=now)
    data = json_body(config, request, status, body)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        what = "no 'data' array" if isinstance(data, dict) else f"a JSON {json_type(data)}"
        raise TrueFoundryResponseError(
            f"The gateway's answer to {request.target} is not a list of fine-tuning jobs: it has "
            f"{what}. The gateway may not follow TrueFoundry's fine-tuning API; check the base URL."
        )
    has_more = data.get("has_more", False)
    if not isinstance(has_more, bool):
        raise _bad_job(f"the list's 'has_more' is {json_type(has_more)}, not a boolean")
    return [_without_secret(parse_job(item), config.api_key) for item in data["data"]], has_more


def carries_metadata(job: FineTuningJob, wanted: Mapping[str, str]) -> bool:
    """Whether the job's own metadata holds every wanted pair (a gateway may ignore the filter)."""
    metadata = job.metadata or {}
    return all(metadata.get(key) == value for key, value in wanted.items())


def next_page_after(jobs: list[FineTuningJob], has_more: bool, after: str | None) -> str | None:
    """The ``after`` cursor for the next page, or None when the list is done.

    A gateway that ignores ``after`` would answer the same page for ever: that is an error, not
    an endless iterator.
    """
    if not has_more or not jobs:
        return None
    if jobs[-1].id == after:
        raise TrueFoundryResponseError(
            f"The gateway answered the same page of fine-tuning jobs again for after={after!r}: it "
            "does not follow the list's pagination, so the jobs past that page cannot be listed. "
            "Check that the base URL points at the gateway itself, not a proxy that drops the query."
        )
    return jobs[-1].id


def read_cancel_response(
    config: GatewayConfig,
    request: Request,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    job_id: str,
    now: float | None = None,
) -> FineTuningJob:
    """Read the answer to a cancel; 404/405 on that path usually means it is not served at all.

    TrueFoundry does not document cancel for the gateway, so a 404 may mean either that the path
    is unknown or that the job is; the message names both.
    """
    if status in (404, 405):
        text = excerpt(body, config.api_key)
        detail = f" ({text.rstrip('. ')})" if text else ""
        kind = FineTuningJobNotFound if status == 404 else TrueFoundryAPIError
        raise kind(
            f"The gateway at {config.origin} answered HTTP {status} to {request.target}{detail}: this "
            "gateway cannot cancel fine-tuning jobs"
            + (f", or it does not know job {job_id!r}" if status == 404 else "")
            + ". Cancel the job in the TrueFoundry console (or the provider's own console) instead.",
            status_code=status,
            body_excerpt=text,
        )
    return read_job_response(config, request, status, headers, body, job_id=job_id, now=now)
