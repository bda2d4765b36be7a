"""The gateway's objects parsed strictly: the fine-tuning job, a page of jobs, the uploaded file."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, NamedTuple

from airflow_provider_tfy.exceptions import TrueFoundryResponseError
from airflow_provider_tfy.models import (
    FILE_TIMESTAMP_FIELDS,
    TIMESTAMP_FIELDS,
    FineTuningJob,
    FineTuningJobError,
    TrueFoundryFile,
)
from airflow_provider_tfy.protocol.answers import excerpt, json_type

# Unix seconds pass 1e11 only in the year 5138: anything larger is milliseconds (Vertex jobs).
_MILLISECONDS_FROM = 10**11


class _Kind(NamedTuple):
    """How one gateway object is read: its model, ``object`` value, required strings, fields the
    spec never allows to be null (any other may be null or missing: Vertex jobs have no
    organization), and what messages call it and its API."""

    model: type
    object: str
    required: tuple[str, ...]
    not_null: frozenset[str]
    what: str
    api: str


_JOB = _Kind(
    FineTuningJob,
    "fine_tuning.job",
    ("id", "status"),
    frozenset({"object", "model", "created_at", "organization_id", "result_files", "training_file"}),
    "a fine-tuning job",
    "fine-tuning",
)
_FILE = _Kind(TrueFoundryFile, "file", ("id",), frozenset({"object"}), "a file object", "files")


class JobPage(NamedTuple):
    """One page of the job list: its jobs, newest first, and whether more follow."""

    jobs: list[FineTuningJob]
    has_more: bool


def parse_job(data: Any) -> FineTuningJob:
    """The :class:`FineTuningJob` in a decoded retrieve answer, or a :class:`TrueFoundryResponseError`
    naming the field and what was wrong (never a bare KeyError or TypeError)."""
    values = _typed_fields(data, _JOB)
    for name, item_type in (("result_files", str), ("integrations", dict)):
        if not all(isinstance(item, item_type) for item in values.get(name) or ()):
            raise _not_a(_JOB, f"field {name!r} must be an array of {json_type(item_type())}s")
    if not all(isinstance(v, str) for v in (values.get("metadata") or {}).values()):
        raise _not_a(_JOB, "field 'metadata' must map strings to strings")
    return FineTuningJob(error=_job_error(data.get("error")), raw=data, **_seconds(values, TIMESTAMP_FIELDS))


def parse_file(data: Any) -> TrueFoundryFile:
    """The :class:`TrueFoundryFile` in a decoded upload answer, parsed as strictly as a job."""
    values = _typed_fields(data, _FILE)
    return TrueFoundryFile(raw=data, **_seconds(values, FILE_TIMESTAMP_FIELDS))


def parse_page(data: Any, target: str, secret: str) -> JobPage:
    """The :class:`JobPage` in a decoded list answer (each job key-free, see :func:`without_secret`)."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        what = "no 'data' array" if isinstance(data, dict) else f"a JSON {json_type(data)}"
        raise TrueFoundryResponseError(
            f"The gateway's answer to {target} is not a list of fine-tuning jobs: it has "
            f"{what}. The gateway may not follow TrueFoundry's fine-tuning API; check the base URL."
        )
    has_more = data.get("has_more", False)
    if not isinstance(has_more, bool):
        raise _not_a(_JOB, f"the list's 'has_more' is {json_type(has_more)}, not a boolean")
    return JobPage([without_secret(parse_job(item), secret) for item in data["data"]], has_more)


def without_secret(job: FineTuningJob, secret: str) -> FineTuningJob:
    """The job with its ``error`` cut short and any echo of the key redacted: the gateway's text
    travels into exceptions, logs, trigger events and XCom."""
    if job.error is None:
        return job
    parts = {k: excerpt(v, secret) if v else v for k, v in dataclasses.asdict(job.error).items()}
    return dataclasses.replace(job, error=FineTuningJobError(**parts), raw={**job.raw, "error": parts})


def carries_metadata(job: FineTuningJob, wanted: Mapping[str, str]) -> bool:
    """Whether the job's own metadata holds every wanted pair (a gateway may ignore the filter)."""
    metadata = job.metadata or {}
    return all(metadata.get(key) == value for key, value in wanted.items())


def next_page_after(jobs: list[FineTuningJob], has_more: bool, after: str | None) -> str | None:
    """The ``after`` cursor for the next page, or None when the list is done; a gateway that
    ignores ``after`` (the same page again) is an error, not an endless iterator."""
    if not has_more or not jobs:
        return None
    if jobs[-1].id == after:
        raise TrueFoundryResponseError(
            f"The gateway answered the same page of fine-tuning jobs again for after={after!r}: it "
            "does not follow the list's pagination, so the jobs past that page cannot be listed. "
            "Check that the base URL points at the gateway itself, not a proxy that drops the query."
        )
    return jobs[-1].id


def _typed_fields(data: Any, kind: _Kind) -> dict[str, Any]:
    """The required strings and the other present fields of an object, each checked against the
    JSON type its model dataclass declares for it (the one declaration of the fields)."""
    if not isinstance(data, dict):
        raise _not_a(kind, f"the body is a JSON {json_type(data)}, not an object")
    values: dict[str, Any] = {}
    for name in kind.required:
        value = values[name] = data.get(name)
        if not isinstance(value, str) or not value:
            problem = "is missing" if value is None else f"is {json_type(value)}, not a non-empty string"
            raise _not_a(kind, f"field {name!r} {problem}")
    for name, json_class in _json_classes(kind.model).items():
        value = data.get(name)
        if name in kind.required or value is None:
            if value is None and name in data and name in kind.not_null:
                raise _not_a(kind, f"field {name!r} is null")
        elif not isinstance(value, json_class) or isinstance(value, bool):
            raise _not_a(kind, f"field {name!r} is {json_type(value)}, expected {json_type(json_class())}")
        else:
            values[name] = value
    if values.get("object", kind.object) != kind.object:
        # Not quoted: a misbehaving gateway could echo anything there, even the key.
        raise _not_a(kind, f"field 'object' is not {kind.object!r} ({len(values['object'])} characters)")
    return values


@functools.cache
def _json_classes(model: type) -> dict[str, type]:
    """Each gateway field of a model dataclass and the Python class its JSON value must have."""
    hints = typing.get_type_hints(model)
    classes = {}
    for field in dataclasses.fields(model):
        hint = hints[field.name]
        if isinstance(hint, types.UnionType):  # ``X | None``: the class is X's
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        if field.name not in ("error", "raw"):
            classes[field.name] = typing.get_origin(hint) or hint
    return classes


def _seconds(values: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    for name in names & values.keys():
        if values[name] >= _MILLISECONDS_FROM:
            values[name] //= 1000
    return values


def _job_error(value: Any) -> FineTuningJobError | None:
    """The gateway's optional ``error``, read leniently: the spec does not define it."""
    if isinstance(value, str) and value:
        return FineTuningJobError(message=value)
    if not isinstance(value, dict) or not any(value.get(k) for k in ("code", "message", "param")):
        return None
    return FineTuningJobError(
        **{k: None if value.get(k) in (None, "") else str(value[k]) for k in ("code", "message", "param")}
    )


def _not_a(kind: _Kind, problem: str) -> TrueFoundryResponseError:
    return TrueFoundryResponseError(
        f"The gateway's answer is not {kind.what}: {problem}. The gateway may not follow "
        f"TrueFoundry's {kind.api} API; check the connection's base URL."
    )
