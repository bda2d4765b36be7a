"""The triggers' transport: connection reads and aiohttp sessions shared per loop, one retry loop.

aiohttp, not httpx: httpcore's pool costs 10-40 ms of CPU per poll with a few hundred connections
pooled, aiohttp's under 1 ms (``benchmarks/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import urllib.request
from asyncio import AbstractEventLoop
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

import aiohttp
import tenacity

from airflow_provider_tfy import protocol

T = TypeVar("T")
#: What the triggers need of a connection: host, password and the extra as a dict.
ConnectionFields = tuple[str | None, str | None, dict[str, Any]]
# http.client's limit (``_MAXLINE``), which the hook's requests/urllib3 stack inherits.
_MAX_HEADER_LINE = 65536


async def _read_connection(conn_id: str) -> ConnectionFields:
    from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

    conn = await get_async_connection(conn_id)
    return conn.host, conn.password, await get_async_extra_dejson(conn)


class SharedConnectionReads:
    """Makes concurrent reads of one connection in one event loop a single read (a takeover).

    Only reads in flight are shared: an edited connection (a rotated key) reaches the next start.
    """

    def __init__(self) -> None:
        self._reads: WeakKeyDictionary[AbstractEventLoop, dict[str, asyncio.Future[ConnectionFields]]]
        self._reads = WeakKeyDictionary()

    async def read(self, conn_id: str) -> ConnectionFields:
        """The connection's fields, from the read in flight if there is one."""
        reads = self._reads.setdefault(asyncio.get_running_loop(), {})
        future = reads.get(conn_id)
        if future is None:
            future = reads[conn_id] = asyncio.ensure_future(_read_connection(conn_id))
            future.add_done_callback(lambda done: reads.pop(conn_id) if reads.get(conn_id) is done else None)
        # Shielded: one waiter being cancelled must not cancel the read the others wait for.
        return await asyncio.shield(future)


async def send(session: aiohttp.ClientSession, request: protocol.Request[Any]) -> protocol.Answer:
    """Sends one request and returns its answer; maps transport failures to the protocol's errors."""
    timeout = aiohttp.ClientTimeout(  # the whole exchange too: a server trickling bytes cannot outlast it
        total=request.read_timeout, sock_connect=request.connect_timeout, sock_read=request.read_timeout
    )
    try:
        async with session.request(
            request.method, request.url, headers=request.headers, timeout=timeout, allow_redirects=False
        ) as response:
            body = bytearray()  # read to the end, stopping once past the cap, as the hook does
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > protocol.MAX_BODY_BYTES:
                    raise protocol.body_too_large(request)
            headers = {k.lower(): v for k, v in response.headers.items()}
            return protocol.Answer(response.status, headers, bytes(body))
    except aiohttp.ClientSSLError as err:
        raise protocol.tls_error(request, f"{type(err).__name__}: {err}") from None
    except TimeoutError as err:  # aiohttp's timeouts subclass it
        # A connect timeout means the request never left (see protocol.could_have_been_applied).
        sent = not isinstance(err, aiohttp.ConnectionTimeoutError)
        raise protocol.transport_error(request, type(err).__name__, timed_out=True, sent=sent) from None
    except aiohttp.ClientError as err:
        sent = not isinstance(err, aiohttp.ClientConnectorError)  # refused or never opened
        raise protocol.transport_error(request, f"{type(err).__name__}: {err}"[:200], sent=sent) from None


async def call(
    session: aiohttp.ClientSession,
    gw: protocol.Gateway,
    request: protocol.Request[T],
    policy: protocol.RetryPolicy,
    deadline: float | None = None,
    warn: Callable[[BaseException, float], object] | None = None,
) -> T:
    """Sends ``request`` and reads its answer, retried by ``policy``, never sleeping past ``deadline``.

    :param warn: ``warn(error, seconds)`` is told of each failed try that is retried.
    """
    loop = _retry_loop(policy, request.safe_to_repeat)
    return await loop(_exchange, session, gw, request, deadline=deadline, warn=warn)


@functools.cache
def _retry_loop(policy: protocol.RetryPolicy, safe_to_repeat: bool) -> tenacity.AsyncRetrying:
    # One loop per policy, shared by every wait, each call bringing its deadline and warning: a poll
    # in flight then holds 4 objects of tenacity's, not the 40 of a loop built per call (which
    # outlived young collections and fed the triggerer's full ones).
    # Safe to share: a call's state is its own RetryCallState, and no callback here ever awaits.
    def warn(state: tenacity.RetryCallState) -> None:
        if state.kwargs["warn"] is not None and state.outcome is not None:
            state.kwargs["warn"](state.outcome.exception() or Exception(), state.upcoming_sleep)

    args = policy.tenacity_args(safe_to_repeat=safe_to_repeat, before_sleep=warn)
    args["stop"] = lambda state: protocol.sleeps_past(state, state.kwargs["deadline"])
    return tenacity.AsyncRetrying(**args)


async def _exchange(
    session: aiohttp.ClientSession, gw: protocol.Gateway, request: protocol.Request[T], **_: Any
) -> T:
    return gw.read(request, await send(session, request))


@dataclass
class _Pool:
    session: asyncio.Future[aiohttp.ClientSession]
    users: int = 0


class SharedClients:
    """Shares one aiohttp session per gateway origin and TLS setting among a loop's triggers.

    The key is a per-request header, never connection state, so sharing cannot mix credentials up.
    """

    max_connections = 256

    def __init__(self) -> None:
        self._pools: WeakKeyDictionary[AbstractEventLoop, dict[tuple[str, str], _Pool]] = WeakKeyDictionary()

    async def acquire(self, config: protocol.GatewayConfig) -> aiohttp.ClientSession:
        """Borrows the loop's session for ``config``'s gateway; :meth:`release` it when done."""
        pools = self._pools.setdefault(asyncio.get_running_loop(), {})
        key = (config.origin, repr(config.verify))
        pool = pools.get(key) or pools.setdefault(key, _Pool(asyncio.ensure_future(self._open(config))))
        pool.users += 1
        try:
            return await asyncio.shield(pool.session)
        except BaseException:
            await self.release(config)
            raise

    async def release(self, config: protocol.GatewayConfig) -> None:
        """Gives back a session from :meth:`acquire`; the last user closes the pool."""
        pools, key = self._pools.get(asyncio.get_running_loop(), {}), (config.origin, repr(config.verify))
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
        # CA files and the proxy lookup may read the disk: off the loop, once per pool.
        context, proxy = await asyncio.to_thread(_transport_settings, config)
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections, ssl=context),
            proxy=proxy,
            # Not trust_env: it looks up .netrc per request, and .netrc must never replace our key.
            trust_env=False,
            # As the hook's http.client (aiohttp's 8 KiB would make a long header a retried error).
            max_line_size=_MAX_HEADER_LINE,
            max_field_size=_MAX_HEADER_LINE,
        )


def _transport_settings(config: protocol.GatewayConfig) -> tuple[ssl.SSLContext | bool, str | None]:
    verify, parts = config.verify, urlsplit(config.origin)
    try:
        cafile = verify if isinstance(verify, str) else None
        context = verify is not False and ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as err:
        raise protocol.ca_bundle_error(verify, str(err)) from None
    # The environment's proxy, as requests finds it for the hook.
    bypass = urllib.request.proxy_bypass(parts.hostname or "")
    return context, None if bypass else urllib.request.getproxies().get(parts.scheme)


shared_clients = SharedClients()
shared_connections = SharedConnectionReads()
