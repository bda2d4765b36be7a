"""Scripted fine-tuning jobs: status progression and the response bodies they produce."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["DEFAULT_MODEL", "KNOWN_STATUSES", "TERMINAL_STATUSES", "ScriptedJob", "new_job_id"]

DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"
ORGANIZATION_ID = "org-tfy-simulator"
KNOWN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_TRAINED_TOKENS = 125_000
DEFAULT_ERROR: dict[str, Any] = {
    "code": "invalid_training_file",
    "message": "The job failed because the training file contains examples that could not be parsed.",
    "param": "training_file",
}
_DEFAULT_HYPERPARAMETERS: dict[str, Any] = {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.8}
# Seconds a poll-driven job claims it still needs when it starts running.
_ESTIMATED_RUNTIME = 300


def new_job_id() -> str:
    """A fresh OpenAI-style job id such as ``ftjob-3f9c...``."""
    return f"ftjob-{secrets.token_hex(12)}"


class ScriptedJob:
    """A fine-tuning job that moves through ``statuses`` as it is polled or as time passes.

    Progression is by poll count by default: the k-th successful (200) GET of the job, counting
    from 1, is served ``statuses[min((k - 1) // polls_per_status, len(statuses) - 1)]``. When
    ``seconds_per_status`` is set, the status instead depends on the wall time elapsed since the
    job was *added* to the simulator (not since its first GET), so a job can finish while nobody
    is polling, as real jobs do. The last status is sticky, and so is :meth:`cancel`.

    ``training_file``, ``validation_file``, ``suffix``, ``seed``, ``method``,
    ``hyperparameters`` and ``integrations`` are echoed in the job's body (``suffix`` in its
    ``fine_tuned_model`` name); left out, plausible values are made up.

    Instances are owned by a :class:`GatewaySimulator`, which serialises access to them.
    """

    def __init__(
        self,
        job_id: str,
        statuses: Sequence[str] = ("queued", "running", "succeeded"),
        *,
        polls_per_status: int = 1,
        seconds_per_status: float | None = None,
        error: Mapping[str, Any] | None = None,
        fine_tuned_model: str | None = None,
        model: str = DEFAULT_MODEL,
        trained_tokens: int | None = None,
        metadata: Mapping[str, str] | None = None,
        extra_fields: Mapping[str, Any] | None = None,
        training_file: str | None = None,
        validation_file: str | None = None,
        suffix: str | None = None,
        seed: int | None = None,
        method: Mapping[str, Any] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        integrations: Sequence[Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not job_id:
            raise ValueError("job_id must be a non-empty string")
        if isinstance(statuses, str):
            raise TypeError("statuses must be a sequence of strings, not a single string")
        statuses = tuple(statuses)
        if not statuses or not all(isinstance(s, str) and s for s in statuses):
            raise ValueError("statuses must be a non-empty sequence of non-empty strings")
        if isinstance(polls_per_status, bool) or int(polls_per_status) < 1:
            raise ValueError("polls_per_status must be >= 1")
        if seconds_per_status is not None and not seconds_per_status > 0:
            raise ValueError("seconds_per_status must be > 0")
        self.id = job_id
        self.statuses: tuple[str, ...] = statuses
        self.polls_per_status = int(polls_per_status)
        self.seconds_per_status = None if seconds_per_status is None else float(seconds_per_status)
        self.error: dict[str, Any] = dict(error) if error is not None else dict(DEFAULT_ERROR)
        self.model = model
        self.suffix = suffix
        self.fine_tuned_model = fine_tuned_model or f"ft:{model}:tfy:{suffix or ''}:{job_id}"
        self.trained_tokens = DEFAULT_TRAINED_TOKENS if trained_tokens is None else int(trained_tokens)
        self.metadata = dict(metadata) if metadata is not None else None
        self.extra_fields = dict(extra_fields or {})
        self._clock = clock
        self.added_at: float = clock()
        self.created_at = int(self.added_at)
        self.training_file = training_file or f"file-train-{secrets.token_hex(12)}"
        self.validation_file = validation_file
        self.result_file = f"file-result-{secrets.token_hex(12)}"
        self.seed = secrets.randbelow(2**31) if seed is None else int(seed)
        self.method: dict[str, Any] = dict(method) if method is not None else {"type": "supervised"}
        self.hyperparameters: dict[str, Any] = (
            dict(hyperparameters) if hyperparameters is not None else dict(_DEFAULT_HYPERPARAMETERS)
        )
        self.integrations = [dict(item) for item in integrations or ()]
        #: Clock time of the first successful cancel, or None; a cancelled job stays cancelled.
        self.cancelled_at: float | None = None
        #: Successful (200) GETs served so far; drives poll-based progression.
        self.polls = 0
        #: The status most recently served in a 200 response, or None before the first one.
        self.last_status: str | None = None
        self._first_seen: dict[int, int] = {}

    @property
    def final_status(self) -> str:
        """The status the job ends in."""
        return self.statuses[-1]

    @property
    def status(self) -> str:
        """The status the job is in now (what a listing shows), without counting a poll."""
        return str(self.peek()["status"])

    def cancel(self) -> None:
        """Move the job to ``cancelled`` for good (the caller checks it is not finished)."""
        if self.cancelled_at is None:
            self.cancelled_at = self._clock()

    def index_for_poll(self, k: int) -> int:
        """Index into ``statuses`` served by the k-th successful poll (1-based)."""
        if self.seconds_per_status is not None:
            return self._index_by_time()
        return min((max(k, 1) - 1) // self.polls_per_status, len(self.statuses) - 1)

    def _index_by_time(self) -> int:
        assert self.seconds_per_status is not None
        elapsed = max(self._clock() - self.added_at, 0.0)
        return min(int(elapsed // self.seconds_per_status), len(self.statuses) - 1)

    def poll(self) -> dict[str, Any]:
        """Advance by one successful GET and return the body to serve."""
        self.polls += 1
        body = self.render(self.index_for_poll(self.polls))
        self.last_status = body["status"]
        return body

    def peek(self) -> dict[str, Any]:
        """The body a listing shows now, without counting as a poll."""
        return self.render(self.index_for_poll(max(self.polls, 1)))

    def render(self, index: int) -> dict[str, Any]:
        """The response body for the job while it is in ``statuses[index]``."""
        status = self.statuses[index] if self.cancelled_at is None else "cancelled"
        # Poll-driven jobs have no schedule, so timestamps are pinned the first time a status is seen.
        first_seen = self._first_seen.setdefault(index, int(self._clock()))
        body: dict[str, Any] = {
            "object": "fine_tuning.job",
            "id": self.id,
            "model": self.model,
            "created_at": self.created_at,
            "finished_at": None,
            "fine_tuned_model": None,
            "organization_id": ORGANIZATION_ID,
            "result_files": [],
            "status": status,
            "validation_file": self.validation_file,
            "training_file": self.training_file,
            "hyperparameters": dict(self.hyperparameters),
            "trained_tokens": None,
            "integrations": [dict(item) for item in self.integrations],
            "seed": self.seed,
            "estimated_finish": None,
            "method": dict(self.method),
            "metadata": self.metadata,
        }
        if status == "running":
            body["trained_tokens"] = self.trained_tokens // 2
            body["estimated_finish"] = self._estimated_finish(first_seen)
        elif self.cancelled_at is not None:
            body["finished_at"] = max(int(self.cancelled_at), self.created_at)
        elif status in TERMINAL_STATUSES:
            body["finished_at"] = max(self._scheduled_time(index, first_seen), self.created_at)
        if status == "succeeded":
            body["fine_tuned_model"] = self.fine_tuned_model
            body["result_files"] = [self.result_file]
            body["trained_tokens"] = self.trained_tokens
        elif status == "failed":
            body["error"] = dict(self.error)
        body.update(self.extra_fields)
        return body

    def _scheduled_time(self, index: int, first_seen: int) -> int:
        if self.seconds_per_status is None:
            return first_seen
        return int(self.added_at + index * self.seconds_per_status)

    def _estimated_finish(self, first_seen: int) -> int:
        if self.seconds_per_status is None:
            return first_seen + _ESTIMATED_RUNTIME
        return math.ceil(self.added_at + (len(self.statuses) - 1) * self.seconds_per_status)

    def __repr__(self) -> str:
        return f"ScriptedJob(id={self.id!r}, statuses={self.statuses!r}, polls={self.polls})"
