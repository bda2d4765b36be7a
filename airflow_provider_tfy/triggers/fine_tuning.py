"""The deferred wait: polls the gateway from the triggerer's event loop with aiohttp.

It shares every decision with the hook through :mod:`..protocol` (request, classification,
retry waits, parsing) and with the sensor through :mod:`..events`; here only bytes move.
Nothing in ``run()`` blocks the loop: the connection is read with the async accessors, and the
one blocking step (building a TLS context) runs in a thread. Many triggers starting at once (a
takeover) share one connection read, spread their first polls, and every poll passes the
loop's gate (:mod:`.pacing`), so a batch never lands in one loop iteration (see
``benchmarks/density.py``, start burst).

Why aiohttp and not httpx: with a few hundred pooled connections (a thousand waits at 200 ms
latency keep ~200 requests in flight), httpcore's pool scans every connection on each request
and costs 10-40 ms of CPU per poll; aiohttp's pool stays well under 1 ms (see benchmarks/).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import ssl
import time
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_tfy import events, protocol
from airflow_provider_tfy.exceptions import TrueFoundryConfigError, TrueFoundryError
from airflow_provider_tfy.models import FineTuningJob, JobOutcome, status_outcome
from airflow_provider_tfy.triggers.pacing import first_poll_pacer, poll_gate, wakeups
from airflow_provider_tfy.version_compat import AIRFLOW_V_3_3_PLUS, get_base_airflow_version_tuple

try:
    from airflow.triggers.base import BaseEventTrigger
except ImportError:  # Airflow 2: no event-driven scheduling; the watcher refuses to be built
    BaseEventTrigger = BaseTrigger  # type: ignore[misc,assignment]

# on_kill must finish within the triggerer's on_kill_timeout (30 s by default).
_CANCEL_RETRIES = 2
_MAX_CANCEL_RETRY_WAIT = 5.0


class _GatewayCalls:
    """What both triggers do alike: settings from their arguments, the connection, the logger."""

    truefoundry_conn_id: str
    hook_params: dict[str, Any]
    header_args: dict[str, Any]  # those that are set, as given (never HTTP headers: no key)

    @property
    def log(self) -> Any:
        """The class's logger, shared by every wait: the same logger by name and routing (the
        triggerer routes a trigger's lines by context variables), one object instead of one per
        wait (Airflow 3 builds a logger per instance)."""
        return type(self).logger()  # type: ignore[attr-defined]  # BaseTrigger's LoggingMixin

    def _policy(self) -> protocol.RetryPolicy:
        return protocol.RetryPolicy.from_params(
            max_retries=self.hook_params.get("max_retries"),
            retry_delay=self.hook_params.get("retry_delay"),
        )

    def _set_headers(self, header_args: Mapping[str, Any] | None, flat: Mapping[str, Any]) -> None:
        # ``header_args={...}``, or each header as its own kwarg: how a trigger serialized before
        # 0.3 (and a sensor started from the triggerer) hands them over.
        merged = {**(header_args or {}), **flat}
        protocol.check_header_names(merged, type(self).__name__)  # values are checked at the first poll
        self.header_args = {name: value for name, value in merged.items() if value is not None}

    def _header_overrides(self) -> protocol.Headers:
        return protocol.Headers.parse(self.header_args)

    async def _config(self) -> protocol.GatewayConfig:
        return self._config_from(await shared_connections.read(self.truefoundry_conn_id))

    def _config_from(self, connection: ConnectionFields) -> protocol.GatewayConfig:
        host, password, extra = connection
        return protocol.gateway_config(
            self.truefoundry_conn_id,
            host=host,
            password=password,
            extra=extra,
            timeout=self.hook_params.get("timeout"),
        )


class TrueFoundryFineTuningJobTrigger(_GatewayCalls, BaseTrigger):
    """Poll a fine-tuning job until it ends or the deadline passes; yield exactly one event.

    Holds only primitives (never the key): the connection is read inside ``run()``.

    :param job_id: the fine-tuning job id.
    :param truefoundry_conn_id: the TrueFoundry connection.
    :param poll_interval: seconds between polls.
    :param deadline: wall-clock time (``time.time()``) at which to give up. Wall clock on purpose:
        the trigger may resume in another triggerer process, where a monotonic clock means nothing.
    :param timeout: instead of ``deadline``, seconds to wait, for a trigger started from the task
        (``start_from_trigger``): the deadline is then Airflow's trigger timeout for the task,
        fixed when it deferred the task, less :data:`..events.TIMEOUT_GRACE`.
    :param hook_params: ``timeout``, ``max_retries``, ``retry_delay`` as for the hook.
    :param header_args: the header arguments (:class:`~airflow_provider_tfy.protocol.HeaderArgs`),
        overriding the connection's extra; each may also be given as its own keyword argument.
    :param last_status: the status the sensor saw last, so only changes are logged.
    :param cancel_on_kill: cancel the job when a user kills the deferred task (marks it failed or
        success, clears it). Airflow 3.3+ calls :meth:`on_kill` only for such a user action, never
        on a triggerer restart; older Airflow never calls it.
    :param idempotency_key: the key the job was created with (not a secret). At the first poll,
        the newest ``LOOKUP_PAGE_SIZE`` jobs with it are read once; if the job is not their only
        live one, the wait ends with a ``converge`` event and the operator converges them.
        Absent from kwargs serialized before it existed: those waits resume without the look.
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
        """Class path and primitive kwargs; the deadline is absolute, so it survives a restart."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "truefoundry_conn_id": self.truefoundry_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                **({} if self.timeout is None else {"timeout": self.timeout}),
                "hook_params": self.hook_params,
                "header_args": self.header_args,
                "last_status": self.last_status,
                "cancel_on_kill": self.cancel_on_kill,
                "idempotency_key": self.idempotency_key,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the job ends (one event), an unrecoverable error, or the deadline."""
        deadline = self.deadline = self._deadline()
        try:
            connection = await shared_connections.read(self.truefoundry_conn_id)
            # The sensor poked before deferring, so the first poll can wait its turn; see .pacing.
            await wakeups.after(first_poll_pacer.delay(self.poll_interval, deadline))
            config, policy, request = self._plan(connection)
            del connection  # not kept through the wait
        except TrueFoundryError as err:
            yield TriggerEvent(events.error_event(self.job_id, err))
            return

        # One flat coroutine per wait, no nested generators or context managers: a triggerer
        # holding thousands of waits keeps fewer objects per wait for the collector to traverse.
        try:
            session = await shared_clients.acquire(config)
        except TrueFoundryError as err:  # the pool itself could not open (a bad CA bundle)
            yield TriggerEvent(events.error_event(self.job_id, err))
            return
        try:
            event = await self._poll(session, config, request, policy, deadline)
        finally:
            await shared_clients.release(config)
        yield event

    async def _poll(
        self,
        session: aiohttp.ClientSession,
        config: protocol.GatewayConfig,
        request: protocol.Request,
        policy: protocol.RetryPolicy,
        deadline: float,
    ) -> TriggerEvent:
        """Poll until the job ends, an unrecoverable error or the deadline; return the one event."""
        failures = 0
        looked = self.idempotency_key is None
        while True:
            await poll_gate.turn()  # a few polls per tick, however many fell due together
            try:
                answer = await send(session, request)
                job = protocol.read_job_response(config, request, *answer, job_id=self.job_id)
            except TrueFoundryError as err:
                if not err.retryable:
                    return TriggerEvent(events.error_event(self.job_id, err))
                failures += 1
                wait = policy.wait_after_failure(failures, err, self.poll_interval)
                self.log.warning("Polling job %s failed (%s); next try in %.1f s.", self.job_id, err, wait)
            else:
                failures = 0
                if job.status != self.last_status:
                    self.log.info("Fine-tuning job %s: %s", job.id, job.progress_summary())
                    self.last_status = job.status
                if job.outcome is not JobOutcome.IN_PROGRESS:
                    return TriggerEvent(events.job_event(job, self.deadline))
                if not looked:  # once, at the first poll: another try may have created a job too
                    others = await self._others_with_key(session, config, job)
                    if others:
                        return TriggerEvent(events.job_event(job, self.deadline, status=events.CONVERGE))
                    looked = others is not None  # a failed look is tried again at the next poll
                wait = self.poll_interval
                del answer, job  # not kept through the sleep: the fewer objects per wait, the better
            remaining = deadline - time.time()
            if remaining <= 0:
                return TriggerEvent(
                    events.timeout_event(
                        self.job_id,
                        f"Fine-tuning job {self.job_id!r} did not finish before the sensor's timeout "
                        f"(last status: {self.last_status or 'unknown'}).",
                    )
                )
            # Never sleep past the deadline: the last poll happens at it, not after it.
            await wakeups.after(min(wait, remaining))

    async def _others_with_key(
        self, session: aiohttp.ClientSession, config: protocol.GatewayConfig, job: FineTuningJob
    ) -> bool | None:
        """Whether the jobs with the key must converge (``protocol.converge``); None: ask again."""
        key = str(self.idempotency_key)
        request = protocol.list_request(
            config,
            protocol.LOOKUP_PAGE_SIZE,
            job_metadata={protocol.IDEMPOTENCY_METADATA_KEY: key},
            overrides=self._header_overrides(),
        )
        try:
            jobs, _ = protocol.read_jobs_page(config, request, *await send(session, request))
        except TrueFoundryError as err:
            self.log.warning("Could not look for other jobs with idempotency key %r: %s", key, err)
            return None if err.retryable else False  # a list this gateway refuses is not asked again
        survivor, to_cancel = protocol.converge([job, *jobs], key)  # the list is the fresher
        return survivor is not None and (survivor.id != job.id or bool(to_cancel))

    async def on_kill(self) -> None:
        """Cancel the job when a user kills the deferred task, if ``cancel_on_kill`` (Airflow 3.3+).

        Airflow calls this only for a user's action (mark failed or success, clear), never on a
        triggerer restart or the trigger's own timeout. The cancel is retried like a poll
        (cancelling twice is harmless) within the triggerer's ``on_kill_timeout``; one that fails
        is logged, never raised: the user's action has already decided the task's state.
        """
        if not self.cancel_on_kill:
            return
        if self.last_status is not None and status_outcome(self.last_status) is not JobOutcome.IN_PROGRESS:
            return  # the job has ended: nothing to cancel
        try:
            config = await self._config()
            policy = self._policy()
            request = protocol.cancel_request(config, self.job_id, self._header_overrides())
            async with shared_clients.client(config) as session:
                for attempt in itertools.count(1):
                    try:
                        answer = await send(session, request)
                        job = protocol.read_cancel_response(config, request, *answer, job_id=self.job_id)
                        break
                    except TrueFoundryError as err:
                        wait = policy.wait_before_retry(attempt, err)
                        if wait is None or attempt > _CANCEL_RETRIES:
                            raise
                        await asyncio.sleep(min(wait, _MAX_CANCEL_RETRY_WAIT))
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
        # Started from the task: no sensor code fixed a deadline. Airflow fixed the task's trigger
        # timeout when it deferred it and hands that to every triggerer running this trigger (3.x:
        # timeout_after; 2.x: the task instance row), so a takeover keeps the same deadline.
        ti = getattr(self, "task_instance", None)
        airflow_timeout = getattr(self, "timeout_after", None) or getattr(ti, "trigger_timeout", None)
        if airflow_timeout is None:  # run by hand (dag.test(), a test): from now
            return time.time() + (self.timeout or 0.0)
        if airflow_timeout.tzinfo is None:  # a naive UTC datetime, as the triggerer itself assumes
            airflow_timeout = airflow_timeout.replace(tzinfo=UTC)
        return float(airflow_timeout.timestamp()) - events.TIMEOUT_GRACE

    def _plan(
        self, connection: ConnectionFields
    ) -> tuple[protocol.GatewayConfig, protocol.RetryPolicy, protocol.Request]:
        config = self._config_from(connection)
        return config, self._policy(), protocol.job_request(config, self.job_id, self._header_overrides())


_STATUSES = ("succeeded", "failed", "cancelled")
_HOOK_PARAMS = frozenset({"timeout", "max_retries", "retry_delay"})
# Reported jobs are recorded this long after their events leave the trigger: the triggerer
# stores events about once a second, so a crash in between repeats a report, never loses one.
_RECORD_DELAY = 3.0
# What the watchers sharing a poll need read: stream key -> {watcher: its floor}.
_shared_floors: dict[Hashable, dict[int, float | None]] = {}


class TrueFoundryFineTuningJobEventTrigger(_GatewayCalls, BaseEventTrigger):
    """Report each fine-tuning job that ends, once: an event trigger for an ``AssetWatcher``.

    Each job reaching one of ``statuses`` after the watcher first started gives one event whose
    payload is the job as the sensor returns it (``FineTuningJob.to_xcom()``). Jobs that had ended
    before are never reported. What the watcher has seen lives in the asset's state store, so a
    restart or a takeover by another triggerer reports what ended meanwhile, and nothing twice
    (unless the triggerer dies within seconds of a report: see ``docs/watcher.md``). Needs
    Airflow 3.3 or later.

    :param truefoundry_conn_id: the TrueFoundry connection.
    :param statuses: the end states to report: any of ``succeeded``, ``failed``, ``cancelled``.
    :param job_metadata: report only jobs whose metadata holds every one of these pairs.
    :param poll_interval: seconds between polls.
    :param hook_params: ``timeout``, ``max_retries``, ``retry_delay`` as for the hook.
    :param header_args: the header arguments (:class:`~airflow_provider_tfy.protocol.HeaderArgs`),
        overriding the connection's extra; each may also be given as its own keyword argument.
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
        unknown = set(hook_params or {}) - _HOOK_PARAMS
        if unknown:
            raise TrueFoundryConfigError(
                f"{where}: hook_params has unknown keys {sorted(unknown)}; it takes {sorted(_HOOK_PARAMS)}."
            )
        self.truefoundry_conn_id = truefoundry_conn_id
        self.statuses = sorted(set(statuses))
        self.job_metadata = protocol.validate_metadata_filter(job_metadata)
        self.poll_interval = protocol.positive_number(poll_interval, "poll_interval", where)
        self.hook_params = dict(hook_params or {})
        self._set_headers(header_args, flat_headers)
        self._header_overrides()  # bad header values fail here, when the DAG is parsed
        self._policy()
        if not AIRFLOW_V_3_3_PLUS:
            running = ".".join(map(str, get_base_airflow_version_tuple()))
            raise TrueFoundryConfigError(
                f"{where} needs Airflow 3.3 or later, whose asset state store keeps what the watcher "
                f"has seen across triggerer restarts; this is Airflow {running}. Use "
                "TrueFoundryFineTuningJobSensor in a scheduled DAG instead."
            )
        self._floor: float | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and primitive kwargs (never the key)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "truefoundry_conn_id": self.truefoundry_conn_id,
                "statuses": self.statuses,
                "job_metadata": self.job_metadata,
                "poll_interval": self.poll_interval,
                "hook_params": self.hook_params,
                "header_args": self.header_args,
            },
        )

    def shared_stream_key(self) -> Hashable:
        """Watchers of one gateway account and polling alike share one poll (Airflow 3.3)."""
        kwargs = self.serialize()[1]
        del kwargs["statuses"], kwargs["job_metadata"]  # each watcher filters the shared pages itself
        return ("truefoundry-fine-tuning-jobs", json.dumps(kwargs, sort_keys=True))

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Poll for the group: each item is the jobs read and how far down (see :meth:`_pages`)."""
        watcher = cls(**kwargs)
        floors = _shared_floors.setdefault(watcher.shared_stream_key(), {})

        def need() -> float | None:  # the oldest floor any watcher needs; one page while none said
            values = list(floors.values())
            return (
                math.inf
                if not values
                else None
                if None in values
                else min(v for v in values if v is not None)
            )

        async for pages in watcher._polls(need, {}):
            yield pages

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """This watcher's events from the group's polls, with its own filter and state."""
        floors = _shared_floors.setdefault(self.shared_stream_key(), {})
        async for event in self._watch(shared_stream, floors):
            yield event

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll on its own: each poll reads pages down to the oldest job still watched."""
        async for event in self._watch(self._polls(lambda: self._floor, self.job_metadata), {}):
            yield event

    async def _watch(
        self, polls: AsyncIterator[Any], floors: dict[int, float | None]
    ) -> AsyncIterator[TriggerEvent]:
        stores = self._stores()
        key = (
            "truefoundry-watch-"
            + hashlib.sha256(
                json.dumps([self.truefoundry_conn_id, self.job_metadata], sort_keys=True).encode()
            ).hexdigest()[:16]
        )
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
        self, floor: Callable[[], float | None], job_metadata: dict[str, str]
    ) -> AsyncIterator[tuple[list[FineTuningJob], float | None]]:
        """Every ``poll_interval``: (jobs read newest first, ``created_at`` of the last, or None if
        the list ended). Transient trouble is retried, then polled again; the rest raises."""
        config, policy = await self._config(), self._policy()
        overrides, failures = self._header_overrides(), 0
        session = await shared_clients.acquire(config)
        try:
            while True:
                await poll_gate.turn()
                try:
                    pages = await self._pages(session, config, floor(), job_metadata, overrides)
                except TrueFoundryError as err:
                    if not err.retryable:
                        raise
                    failures += 1
                    wait = policy.wait_after_failure(failures, err, self.poll_interval)
                    self.log.warning("Listing fine-tuning jobs failed (%s); next try in %.1f s.", err, wait)
                else:
                    failures, wait = 0, self.poll_interval
                    yield pages
                    del pages
                await wakeups.after(wait)
        finally:
            await shared_clients.release(config)

    async def _pages(
        self,
        session: aiohttp.ClientSession,
        config: protocol.GatewayConfig,
        floor: float | None,
        job_metadata: dict[str, str],
        overrides: protocol.Headers,
    ) -> tuple[list[FineTuningJob], float | None]:
        jobs: list[FineTuningJob] = []
        after = None
        while True:
            request = protocol.list_request(
                config, protocol.MAX_LIST_LIMIT, after=after, job_metadata=job_metadata, overrides=overrides
            )
            page, has_more = protocol.read_jobs_page(config, request, *await send(session, request))
            jobs += page
            after = protocol.next_page_after(page, has_more, after)
            if after is None:
                return jobs, None
            if protocol.read_enough(floor, page):
                return jobs, page[-1].created_at or 0


#: What the trigger needs of a connection: host, password and the extra as a dict.
ConnectionFields = tuple[str | None, str | None, dict[str, Any]]


async def _read_connection(conn_id: str) -> ConnectionFields:
    from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

    conn = await get_async_connection(conn_id)
    return conn.host, conn.password, await get_async_extra_dejson(conn)


class SharedConnectionReads:
    """Concurrent reads of one connection in one event loop become a single read.

    Each read is a thread hop or a round trip to the triggerer's supervisor; a triggerer taking
    over a thousand waits would otherwise make a thousand identical ones at once. Only reads in
    flight are shared: a read that starts after the last one finished reads afresh, so an edited
    connection (a rotated key) reaches the next trigger that starts, as before.
    """

    def __init__(self) -> None:
        self._reads: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Future[ConnectionFields]]
        ] = weakref.WeakKeyDictionary()

    async def read(self, conn_id: str) -> ConnectionFields:
        reads = self._reads.setdefault(asyncio.get_running_loop(), {})
        future = reads.get(conn_id)
        if future is None:
            future = reads[conn_id] = asyncio.ensure_future(_read_connection(conn_id))
            future.add_done_callback(lambda done: reads.pop(conn_id) if reads.get(conn_id) is done else None)
        # Shielded: one waiter being cancelled must not cancel the read the others wait for.
        return await asyncio.shield(future)


async def send(
    session: aiohttp.ClientSession, request: protocol.Request
) -> tuple[int, dict[str, str], bytes]:
    """Send one request; map transport failures to the protocol's errors."""
    timeout = aiohttp.ClientTimeout(
        # The whole exchange, pool wait included: a server trickling bytes cannot outlast it.
        total=request.deadline,
        sock_connect=request.connect_timeout,
        sock_read=request.read_timeout,
    )
    try:
        async with session.request(
            request.method, request.url, headers=request.headers, timeout=timeout, allow_redirects=False
        ) as response:
            # content.read(n) returns what has arrived so far (up to n bytes), not n bytes: read
            # to the end, and stop as soon as the body passes the cap, as the hook does.
            chunks, size = [], 0
            async for chunk in response.content.iter_any():
                chunks.append(chunk)
                size += len(chunk)
                if size > protocol.MAX_BODY_BYTES:
                    raise protocol.body_too_large(request)
            return response.status, {k.lower(): v for k, v in response.headers.items()}, b"".join(chunks)
    except aiohttp.ClientSSLError as err:
        raise protocol.tls_error(request, f"{type(err).__name__}: {err}") from None
    except TimeoutError as err:  # aiohttp's timeouts subclass it
        # A connect timeout means the request never left (see protocol.could_have_been_applied).
        sent = not isinstance(err, aiohttp.ConnectionTimeoutError)
        raise protocol.transport_error(request, type(err).__name__, timed_out=True, sent=sent) from None
    except aiohttp.ClientError as err:
        sent = not isinstance(err, aiohttp.ClientConnectorError)  # refused or never opened
        raise protocol.transport_error(request, f"{type(err).__name__}: {err}"[:200], sent=sent) from None


# http.client's limit (``_MAXLINE``), which the hook's requests/urllib3 stack inherits.
_MAX_HEADER_LINE = 65536


@dataclass
class _Pool:
    session: asyncio.Future[aiohttp.ClientSession]
    users: int = 0


class SharedClients:
    """One aiohttp session per gateway origin and TLS setting, shared by the triggers of a loop.

    A thousand waits on one gateway then share a few keep-alive connections instead of opening a
    thousand TLS sessions. The key is a per-request header, never connection state, so sharing
    cannot mix up credentials. A pool closes when its last trigger finishes.
    """

    max_connections = 256

    def __init__(self) -> None:
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], _Pool]] = (
            weakref.WeakKeyDictionary()
        )

    async def acquire(self, config: protocol.GatewayConfig) -> aiohttp.ClientSession:
        """Borrow the loop's session for ``config``'s gateway; :meth:`release` it when done."""
        pools = self._pools.setdefault(asyncio.get_running_loop(), {})
        key = (config.origin, repr(config.verify))
        pool = pools.get(key)
        if pool is None:
            pool = pools[key] = _Pool(asyncio.ensure_future(self._open(config)))
        pool.users += 1
        try:
            return await asyncio.shield(pool.session)
        except BaseException:
            await self.release(config)
            raise

    async def release(self, config: protocol.GatewayConfig) -> None:
        """Give back a session from :meth:`acquire`; the last user closes the pool."""
        pools = self._pools.get(asyncio.get_running_loop(), {})
        key = (config.origin, repr(config.verify))
        pool = pools.get(key)
        if pool is None:
            return
        pool.users -= 1
        if pool.users == 0:
            del pools[key]
            if pool.session.done() and not pool.session.cancelled() and not pool.session.exception():
                await pool.session.result().close()

    @contextlib.asynccontextmanager
    async def client(self, config: protocol.GatewayConfig) -> AsyncIterator[aiohttp.ClientSession]:
        """:meth:`acquire` and :meth:`release` as a context manager (for one-off calls)."""
        session = await self.acquire(config)
        try:
            yield session
        finally:
            await self.release(config)

    async def _open(self, config: protocol.GatewayConfig) -> aiohttp.ClientSession:
        # Building a TLS context reads CA files from disk, and so may the proxy lookup: both run
        # off the loop, once per pool.
        context, proxy = await asyncio.to_thread(_transport_settings, config)
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections, ssl=context),
            proxy=proxy,
            # Not trust_env: aiohttp would then look up .netrc in a thread on every request, and
            # a .netrc entry must never replace our Authorization header. Proxies from the
            # environment are resolved once above instead, as requests does for the hook.
            trust_env=False,
            # The hook's http.client reads header lines up to 64 KiB; aiohttp's default (8 KiB)
            # would turn a long header (a 10 KB Location) into a retried "connection error" here
            # while the hook reports the redirect: the two must classify the same answer alike.
            max_line_size=_MAX_HEADER_LINE,
            max_field_size=_MAX_HEADER_LINE,
        )


def _transport_settings(config: protocol.GatewayConfig) -> tuple[ssl.SSLContext | bool, str | None]:
    verify = config.verify
    try:
        context: ssl.SSLContext | bool = (
            False
            if verify is False
            else ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        )
    except (OSError, ssl.SSLError) as err:
        raise protocol.ca_bundle_error(verify, str(err)) from None
    parts = urlsplit(config.origin)
    proxy = None
    if not urllib.request.proxy_bypass(parts.hostname or ""):
        proxy = urllib.request.getproxies().get(parts.scheme)
    return context, proxy


shared_clients = SharedClients()
shared_connections = SharedConnectionReads()
