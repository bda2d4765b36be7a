"""Counters of what the provider did with a fine-tuning job, through Airflow's ``Stats`` (``[metrics]``)."""

from __future__ import annotations

import logging
from enum import StrEnum

log = logging.getLogger(__name__)


class JobMetric(StrEnum):
    """A counter, ``truefoundry.fine_tuning_job.<value>``; the docs list what each counts."""

    CREATED = "created"  # a create request started a new job
    REATTACHED = "reattached"  # a job carrying the task's key was used instead of creating one
    ALREADY_SUCCEEDED = "already_succeeded"  # the job had succeeded already: no wait at all
    DUPLICATE_CANCELLED = "duplicate_cancelled"  # overlapping tries' extra job, cancelled
    SWITCHED_TO_SURVIVOR = "switched_to_survivor"  # the wait moved to the job overlapping tries keep
    CANCELLED_ON_KILL = "cancelled_on_kill"  # a person ended the try, and the job was cancelled
    LEFT_RUNNING_ON_KILL = "left_running_on_kill"  # a SIGTERM that was no person's decision

    @property
    def stat(self) -> str:
        """The full metric name."""
        return f"truefoundry.fine_tuning_job.{self.value}"


def count(metric: JobMetric, n: int = 1) -> None:
    """Add ``n`` to ``metric``; a metrics backend's trouble never fails a task."""
    try:
        from airflow.providers.common.compat.sdk import Stats

        Stats.incr(metric.stat, n)
    except Exception as err:
        log.debug("Could not emit metric %s: %s", metric.stat, err)
