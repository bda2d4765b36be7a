"""Which jobs an event watcher reports, from the pages it read: the watermark, without I/O.

The gateway lists jobs newest-created first, and a job created long ago can end now. So the
watcher remembers the jobs it watches (in progress when last seen) and the newest creation time
it has seen; a poll reads pages only down to the older of the two (:attr:`WatchState.floor`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_tfy.models import FineTuningJob, JobOutcome
from airflow_provider_tfy.protocol.objects import carries_metadata


@dataclass(frozen=True)
class WatchState:
    """What a watcher has seen; JSON through :meth:`to_json`, kept in the asset's state store.

    :param newest: ``created_at`` of the newest job seen: a job created later is new.
    :param edge: ids of the jobs seen created in that same second (a same-second job is new
        only if not among them).
    :param pending: watched jobs in progress when last seen, id to ``created_at``.
    """

    newest: int | None = None
    edge: frozenset[str] = frozenset()
    pending: Mapping[str, int] = field(default_factory=dict)

    @property
    def floor(self) -> int | None:
        """A poll reads pages until a job created before this one; None: the whole list."""
        values = [*self.pending.values(), *([] if self.newest is None else [self.newest])]
        return min(values, default=None)

    def to_json(self) -> dict[str, Any]:
        return {"v": 1, "newest": self.newest, "edge": sorted(self.edge), "pending": dict(self.pending)}

    @classmethod
    def from_json(cls, data: Any) -> WatchState | None:
        """The stored state, or None for none (or one this version cannot read: start afresh)."""
        if not isinstance(data, dict) or data.get("v") != 1:
            return None
        return cls(
            data["newest"], frozenset(data["edge"]), {str(k): int(v) for k, v in data["pending"].items()}
        )


def read_enough(floor: float | None, page: Sequence[FineTuningJob]) -> bool:
    """Whether a poll may stop after ``page``: it reached a job created before ``floor``."""
    return floor is not None and bool(page) and _created(page[-1]) < floor


def covers(end: float | None, floor: float | None) -> bool:
    """Whether pages read down to a job created at ``end`` (None: to the list's end) suffice."""
    return end is None or (floor is not None and end < floor)


def watch_step(
    state: WatchState | None,
    jobs: Sequence[FineTuningJob],
    *,
    statuses: Collection[str],
    job_metadata: Mapping[str, str],
) -> tuple[list[FineTuningJob], WatchState]:
    """The jobs to report from one poll, and the state after it.

    ``jobs`` are every job read, newest first, down to ``state.floor`` (see :func:`covers`);
    the gateway may have ignored the metadata filter, so it is applied here too. ``state`` None
    is the first poll ever: it reports nothing (what had ended is old) and starts watching what
    is in progress. A watched job that is no longer listed was deleted: it is dropped.
    """
    reported: list[FineTuningJob] = []
    pending: dict[str, int] = {}
    for job in jobs:
        if not carries_metadata(job, job_metadata):
            continue
        created, watched = _created(job), state is None or job.id in state.pending or _is_new(state, job)
        if not watched:
            continue
        if job.outcome is JobOutcome.IN_PROGRESS:
            pending[job.id] = created
        elif state is not None and str(job.outcome) in statuses:
            reported.append(job)
    newest = max((_created(job) for job in jobs), default=None)
    old_newest = None if state is None else state.newest
    if old_newest is not None and (newest is None or old_newest >= newest):
        # Nothing newer: keep the old mark, adding any same-second newcomer to its edge.
        edge = state.edge | {job.id for job in jobs if _created(job) == old_newest}  # type: ignore[union-attr]
        newest = old_newest
    else:
        edge = frozenset(job.id for job in jobs if _created(job) == newest)
    return reported, WatchState(newest, edge, pending)


def _is_new(state: WatchState, job: FineTuningJob) -> bool:
    created = _created(job)
    return (
        state.newest is None
        or created > state.newest
        or (created == state.newest and job.id not in state.edge)
    )


def _created(job: FineTuningJob) -> int:
    # created_at is required by the spec; a gateway that omits it makes the job look old.
    return job.created_at or 0
