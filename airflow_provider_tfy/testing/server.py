"""aiohttp's low-level web server on its own event loop, in a daemon thread.

It knows nothing about the gateway: aiohttp parses each request, the simulator's async handler
answers with a :class:`Response`, and this module sends it, or deliberately mangles it (a TCP
reset, a body cut short) through aiohttp's transport. It also counts TCP connections, which
aiohttp does not expose, so tests can see keep-alive at work.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["HttpServer", "Request", "Response"]

logger = logging.getLogger("airflow_provider_tfy.testing")

# Room for a large x-tfy-metadata header (16 pairs); aiohttp's default is 8 KiB.
MAX_HEAD_LINE_BYTES = 64 * 1024
# Cap on bodies read whole (JSON); uploads are streamed and never read whole.
MAX_BODY_BYTES = 1024 * 1024
BACKLOG = 8192
SERVER_NAME = "tfy-gateway-simulator"
# How long stop() lets in-flight handlers finish before cutting their connections.
_SHUTDOWN_GRACE = 0.05


@dataclass(slots=True)
class Request:
    """One request as the simulator sees it; the body is read on demand (see :meth:`body`).

    ``path`` and ``query`` are raw (still percent-encoded); header names are lower-cased and
    repeated headers comma-joined. ``http`` is aiohttp's request, for streaming bodies.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    connection_id: int
    http: web.BaseRequest

    async def body(self) -> bytes:
        """The whole body (at most 1 MiB: aiohttp answers 413 beyond that)."""
        return await self.http.read()


@dataclass(slots=True)
class Response:
    """What to send back. ``action`` "abort" resets the connection, "truncate" under-delivers."""

    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    action: str = "respond"


Handler = Callable[[Request], Awaitable[Response]]


class _CountingServer(web.Server):
    """aiohttp's server, numbering the TCP connections it accepts."""

    def __init__(self, handler: Any, owner: HttpServer, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._owner = owner
        self.connection_ids: dict[RequestHandler, int] = {}

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.connection_ids[handler] = self._owner._count_connection()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.connection_ids.pop(handler, None)


class HttpServer:
    """Serves ``handler`` over HTTP/1.1 (keep-alive, pipelining) on a background event loop."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self._handler = handler
        self._host = host
        self._requested_port = port
        self.port: int | None = None
        self._connections_opened = 0
        self._counter_lock = threading.Lock()
        self._conn_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._web: _CountingServer | None = None

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since start (or since the last :meth:`reset_connection_count`)."""
        return self._connections_opened

    def reset_connection_count(self) -> None:
        """Zero :attr:`connections_opened`."""
        with self._counter_lock:
            self._connections_opened = 0

    def _count_connection(self) -> int:
        with self._counter_lock:
            self._connections_opened += 1
        return next(self._conn_ids)

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> None:
        """Bind and start serving; returns once the socket is listening."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(target=self._run, name="tfy-gateway-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("simulator did not start in time")
        if self._startup_error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise self._startup_error

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every open connection, then join the loop thread."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already gone
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError("simulator thread did not stop in time")
        self._thread = None

    def _run(self) -> None:
        # asyncio.run also cancels stragglers (e.g. a handler still sleeping in a delay fault).
        try:
            asyncio.run(self._main())
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._web = _CountingServer(
            self._dispatch,
            self,
            access_log=None,  # one log line per request would cost more than answering it
            max_line_size=MAX_HEAD_LINE_BYTES,
            max_field_size=MAX_HEAD_LINE_BYTES,
        )
        try:
            server = await self._loop.create_server(
                self._web, self._host, self._requested_port, backlog=BACKLOG, reuse_address=True
            )
        except BaseException as exc:  # report bind errors to the starting thread
            self._startup_error = exc
            self._ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            # Idle keep-alive connections close at once; in-flight ones get a moment, then are cut.
            await self._web.shutdown(_SHUTDOWN_GRACE)
            await server.wait_closed()
            # Let the transports' connection_lost callbacks run so their sockets are really closed.
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    async def _dispatch(self, http: web.BaseRequest) -> web.StreamResponse:
        assert self._web is not None
        if http.headers.get("expect", "").lower() == "100-continue" and http.version >= (1, 1):
            # curl sends this before large uploads; aiohttp's router would answer it, the
            # low-level server leaves it to us.
            await http.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        headers = {name.lower(): value for name, value in http.headers.items()}
        if len(headers) != len(http.headers):  # a repeated header: join its values, as HTTP allows
            headers = {}
            for name, value in http.headers.items():
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
        url = http.rel_url
        request = Request(
            method=http.method,
            path=url.raw_path,
            query=url.raw_query_string,
            headers=headers,
            connection_id=self._web.connection_ids.get(http.protocol, 0),
            http=http,
        )
        try:
            response = await self._handler(request)
        except (asyncio.CancelledError, web.HTTPException):
            raise  # HTTPException: aiohttp's own answers, e.g. 413 for an oversized body
        except Exception:
            logger.exception("simulator handler failed for %s %s", request.method, request.path)
            body = b'{"error":{"message":"simulator internal error","type":"server_error","code":null}}'
            response = Response(500, body)
        return await _send(http, response)


async def _send(http: web.BaseRequest, response: Response) -> web.StreamResponse:
    headers = [("Server", SERVER_NAME), *response.headers]
    if response.content_type is not None and not any(
        k.lower() == "content-type" for k, _ in response.headers
    ):
        headers.append(("Content-Type", response.content_type))
    if response.action == "respond" and response.content_type is not None:
        return web.Response(status=response.status, body=response.body, headers=headers)
    if response.action == "abort":
        _abort_with_rst(http)
        # aiohttp sees the closed transport when it tries to send this and drops it quietly.
        return web.Response(status=500)
    if response.action == "truncate":
        # Promise the whole body but deliver only half of it, then hang up.
        streamed = web.StreamResponse(status=response.status, headers=headers)
        streamed.content_length = len(response.body) + 64
        await streamed.prepare(http)
        await streamed.write(response.body[: len(response.body) // 2])
        if http.transport is not None:
            http.transport.close()
        return streamed
    if response.content_type is None and not any(k.lower() == "content-type" for k, _ in headers):
        # aiohttp would add application/octet-stream; the fault asked for no type at all.
        web_response = web.Response(status=response.status, body=response.body, headers=headers)
        web_response.headers.popall("Content-Type", None)
        return web_response
    return web.Response(status=response.status, body=response.body, headers=headers)


def _abort_with_rst(http: web.BaseRequest) -> None:
    transport = http.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Zero linger turns close() into a TCP RST, which is what a crashed upstream looks like.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
