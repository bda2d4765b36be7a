"""A small asyncio-streams HTTP/1.1 server running its own event loop in a daemon thread.

It knows nothing about the gateway: it parses requests, hands them to an async handler and
writes (or deliberately mangles) the handler's :class:`Response`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import itertools
import logging
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

__all__ = ["HttpServer", "Request", "Response"]

logger = logging.getLogger("airflow_provider_tfy.testing")

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
BACKLOG = 8192
SERVER_NAME = "tfy-gateway-simulator"


@dataclass(slots=True)
class Request:
    """A parsed request. Header names are lower-cased; repeated headers are comma-joined."""

    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes
    connection_id: int

    @property
    def keep_alive(self) -> bool:
        """Whether the client allows the connection to be reused after this request."""
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass(slots=True)
class Response:
    """What to send back. ``action`` "abort" resets the connection, "truncate" under-delivers."""

    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    action: str = "respond"
    close: bool = False


Handler = Callable[[Request], Awaitable[Response]]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Date:
    """Caches the HTTP Date header value, which only changes once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def value(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = email.utils.formatdate(now, usegmt=True)
        return self._value


class HttpServer:
    """Serves ``handler`` over HTTP/1.1 with keep-alive on a background event loop."""

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
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._date = _Date()

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since start (or since the last :meth:`reset_connection_count`)."""
        return self._connections_opened

    def reset_connection_count(self) -> None:
        """Zero :attr:`connections_opened`."""
        with self._counter_lock:
            self._connections_opened = 0

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
        # asyncio.run also cancels stragglers (e.g. a connection accepted during shutdown).
        try:
            asyncio.run(self._main())
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            server = await asyncio.start_server(
                self._serve_connection,
                self._host,
                self._requested_port,
                backlog=BACKLOG,
                reuse_address=True,
                limit=MAX_HEAD_BYTES,
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
            while self._tasks:
                for writer in list(self._writers):
                    writer.transport.abort()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()
            # Let the transports' connection_lost callbacks run so their sockets are really closed.
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        with self._counter_lock:
            self._connections_opened += 1
        conn_id = next(self._conn_ids)
        aborted = False
        try:
            while True:
                try:
                    request = await _read_request(reader, writer, conn_id)
                except _BadRequest as exc:
                    writer.write(self._error_bytes(exc.status, str(exc)))
                    await writer.drain()
                    break
                if request is None:
                    break
                response = await self._respond(request)
                if response.action == "abort":
                    _abort_with_rst(writer)
                    aborted = True
                    break
                keep_alive = request.keep_alive and not response.close and response.action == "respond"
                writer.write(self._serialize(request, response, keep_alive))
                await writer.drain()
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away mid-request; nothing to answer
        except asyncio.CancelledError:
            # Only stop() cancels these tasks. Ending normally rather than re-raising avoids
            # Python 3.11's stream callback calling task.exception() on a cancelled task, which
            # logs a spurious traceback.
            aborted = True
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            if not aborted:
                writer.close()

    async def _respond(self, request: Request) -> Response:
        try:
            return await self._handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("simulator handler failed for %s %s", request.method, request.path)
            body = b'{"error":{"message":"simulator internal error","type":"server_error","code":null}}'
            return Response(500, body, close=True)

    def _serialize(self, request: Request, response: Response, keep_alive: bool) -> bytes:
        body = response.body
        reason = _reason(response.status)
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Date: {self._date.value()}",
            f"Server: {SERVER_NAME}",
        ]
        if response.content_type is not None:
            lines.append(f"Content-Type: {response.content_type}")
        if response.action == "truncate":
            # Promise the whole body but deliver only half of it, then hang up.
            lines.append(f"Content-Length: {len(body) + 64}")
            body = body[: len(body) // 2]
        elif response.status not in (204, 304):
            lines.append(f"Content-Length: {len(body)}")
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if request.method == "HEAD" or response.status in (204, 304):
            return head
        return head + body

    def _error_bytes(self, status: int, message: str) -> bytes:
        body = (f'{{"error":{{"message":"{message}","type":"invalid_request_error","code":null}}}}').encode()
        head = (
            f"HTTP/1.1 {status} {_reason(status)}\r\nDate: {self._date.value()}\r\nServer: {SERVER_NAME}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        return head.encode("latin-1") + body


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # Zero linger turns close() into a TCP RST, which is what a crashed upstream looks like.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn_id: int
) -> Request | None:
    """Read one request; None on a clean EOF between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise  # disconnected mid-request
        return None
    except asyncio.LimitOverrunError:
        raise _BadRequest(431, "request head too large") from None
    # RFC 9112 lets servers skip empty lines before a request line.
    text = head.decode("latin-1").lstrip("\r\n")
    request_line, _, header_block = text[:-4].partition("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    if target.startswith(("http://", "https://")):
        # Absolute-form, as sent to proxies: keep only the path and query.
        slash = target.find("/", target.index("//") + 2)
        target = target[slash:] if slash != -1 else "/"
    if not target.startswith("/"):
        raise _BadRequest(400, "unsupported request target")
    path, _, query = target.partition("?")
    path = path.partition("#")[0]
    headers: dict[str, str] = {}
    for line in header_block.split("\r\n") if header_block else ():
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise _BadRequest(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    body = await _read_body(reader, writer, headers, version)
    return Request(method.upper(), path, query, version, headers, body, conn_id)


async def _read_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str], version: str
) -> bytes:
    transfer_encoding = headers.get("transfer-encoding", "").lower()
    length_header = headers.get("content-length")
    if transfer_encoding and length_header is not None:
        raise _BadRequest(400, "both Content-Length and Transfer-Encoding given")
    if not transfer_encoding and length_header is None:
        return b""
    if headers.get("expect", "").lower() == "100-continue" and version == "HTTP/1.1":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if transfer_encoding:
        if transfer_encoding != "chunked":
            raise _BadRequest(501, "unsupported transfer encoding")
        return await _read_chunked(reader)
    assert length_header is not None
    if not length_header.isdigit():
        raise _BadRequest(400, "invalid Content-Length")
    length = int(length_header)
    if length > MAX_BODY_BYTES:
        raise _BadRequest(413, "request body too large")
    return await reader.readexactly(length) if length else b""


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadRequest(400, "invalid chunk size") from None
        total += size
        if total > MAX_BODY_BYTES:
            raise _BadRequest(413, "request body too large")
        if size == 0:
            # Skip trailers up to the terminating empty line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise _BadRequest(400, "malformed chunk")
