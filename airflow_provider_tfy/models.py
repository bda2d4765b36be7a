"""The fine-tuning job and the uploaded file as the gateway reports them, and what a status means."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class FineTuningJobStatus(enum.StrEnum):
    """The statuses we know. Members compare equal to their plain strings."""

    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobOutcome(enum.StrEnum):
    """What a status means for a task waiting on the job."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    IN_PROGRESS = "in_progress"


_TERMINAL = frozenset(JobOutcome) - {JobOutcome.IN_PROGRESS}
_KNOWN = frozenset(FineTuningJobStatus)
# Unix-seconds fields: the parser normalises them, and to_xcom hands on the normalised values.
TIMESTAMP_FIELDS = frozenset({"created_at", "finished_at", "estimated_finish"})
FILE_TIMESTAMP_FIELDS = frozenset({"created_at", "expires_at"})
_warned_unknown: set[str] = set()


def status_outcome(status: str) -> JobOutcome:
    """Map a status to an outcome: only ``succeeded``, ``failed`` and ``cancelled`` end a wait.

    Anything else, even a status added later (logged once per process), waits: no model exists yet.
    """
    if status not in _KNOWN and status not in _warned_unknown:
        _warned_unknown.add(status)
        log.warning(
            "The gateway reported fine-tuning status %r, which this provider does not know; "
            "treating it as in progress. Upgrade airflow-provider-tfy if it is a terminal status.",
            status,
        )
    return JobOutcome(status) if status in _TERMINAL else JobOutcome.IN_PROGRESS


@dataclass(frozen=True)
class FineTuningJobError:
    """The gateway's reason for a failed job (OpenAI's ``error`` object)."""

    code: str | None = None
    message: str | None = None
    param: str | None = None

    def describe(self) -> str:
        """Return ``code: message`` with whichever parts the gateway sent."""
        parts = (self.code, self.message.rstrip(". ") if self.message else None)
        return ": ".join(part for part in parts if part) or "no reason given"


@dataclass(frozen=True)
class FineTuningJob:
    """A fine-tuning job as the gateway reports it; timestamps in seconds, ``raw`` the JSON as received."""

    id: str
    status: str
    object: str | None = None
    model: str | None = None
    created_at: int | None = None
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    organization_id: str | None = None
    result_files: list[str] = field(default_factory=list)
    validation_file: str | None = None
    training_file: str | None = None
    hyperparameters: dict[str, Any] | None = None
    trained_tokens: int | None = None
    integrations: list[dict[str, Any]] | None = None
    seed: int | None = None
    estimated_finish: int | None = None
    method: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    error: FineTuningJobError | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def outcome(self) -> JobOutcome:
        """What this job's status means for a waiting task."""
        return status_outcome(self.status)

    def to_xcom(self) -> dict[str, Any]:
        """Return the job as a JSON-safe dict: the gateway's JSON, with timestamps in seconds."""
        return _xcom(self, TIMESTAMP_FIELDS)

    def progress_summary(self) -> str:
        """A short human line: status plus trained tokens and ETA when known."""
        parts = {"trained_tokens": self.trained_tokens, "estimated_finish": self.estimated_finish}
        shown = [f"{k}={v}" for k, v in parts.items() if v is not None]
        model = [f"fine_tuned_model={self.fine_tuned_model}"] if self.fine_tuned_model else []
        return ", ".join([f"status={self.status}", *shown, *model])


@dataclass(frozen=True)
class TrueFoundryFile:
    """An uploaded file (OpenAI's file object); timestamps in seconds, ``raw`` the JSON as received."""

    id: str
    object: str | None = None
    bytes: int | None = None
    created_at: int | None = None
    filename: str | None = None
    purpose: str | None = None
    status: str | None = None
    expires_at: int | None = None
    status_details: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_xcom(self) -> dict[str, Any]:
        """Return the file as a JSON-safe dict: the gateway's JSON, with timestamps in seconds."""
        return _xcom(self, FILE_TIMESTAMP_FIELDS)


def _xcom(obj: FineTuningJob | TrueFoundryFile, timestamps: frozenset[str]) -> dict[str, Any]:
    return {k: getattr(obj, k) if k in timestamps and v is not None else v for k, v in obj.raw.items()}
