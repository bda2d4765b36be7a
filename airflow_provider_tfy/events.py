"""What the trigger reports and what the sensor makes of it: both directions in one place.

A trigger event crosses the metadata database, so it holds only JSON-safe primitives. Turning
an error into an event and back must give the exception the poke path would have raised, so the
two directions live side by side.
"""

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


def job_event(
    job: FineTuningJob, deadline: float | None = None, *, status: str | None = None
) -> dict[str, Any]:
    """The event for a job in a terminal status (or ``status=CONVERGE``); ``job`` is the same dict
    poke mode returns. The wait's ``deadline`` travels along, so a wait moved to a survivor keeps it."""
    event = {"status": status or str(job.outcome), "job_id": job.id, "job": job.to_xcom()}
    return event if deadline is None else {**event, "deadline": deadline}


def timeout_event(job_id: str, message: str) -> dict[str, Any]:
    """The event for a wait that reached its deadline."""
    return {"status": TIMEOUT, "job_id": job_id, "message": message}


def error_event(job_id: str, error: TrueFoundryError) -> dict[str, Any]:
    """The event for an error that ends the wait (the message is already key-free)."""
    # Most specific first: the dict lists subclasses before their bases, "other" matches all.
    kind = next(name for name, cls in _ERROR_KINDS.items() if isinstance(error, cls))
    return {
        "status": ERROR,
        "job_id": job_id,
        "kind": kind,
        "message": str(error),
        "status_code": error.status_code if isinstance(error, TrueFoundryAPIError) else None,
    }


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
        raise TrueFoundryError(
            f"The TrueFoundry trigger resumed the task with {type(event).__name__} instead of an event "
            "dict; clear the task to wait again."
        )
    status = event.get("status")
    if status not in STATUSES:
        raise TrueFoundryError(
            f"The TrueFoundry trigger resumed the task with an event whose status is {status!r}; "
            f"expected one of {sorted(STATUSES)}. Clear the task to wait again."
        )
    if status in JOB_STATUSES and not isinstance(event.get("job"), dict):
        raise TrueFoundryError(
            f"The TrueFoundry trigger's {status!r} event carries no job; clear the task to wait again."
        )
    return event
