"""Creating a fine-tuning job: argument checks, the request body and the idempotency key.

No key is documented for the gateway's create, so the key travels in the job's own metadata,
written by the very request that creates the job; a later look-up for that metadata finds it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Unpack

from airflow_provider_tfy.exceptions import TrueFoundryConfigError, TrueFoundryError
from airflow_provider_tfy.header_spec import CREATE_FIELDS, CreateArgs, with_keywords
from airflow_provider_tfy.models import FineTuningJob, JobOutcome
from airflow_provider_tfy.protocol.answers import json_type
from airflow_provider_tfy.protocol.settings import has_control_chars

IDEMPOTENCY_METADATA_KEY = "airflow_idempotency_key"
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_SUFFIX_CHARS = 64
# The look-up for a key reads at most this many pages of this size, newest first. A gateway that
# honours the metadata filter answers only jobs with the key, so the bound is never reached; one
# that ignores it would otherwise make every create scan the account's whole history. A job
# older than the newest 500 is far older than any task retry.
LOOKUP_PAGE_SIZE = 100
LOOKUP_MAX_PAGES = 5
_MAX_JSON_DEPTH = 32


def validate_idempotency_key(key: Any) -> str | None:
    """Return the key (or None); it must be 1-64 characters of ``[A-Za-z0-9._:-]``."""
    if key is None:
        return None
    if not isinstance(key, str) or not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        shown = f"{len(key)} characters" if isinstance(key, str) else type(key).__name__
        raise _bad_arg(
            f"idempotency_key must be 1-64 characters of letters, digits and . _ : - (got {shown}); "
            "derive it from what makes the job unique, e.g. '<dag_id>.<task_id>.<run_id>' made safe"
        )
    return key


@with_keywords(CREATE_FIELDS, before="idempotency_key")
def create_body(*, idempotency_key: Any = None, **arguments: Unpack[CreateArgs]) -> dict[str, Any]:
    """Check the create arguments and return the JSON body; every problem is named before any request."""
    unknown = sorted(set(arguments) - set(CREATE_FIELDS))
    if unknown:
        raise TypeError(f"create_body() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
    key = validate_idempotency_key(idempotency_key)
    given: dict[str, Any] = {name: value for name, value in arguments.items() if value is not None}
    body: dict[str, Any] = {
        "model": _text(given.get("model"), "model", "the base model, e.g. 'gpt-4o-mini-2024-07-18'"),
        "training_file": _text(
            given.get("training_file"), "training_file", "an uploaded file's id, e.g. 'file-abc123'"
        ),
    }
    if "validation_file" in given:
        body["validation_file"] = _text(given["validation_file"], "validation_file", "an uploaded file's id")
    for name in ("method", "hyperparameters"):
        if name in given:
            if not isinstance(given[name], Mapping):
                raise _bad_arg(f"{name} must be a dict (a JSON object), got {type(given[name]).__name__}")
            body[name] = _json_safe(given[name], name, 0)
    if "suffix" in given:
        suffix = given["suffix"]
        if not isinstance(suffix, str) or len(suffix) > MAX_SUFFIX_CHARS:
            got = f"{len(suffix)} characters" if isinstance(suffix, str) else type(suffix).__name__
            raise _bad_arg(f"suffix must be a string of at most {MAX_SUFFIX_CHARS} characters, got {got}")
        body["suffix"] = suffix
    if "seed" in given:
        if isinstance(given["seed"], bool) or not isinstance(given["seed"], int):
            raise _bad_arg(f"seed must be a whole number, got {type(given['seed']).__name__}")
        body["seed"] = given["seed"]
    if "integrations" in given:
        integrations = given["integrations"]
        if not isinstance(integrations, list | tuple) or not all(
            isinstance(i, Mapping) for i in integrations
        ):
            raise _bad_arg("integrations must be a list of dicts, e.g. [{'type': 'wandb', 'wandb': {...}}]")
        body["integrations"] = _json_safe(list(integrations), "integrations", 0)
    metadata = job_metadata_with_key(given.get("job_metadata"), key)
    if metadata:
        body["metadata"] = metadata
    return body


def job_metadata_with_key(job_metadata: Any, key: str | None) -> dict[str, str]:
    """The job's own metadata, with the idempotency key added under its documented name."""
    if job_metadata is None:
        job_metadata = {}
    if not isinstance(job_metadata, Mapping):
        raise _bad_arg(f"job_metadata must be a dict of strings, got {type(job_metadata).__name__}")
    metadata: dict[str, str] = {}
    for name, value in job_metadata.items():
        if not isinstance(name, str) or not name or len(name) > MAX_METADATA_KEY_CHARS:
            raise _bad_arg(
                f"job_metadata keys must be strings of 1-{MAX_METADATA_KEY_CHARS} characters, got {name!r}"
            )
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE_CHARS:
            got = f"{len(value)} characters" if isinstance(value, str) else json_type(value)
            raise _bad_arg(
                f"job_metadata[{name!r}] must be a string of at most {MAX_METADATA_VALUE_CHARS} "
                f"characters, got {got}"
            )
        metadata[name] = value
    if key is not None or IDEMPOTENCY_METADATA_KEY in metadata:
        if metadata.get(IDEMPOTENCY_METADATA_KEY, key) != key:
            raise _bad_arg(
                f"job_metadata key {IDEMPOTENCY_METADATA_KEY!r} is reserved for the idempotency key; "
                "pass idempotency_key= instead"
            )
        metadata[IDEMPOTENCY_METADATA_KEY] = key  # type: ignore[assignment]  # not None: checked above
    if len(metadata) > MAX_METADATA_PAIRS:
        counted = " (the idempotency key counts as one)" if key is not None else ""
        raise _bad_arg(
            f"job_metadata has {len(metadata)} pairs, more than the gateway's {MAX_METADATA_PAIRS}{counted}"
        )
    return metadata


def reattachable(job: FineTuningJob, key: str) -> bool:
    """Whether a job found by the key stands for the create: it carries the key and is not over badly.

    A queued, validating, running or succeeded job (or one in a status we do not know yet) is the
    job; a failed or cancelled one is passed over, so a retry starts afresh.
    """
    carries = (job.metadata or {}).get(IDEMPOTENCY_METADATA_KEY) == key
    return carries and job.outcome not in (JobOutcome.FAILED, JobOutcome.CANCELLED)


class Convergence(NamedTuple):
    """Which job the jobs carrying one key converge on, and which of the others to cancel."""

    survivor: FineTuningJob | None
    to_cancel: list[FineTuningJob]


def converge(jobs: Iterable[FineTuningJob], key: str) -> Convergence:
    """Decide among the jobs found by ``key``: every try that looks decides alike.

    The survivor is the oldest :func:`reattachable` job (``created_at``, then ``id``: a total
    order, so overlapping tries agree whenever each looks); the other live ones are to be
    cancelled (a succeeded one has nothing to cancel). Jobs without the key are ignored; of a job
    given twice, the later copy counts (pass the freshest last).
    """
    latest = {job.id: job for job in jobs}
    live = sorted(
        (job for job in latest.values() if reattachable(job, key)),
        key=lambda job: (job.created_at is None, job.created_at or 0, job.id),
    )
    if not live:
        return Convergence(None, [])
    return Convergence(live[0], [job for job in live[1:] if job.outcome is JobOutcome.IN_PROGRESS])


def create_outcome_unknown(error: TrueFoundryError, target: str) -> TrueFoundryError:
    """The error for a create without a key whose outcome is unknown: it is not sent again."""
    return _restated(
        error,
        f"{error} The fine-tuning job may or may not exist: {target} was not sent again, since that "
        "could start a second paid job. Check the gateway's job list (list_fine_tuning_jobs, "
        "GET /fine_tuning/jobs) or the TrueFoundry console before creating it again; pass an "
        "idempotency_key so that a retry finds the job itself.",
        retryable=False,
    )


def create_not_done(error: TrueFoundryError, key: str, attempts: int) -> TrueFoundryError:
    """The error for a keyed create that kept failing while no job carried the key."""
    return _restated(
        error,
        f"{error} Creating the fine-tuning job failed {attempts} time(s), and no job carries "
        f"idempotency key {key!r}: none was created, so retrying the task later is safe.",
        retryable=error.retryable,
    )


def _restated(error: TrueFoundryError, message: str, *, retryable: bool) -> TrueFoundryError:
    """A copy of ``error`` (same class and details) with a new message."""
    new = type(error).__new__(type(error), message)  # __init__ would want the details again
    new.__dict__.update(vars(error))
    new.retryable = retryable
    return new


def _text(value: Any, name: str, hint: str) -> str:
    if not isinstance(value, str) or not value.strip():
        got = "an empty string" if isinstance(value, str) else type(value).__name__
        raise _bad_arg(f"{name} must be a non-empty string ({hint}), got {got}")
    if value != value.strip() or has_control_chars(value):
        raise _bad_arg(f"{name} {value[:80]!r} has spaces or control characters around it ({hint})")
    return value


def _json_safe(value: Any, where: str, depth: int) -> Any:
    """A copy of ``value`` as plain JSON, or a clear error naming the first part that is not."""
    if depth > _MAX_JSON_DEPTH:
        raise _bad_arg(f"{where} is nested more than {_MAX_JSON_DEPTH} levels deep")
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad_arg(f"{where} is {value}, which JSON cannot carry")
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _bad_arg(f"{where} has a key that is not a string ({key!r})")
            out[key] = _json_safe(item, f"{where}[{key!r}]", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_json_safe(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise _bad_arg(
        f"{where} is a {type(value).__name__}, which is not JSON (use dicts, lists, strings, numbers)"
    )


def _bad_arg(problem: str) -> TrueFoundryConfigError:
    return TrueFoundryConfigError(f"create_fine_tuning_job: {problem}. Nothing was sent to the gateway.")
