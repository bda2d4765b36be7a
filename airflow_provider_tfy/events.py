"""The trigger's events (JSON-safe: they cross the metadata DB), and the exceptions they turn back into."""

from __future__ import annotations

from typing import Any

from airflow_provider_tfy.exceptions import (
    FineTuningJobNotFound,
    TrueFoundryAPIError,
    TrueFoundryAuthError,
    TrueFoundryConfigError,
    TrueFoundryConnectionError,
    TrueFoundryError,
    TrueFoundryResponseError,
)
from airflow_provider_tfy.models import FineTuningJob, JobOutcome

TIMEOUT = "timeout"
# A trigger started from the task (``start_from_trigger``) gets Airflow's trigger timeout this many
# seconds after its own deadline, so the wait ends with the sensor's timeout event, not Airflow's.
TIMEOUT_GRACE = 60.0
ERROR = "error"
# Another job carries the wait's idempotency key: the operator converges and waits on the survivor.
CONVERGE = "converge"
JOB_STATUSES = frozenset({JobOutcome.SUCCEEDED, JobOutcome.FAILED, JobOutcome.CANCELLED, CONVERGE})
STATUSES = JOB_STATUSES | {TIMEOUT, ERROR}

_ERROR_KINDS: dict[str, type[TrueFoundryError]] = {
    "auth": TrueFoundryAuthError,
    "not_found": FineTuningJobNotFound,
    "config": TrueFoundryConfigError,
    "api": TrueFoundryAPIError,
    "response": TrueFoundryResponseError,
    "connection": TrueFoundryConnectionError,
    "other": TrueFoundryError,
}


def job_event(job: FineTuningJob, deadline: float | None = None, *, status: str | None = None) -> dict:
    """Make the event for a job in a terminal status (or ``status=CONVERGE``), with the wait's deadline."""
    event = {"status": status or str(job.outcome), "job_id": job.id, "job": job.to_xcom()}
    return event if deadline is None else {**event, "deadline": deadline}


def timeout_event(job_id: str, message: str) -> dict[str, Any]:
    """Make the event for a wait that reached its deadline."""
    return {"status": TIMEOUT, "job_id": job_id, "message": message}


def error_event(job_id: str, error: TrueFoundryError) -> dict[str, Any]:
    """Make the event for an error that ends the wait (the message is already key-free)."""
    # Most specific first: the dict lists subclasses before their bases, "other" matches all.
    kind = next(name for name, cls in _ERROR_KINDS.items() if isinstance(error, cls))
    code = error.status_code if isinstance(error, TrueFoundryAPIError) else None
    return {"status": ERROR, "job_id": job_id, "kind": kind, "message": str(error), "status_code": code}


def error_from_event(event: dict[str, Any]) -> TrueFoundryError:
    """Rebuild the exception an error event stands for."""
    cls = _ERROR_KINDS.get(str(event.get("kind")), TrueFoundryError)
    message = str(event.get("message") or "The TrueFoundry trigger reported an error without a message.")
    if issubclass(cls, TrueFoundryAPIError):
        return cls(message, status_code=int(event.get("status_code") or 0))
    return cls(message)


def check_event(event: Any) -> dict[str, Any]:
    """Return the event if it is one our trigger sends, else raise a clear error."""
    if not isinstance(event, dict):
        problem = f"resumed the task with {type(event).__name__} instead of an event dict; clear"
    elif (status := event.get("status")) not in STATUSES:
        problem = f"resumed the task with an event whose status is {status!r}; expected one of "
        problem += f"{sorted(STATUSES)}. Clear"
    elif status in JOB_STATUSES and not isinstance(event.get("job"), dict):
        problem = f"'s {status!r} event carries no job; clear"
    else:
        return event
    raise TrueFoundryError(f"The TrueFoundry trigger{problem} the task to wait again.")
