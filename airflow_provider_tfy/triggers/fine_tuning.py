"""The deferred waits, polling the gateway from the triggerer's event loop.

Decisions come from :mod:`..protocol` and :mod:`..events`, as the hook's and the sensor's do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping
from datetime import UTC
from typing import Any

import aiohttp
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_tfy import events, protocol
from airflow_provider_tfy.exceptions import TrueFoundryConfigError, TrueFoundryError
from airflow_provider_tfy.header_spec import HOOK_PARAMS
from airflow_provider_tfy.models import FineTuningJob, JobOutcome, status_outcome
from airflow_provider_tfy.triggers import transport
from airflow_provider_tfy.triggers.pacing import first_poll_pacer, poll_gate, wakeups
from airflow_provider_tfy.version_compat import AIRFLOW_V_3_3_PLUS, get_base_airflow_version_tuple

try:
    from airflow.triggers.base import BaseEventTrigger
except ImportError:  # Airflow 2: no event-driven scheduling; the watcher refuses to be built
    BaseEventTrigger = BaseTrigger  # type: ignore[misc,assignment]


class _GatewayCalls:
    truefoundry_conn_id: str
    hook_params: dict[str, Any]
    header_args: dict[str, Any]  # those that are set, as given (never HTTP headers: no key)

    @property
    def log(self) -> Any:
        """The class's logger: one object for every wait (Airflow 3 builds one per instance)."""
        return type(self).logger()  # type: ignore[attr-defined]  # BaseTrigger's LoggingMixin

    def _policy(self) -> protocol.RetryPolicy:
        params = self.hook_params
        return protocol.RetryPolicy.from_params(
            max_retries=params.get("max_retries"), retry_delay=params.get("retry_delay")
        )

    def _set_headers(self, header_args: Mapping[str, Any] | None, flat: Mapping[str, Any]) -> None:
        # Each header its own kwarg: as triggers serialized before 0.3 (and the sensor) hand them over.
        merged = {**(header_args or {}), **flat}
        protocol.check_header_names(merged, type(self).__name__)  # values are checked at the first poll
        self.header_args = {name: value for name, value in merged.items() if value is not None}

    def _headers(self) -> protocol.Headers:
        return protocol.Headers.parse(self.header_args)

    def _serialized(self, names: Iterable[str]) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {n: getattr(self, n) for n in names}

    async def _gateway(self) -> protocol.Gateway:
        conn_id, timeout = self.truefoundry_conn_id, self.hook_params.get("timeout")
        host, password, extra = await transport.shared_connections.read(conn_id)
        config = protocol.gateway_config(conn_id, host=host, password=password, extra=extra, timeout=timeout)
        return protocol.Gateway(config)


class TrueFoundryFineTuningJobTrigger(_GatewayCalls, BaseTrigger):
    """Polls a fine-tuning job until it ends or the deadline passes; yields exactly one event.

    Holds only primitives (never the key). ``hook_params`` (``timeout``, ``max_retries``,
    ``retry_delay``) and ``header_args`` (:class:`~..protocol.HeaderArgs`, or each as its own
    keyword argument) are as for the hook.

    :param deadline: wall-clock time (``time.time()``) to give up at, valid in any triggerer; or
        ``timeout``, started from the task: Airflow's trigger timeout less ``events.TIMEOUT_GRACE``.
    :param last_status: the status the sensor saw last, so only changes are logged.
    :param cancel_on_kill: cancel the job when a user kills the deferred task (Airflow 3.3+).
    :param idempotency_key: the job's key: at the first poll, unless the job is the only live one
        of the newest ``LOOKUP_PAGE_SIZE`` with it, the wait ends with a ``converge`` event.
    """

    def __init__(
        self,
        *,
        job_id: str,
        truefoundry_conn_id: str = "truefoundry_default",
        poll_interval: float = 60.0,
        deadline: float | None = None,
        timeout: float | None = None,
        hook_params: dict[str, Any] | None = None,
        header_args: Mapping[str, Any] | None = None,
        last_status: str | None = None,
        cancel_on_kill: bool = False,
        idempotency_key: str | None = None,
        **flat_headers: Any,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.truefoundry_conn_id = truefoundry_conn_id
        self.poll_interval = float(poll_interval)
        if deadline is None and timeout is None:
            raise ValueError("TrueFoundryFineTuningJobTrigger needs a deadline or a timeout.")
        self.deadline = None if deadline is None else float(deadline)
        self.timeout = None if timeout is None else float(timeout)
        self.hook_params = dict(hook_params or {})
        self._set_headers(header_args, flat_headers)
        self.last_status = last_status
        self.cancel_on_kill = bool(cancel_on_kill)
        self.idempotency_key = idempotency_key

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Returns the class path and primitive kwargs; the deadline is absolute, so it survives a restart."""
        names = ["job_id", "truefoundry_conn_id", "poll_interval", "deadline", "timeout", "hook_params"]
        names += ["header_args", "last_status", "cancel_on_kill", "idempotency_key"]
        return self._serialized(n for n in names if n != "timeout" or self.timeout is not None)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Polls until the job ends, an unrecoverable error or the deadline: one event."""
        deadline = self.deadline = self._deadline()
        try:
            gw = await self._gateway()
            # The sensor poked before deferring, so the first poll can wait its turn; see .pacing.
            await wakeups.after(first_poll_pacer.delay(self.poll_interval, deadline))
            policy, request = self._policy(), gw.retrieve(self.job_id, self._headers())
            session = await transport.shared_clients.acquire(gw.config)  # fails on a bad CA bundle
        except TrueFoundryError as err:
            yield TriggerEvent(events.error_event(self.job_id, err))
            return
        # One flat generator per wait, nothing nested kept across sleeps: fewer objects per wait
        # for a triggerer's full collections to traverse.
        looked = self.idempotency_key is None
        try:
            while True:
                await poll_gate.turn()  # a few polls per tick, however many fell due together
                try:
                    job = await transport.call(session, gw, request, policy, deadline, self._failed)
                except TrueFoundryError as err:
                    try:
                        wait = protocol.wait_after_failed_poll(err, self.poll_interval)
                    except TrueFoundryError:
                        event = events.error_event(self.job_id, err)
                        break
                    self._failed(err, wait)
                else:
                    if job.status != self.last_status:
                        self.log.info("Fine-tuning job %s: %s", job.id, job.progress_summary())
                        self.last_status = job.status
                    if job.outcome is not JobOutcome.IN_PROGRESS:
                        event = events.job_event(job, self.deadline)
                        break
                    if not looked:  # once, at the first poll: another try may have created a job too
                        converge = await self._must_converge(session, gw, policy, deadline, job)
                        if converge:
                            event = events.job_event(job, self.deadline, status=events.CONVERGE)
                            break
                        looked = converge is not None  # a failed look is tried again at the next poll
                    wait = self.poll_interval
                    del job  # not kept through the sleep
                remaining = deadline - time.time()
                if remaining <= 0:
                    status = self.last_status or "unknown"
                    message = f"Fine-tuning job {self.job_id!r} did not finish before the sensor's timeout"
                    event = events.timeout_event(self.job_id, f"{message} (last status: {status}).")
                    break
                await wakeups.after(min(wait, remaining))  # the last poll is at the deadline, not after
        finally:
            await transport.shared_clients.release(gw.config)
        yield TriggerEvent(event)

    def _failed(self, err: BaseException, wait: float) -> None:  # each failed try, retried or not
        self.log.warning("Polling job %s failed (%s); next try in %.1f s.", self.job_id, err, wait)

    async def _must_converge(
        self,
        session: aiohttp.ClientSession,
        gw: protocol.Gateway,
        policy: protocol.RetryPolicy,
        deadline: float,
        job: FineTuningJob,
    ) -> bool | None:
        # Whether the jobs with the key must converge (protocol.converge); None: ask again.
        key = str(self.idempotency_key)
        metadata = {protocol.IDEMPOTENCY_METADATA_KEY: key}
        request = gw.list(protocol.LOOKUP_PAGE_SIZE, job_metadata=metadata, headers=self._headers())
        try:
            jobs = (await transport.call(session, gw, request, policy, deadline)).jobs
        except TrueFoundryError as err:
            self.log.warning("Could not look for other jobs with idempotency key %r: %s", key, err)
            return None if err.retryable else False  # a list this gateway refuses is not asked again
        survivor, to_cancel = protocol.converge([job, *jobs], key)  # the list is the fresher
        return survivor is not None and (survivor.id != job.id or bool(to_cancel))

    async def on_kill(self) -> None:
        """Cancels the job when a user kills the deferred task, if ``cancel_on_kill`` (Airflow 3.3+).

        Only for a user's action, never on a triggerer restart; a failure is logged, never raised.
        """
        last = self.last_status
        if not self.cancel_on_kill or (last and status_outcome(last) is not JobOutcome.IN_PROGRESS):
            return  # nothing to cancel
        try:
            gw, policy = await self._gateway(), self._policy()
            # At most 2 retries within ~20 s: the triggerer's on_kill_timeout is 30 s.
            policy = dataclasses.replace(policy, max_retries=min(policy.max_retries, 2), max_delay=5.0)
            async with transport.shared_clients.client(gw.config) as session:
                request = gw.cancel(self.job_id, self._headers())
                job = await transport.call(session, gw, request, policy, time.time() + 20)
        except TrueFoundryError as err:
            self.log.warning(
                "Could not cancel fine-tuning job %s after the task was killed: %s. Cancel it at the "
                "gateway if it should not run on.",
                self.job_id,
                err,
            )
            return
        self.log.info(
            "The task was killed: cancelled fine-tuning job %s; its status is now %s.", job.id, job.status
        )

    def _deadline(self) -> float:
        if self.deadline is not None:
            return self.deadline
        # Started from the task: Airflow's trigger timeout, the same in any triggerer (2.x: the TI's).
        ti = getattr(self, "task_instance", None)
        airflow_timeout = getattr(self, "timeout_after", None) or getattr(ti, "trigger_timeout", None)
        if airflow_timeout is None:  # run by hand (dag.test(), a test): from now
            return time.time() + (self.timeout or 0.0)
        if airflow_timeout.tzinfo is None:  # a naive UTC datetime, as the triggerer itself assumes
            airflow_timeout = airflow_timeout.replace(tzinfo=UTC)
        return float(airflow_timeout.timestamp()) - events.TIMEOUT_GRACE


_STATUSES = ("succeeded", "failed", "cancelled")
# Record reports this long after their events leave (stored about once a second): a crash repeats one.
_RECORD_DELAY = 3.0
# What the watchers sharing a poll need read: stream key -> {watcher: its floor}.
_shared_floors: dict[Hashable, dict[int, float | None]] = {}


class TrueFoundryFineTuningJobEventTrigger(_GatewayCalls, BaseEventTrigger):
    """Reports each fine-tuning job that ends, once: an event trigger for an ``AssetWatcher``.

    Each job reaching one of ``statuses`` (``succeeded``, ``failed``, ``cancelled``) after the
    watcher first started gives one event, ``FineTuningJob.to_xcom()``. What it has seen lives in
    the asset's state store, so a restart reports what ended meanwhile, and nothing twice (see
    ``docs/watcher.md``). Needs Airflow 3.3+. ``job_metadata``: report only jobs carrying these
    pairs; ``hook_params`` and ``header_args`` as for :class:`TrueFoundryFineTuningJobTrigger`.
    """

    def __init__(
        self,
        *,
        truefoundry_conn_id: str = "truefoundry_default",
        statuses: list[str] | tuple[str, ...] = ("succeeded",),
        job_metadata: dict[str, str] | None = None,
        poll_interval: float = 60.0,
        hook_params: dict[str, Any] | None = None,
        header_args: Mapping[str, Any] | None = None,
        **flat_headers: Any,
    ) -> None:
        super().__init__()
        where = type(self).__name__
        if isinstance(statuses, str) or not statuses or not set(statuses) <= set(_STATUSES):
            raise TrueFoundryConfigError(
                f"{where}: statuses must be a non-empty list of end states out of {list(_STATUSES)}, "
                f"e.g. ['succeeded']; got {statuses!r}."
            )
        unknown = set(hook_params or {}) - HOOK_PARAMS
        if unknown:
            raise TrueFoundryConfigError(
                f"{where}: hook_params has unknown keys {sorted(unknown)}; it takes {sorted(HOOK_PARAMS)}."
            )
        self.truefoundry_conn_id = truefoundry_conn_id
        self.statuses = sorted(set(statuses))
        self.job_metadata = protocol.validate_metadata_filter(job_metadata)
        self.poll_interval = protocol.positive_number(poll_interval, "poll_interval", where)
        self.hook_params = dict(hook_params or {})
        self._set_headers(header_args, flat_headers)
        self._headers(), self._policy()  # bad values fail here, when the DAG is parsed
        if not AIRFLOW_V_3_3_PLUS:
            running = ".".join(map(str, get_base_airflow_version_tuple()))
            raise TrueFoundryConfigError(
                f"{where} needs Airflow 3.3 or later, whose asset state store keeps what the watcher "
                f"has seen across triggerer restarts; this is Airflow {running}. Use "
                "TrueFoundryFineTuningJobSensor in a scheduled DAG instead."
            )
        self._floor: float | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Returns the class path and primitive kwargs (never the key)."""
        names = ["truefoundry_conn_id", "statuses", "job_metadata", "poll_interval", "hook_params"]
        return self._serialized([*names, "header_args"])

    def shared_stream_key(self) -> Hashable:
        """Watchers of one gateway account and polling alike share one poll (Airflow 3.3)."""
        kwargs = self.serialize()[1]
        del kwargs["statuses"], kwargs["job_metadata"]  # each watcher filters the shared pages itself
        return ("truefoundry-fine-tuning-jobs", json.dumps(kwargs, sort_keys=True))

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Polls for the group: each item is the jobs read and how far down (see :meth:`_polls`)."""
        watcher = cls(**kwargs)
        floors = _shared_floors.setdefault(watcher.shared_stream_key(), {})

        def need() -> float | None:  # the oldest floor any watcher needs; one page while none said
            values = list(floors.values())
            return None if None in values else min((v for v in values if v is not None), default=math.inf)

        async for pages in watcher._polls(need, {}):
            yield pages

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """Yields this watcher's events from the group's polls, with its own filter and state."""
        floors = _shared_floors.setdefault(self.shared_stream_key(), {})
        async for event in self._watch(shared_stream, floors):
            yield event

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Polls on its own: each poll reads pages down to the oldest job still watched."""
        async for event in self._watch(self._polls(lambda: self._floor, self.job_metadata), {}):
            yield event

    async def _watch(
        self, polls: AsyncIterator[Any], floors: dict[int, float | None]
    ) -> AsyncIterator[TriggerEvent]:
        stores = self._stores()
        blob = json.dumps([self.truefoundry_conn_id, self.job_metadata], sort_keys=True).encode()
        key = "truefoundry-watch-" + hashlib.sha256(blob).hexdigest()[:16]
        state = None
        for store in stores:
            state = state or protocol.WatchState.from_json(await store.aget(key))
        self._floor = floors[id(self)] = None if state is None else state.floor
        try:
            async for jobs, end in polls:
                if not protocol.covers(end, self._floor):
                    continue  # the group's poll did not read down to our oldest job: the next will
                reported, new = protocol.watch_step(
                    state, jobs, statuses=self.statuses, job_metadata=self.job_metadata
                )
                for job in reported:
                    self.log.info("Fine-tuning job %s ended: %s", job.id, job.progress_summary())
                    yield TriggerEvent(job.to_xcom())
                if new != state:
                    if reported:
                        await asyncio.sleep(min(_RECORD_DELAY, self.poll_interval))
                    for store in stores:
                        await store.aset(key, new.to_json())
                    state = new
                self._floor = floors[id(self)] = state.floor if state else None
        finally:
            floors.pop(id(self), None)

    def _failed(self, err: BaseException, wait: float) -> None:  # each failed try, retried or not
        self.log.warning("Listing fine-tuning jobs failed (%s); next try in %.1f s.", err, wait)

    def _stores(self) -> list[Any]:
        store = self.asset_state_store
        if store is None:
            raise TrueFoundryConfigError(
                f"{type(self).__name__} keeps what it has seen in its asset's state store, which the "
                "triggerer gives only to a watcher of an asset: use it in an AssetWatcher (Airflow 3.3+)."
            )
        # A watcher shared by several assets keeps its state in each (one accessor per asset).
        many = [*getattr(store, "_by_name", {}).values(), *getattr(store, "_by_uri", {}).values()]
        return many if len(many) > 1 else [store]

    async def _polls(
        self, floor: Callable[[], float | None], metadata: dict[str, str]
    ) -> AsyncIterator[tuple[list[FineTuningJob], float | None]]:
        # Each poll_interval: the jobs read newest first down to floor(), and the last's created_at
        # (None: the list ended). What retries cannot mend raises.
        gw, policy, headers = await self._gateway(), self._policy(), self._headers()
        session = await transport.shared_clients.acquire(gw.config)
        try:
            while True:
                await poll_gate.turn()
                jobs, after, need = [], None, floor()
                try:
                    while True:  # the pages down to the floor
                        request = gw.list(
                            protocol.MAX_LIST_LIMIT, after=after, job_metadata=metadata, headers=headers
                        )
                        page = await transport.call(session, gw, request, policy, warn=self._failed)
                        jobs += page.jobs
                        after = protocol.next_page_after(page.jobs, page.has_more, after)
                        if after is None or protocol.read_enough(need, page.jobs):
                            break
                except TrueFoundryError as err:
                    wait = protocol.wait_after_failed_poll(err, self.poll_interval)  # or raises
                    self._failed(err, wait)
                else:
                    wait = self.poll_interval
                    yield jobs, None if after is None else jobs[-1].created_at or 0
                del jobs
                await wakeups.after(wait)
        finally:
            await transport.shared_clients.release(gw.config)
