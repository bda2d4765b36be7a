"""An Airflow plugin: Airflow 3.3.2's Test button posts ``port: 0`` for our port-less connections, which
the API refuses (apache/airflow#73298); this middleware drops it for ``truefoundry`` connections.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.providers.common.compat.sdk import AirflowPlugin

from airflow_provider_tfy.provider_info import CONN_TYPE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TEST_PATH = "/api/v2/connections/test"
# A connection-test body is a few hundred bytes; never buffer anything large.
MAX_BODY = 64 * 1024


def drop_port_zero(body: bytes) -> bytes | None:
    """The test request without ``port: 0`` for a TrueFoundry connection, or None to leave it be."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("conn_type") != CONN_TYPE or data.pop("port", None) != 0:
        return None
    return json.dumps(data).encode()


class TestConnectionPortFix:
    """ASGI middleware applying :func:`drop_port_zero` to ``POST /api/v2/connections/test``."""

    __test__ = False  # not a pytest test class

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass every request through; rewrite only a TrueFoundry test request with port 0."""
        path = str(scope.get("path", ""))
        if (scope.get("type"), scope.get("method")) != ("http", "POST") or not path.endswith(TEST_PATH):
            await self.app(scope, receive, send)
            return
        body, more = bytearray(), True
        ending: Message | None = None  # a disconnect that stopped the read, handed on after the body
        while more and len(body) <= MAX_BODY:
            message = await receive()
            if message.get("type") != "http.request":
                ending = message
                break
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
        # A body still streaming in, or too large, is not a connection test: pass it on untouched.
        fixed = None if more or len(body) > MAX_BODY or ending else drop_port_zero(bytes(body))
        if fixed is not None:
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(fixed)).encode())]}
        replayed = bytes(body) if fixed is None else fixed
        pending: list[Message] = [{"type": "http.request", "body": replayed, "more_body": more}]
        pending += [ending] if ending else []

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        await self.app(scope, replay, send)


class TrueFoundryPlugin(AirflowPlugin):
    """Registers :class:`TestConnectionPortFix` with the Airflow 3 API server."""

    name = "truefoundry"
    fastapi_root_middlewares = [
        {
            "middleware": TestConnectionPortFix,
            "args": [],
            "kwargs": {},
            "name": "TrueFoundry: Test Connection without a port (apache/airflow#73298)",
        }
    ]
