"""Unit tests of the API-server plugin that lets the Test button work for a port-less connection.

:class:`TestConnectionPortFix` is plain ASGI, so it is driven here directly: a hand-made scope,
a ``receive`` that hands out prepared messages, and a tiny downstream app that records what
reached it. The real API server with the plugin loaded is covered by ``tests/ui``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pytest
from pydantic import BaseModel

from airflow_provider_tfy.plugins import (
    MAX_BODY,
    TEST_PATH,
    Message,
    Receive,
    Scope,
    Send,
    TrueFoundryPlugin,
    drop_port_zero,
)
from airflow_provider_tfy.plugins import (
    TestConnectionPortFix as PortFix,
)

# What Airflow 3.3.2's row button posts for a TrueFoundry connection stored without a port.
ROW_BODY: dict[str, Any] = {
    "conn_type": "truefoundry",
    "connection_id": "tfy_gateway",
    "description": "",
    "extra": '{"provider_name": "openai-main", "timeout": 12.5}',
    "host": "https://gateway.truefoundry.ai",
    "login": "",
    "password": "***",
    "port": 0,
    "schema": "",
}
RESPONSE_BODY = b'{"status":true,"message":"ok"}'
# Far longer than any of these tests needs; a hang shows up as a failure, not a stuck run.
HANG_TIMEOUT = 5


def _encode(data: Any) -> bytes:
    return json.dumps(data).encode()


def _without_port(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "port"}


# drop_port_zero ---------------------------------------------------------------------------------


def test_drop_port_zero_removes_only_the_port() -> None:
    fixed = drop_port_zero(_encode(ROW_BODY))
    assert fixed is not None
    data = json.loads(fixed)
    assert data == _without_port(ROW_BODY)
    assert list(data) == list(_without_port(ROW_BODY)), "the other keys keep their order"


def test_drop_port_zero_keeps_non_ascii_text() -> None:
    body = {**ROW_BODY, "description": "Passerelle d'équipe ✓", "extra": '{"metadata": {"é": "ü"}}'}
    fixed = drop_port_zero(json.dumps(body, ensure_ascii=False).encode())
    assert fixed is not None
    assert json.loads(fixed) == _without_port(body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({**ROW_BODY, "port": None}, id="port-null"),
        pytest.param(_without_port(ROW_BODY), id="port-absent"),
        pytest.param({**ROW_BODY, "port": 443}, id="port-443"),
        pytest.param({**ROW_BODY, "port": 1}, id="port-1"),
        pytest.param({**ROW_BODY, "port": "0"}, id="port-string-0"),
        pytest.param({**ROW_BODY, "port": ""}, id="port-empty-string"),
        pytest.param({**ROW_BODY, "conn_type": "http"}, id="other-conn-type"),
        pytest.param({**ROW_BODY, "conn_type": "TrueFoundry"}, id="conn-type-other-case"),
        pytest.param({**ROW_BODY, "conn_type": None}, id="conn-type-null"),
        pytest.param({k: v for k, v in ROW_BODY.items() if k != "conn_type"}, id="conn-type-absent"),
        pytest.param([ROW_BODY], id="json-array"),
        pytest.param("truefoundry", id="json-string"),
        pytest.param(0, id="json-number"),
    ],
)
def test_drop_port_zero_leaves_other_bodies_alone(body: Any) -> None:
    assert drop_port_zero(_encode(body)) is None


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"port=0&conn_type=truefoundry", id="form-encoded"),
        pytest.param(b'{"conn_type": "truefoundry", "port": 0', id="truncated-json"),
        pytest.param(b'{"conn_type": "truefoundry", "port": 0, "x": "\xff\xfe"}', id="invalid-utf8"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-too-deep"),
        pytest.param(b"\x00\x01\x02", id="binary"),
    ],
)
def test_drop_port_zero_ignores_what_is_not_json(raw: bytes) -> None:
    assert drop_port_zero(raw) is None


# The middleware, as ASGI ----------------------------------------------------------------------


@dataclass
class Downstream:
    """A fake Airflow app: reads the whole body the way Starlette does, then answers 200."""

    read_body: bool = True
    scope: Scope | None = None
    receive: Receive | None = None
    messages: list[Message] = field(default_factory=list)
    calls: int = 0

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.request")

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        assert self.scope is not None
        return [(bytes(k), bytes(v)) for k, v in self.scope.get("headers", [])]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        self.scope, self.receive = scope, receive
        while self.read_body:
            message = await receive()
            self.messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": RESPONSE_BODY})


class Client:
    """The server side: hands out prepared ``receive`` messages, then (as ASGI servers do once the
    request is over) ``http.disconnect`` on every further call; records what the app sent."""

    def __init__(self, messages: list[Message]) -> None:
        self.pending = list(messages)
        self.received = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.received += 1
        if self.pending:
            return self.pending.pop(0)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)


def _scope(body_length: int | None, *, method: str = "POST", path: str = TEST_PATH) -> dict[str, Any]:
    headers = [(b"host", b"airflow.example"), (b"content-type", b"application/json")]
    if body_length is not None:
        headers.insert(1, (b"content-length", str(body_length).encode()))
    headers.append((b"x-after", b"kept"))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
    }


def _chunks(body: bytes, size: int) -> list[Message]:
    """The body as ``http.request`` messages of at most ``size`` bytes each."""
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    return [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]


def _run(
    scope: dict[str, Any], messages: list[Message], downstream: Downstream | None = None
) -> tuple[Downstream, Client]:
    downstream = downstream or Downstream()
    client = Client(messages)
    middleware = PortFix(downstream)
    asyncio.run(asyncio.wait_for(middleware(scope, client.receive, client.send), HANG_TIMEOUT))
    assert downstream.calls == 1
    return downstream, client


def _content_lengths(downstream: Downstream) -> list[bytes]:
    return [v for k, v in downstream.headers if k.lower() == b"content-length"]


def _assert_untouched(scope: dict[str, Any], body: bytes, downstream: Downstream, client: Client) -> None:
    assert downstream.body == body
    assert downstream.messages[-1]["type"] == "http.request"
    assert downstream.messages[-1].get("more_body", False) is False, "the body did not end"
    assert downstream.scope is not None
    assert downstream.headers == scope["headers"]
    assert {k: v for k, v in downstream.scope.items() if k != "headers"} == {
        k: v for k, v in scope.items() if k != "headers"
    }
    assert client.sent[-1]["body"] == RESPONSE_BODY


def test_rewrites_the_row_buttons_request() -> None:
    body = _encode(ROW_BODY)
    scope = _scope(len(body))
    downstream, client = _run(scope, _chunks(body, len(body)))

    assert json.loads(downstream.body) == _without_port(ROW_BODY)
    assert _content_lengths(downstream) == [str(len(downstream.body)).encode()]
    # Every other header is kept, in order; the server's scope is not mutated.
    assert [h for h in downstream.headers if h[0] != b"content-length"] == [
        h for h in scope["headers"] if h[0] != b"content-length"
    ]
    assert (b"content-length", str(len(body)).encode()) in scope["headers"], "the server's scope changed"
    assert downstream.scope is not None
    assert downstream.scope["path"] == TEST_PATH
    assert downstream.scope["method"] == "POST"
    # The app's answer goes back to the client unchanged.
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]
    assert client.sent[1]["body"] == RESPONSE_BODY


@pytest.mark.parametrize(
    "path",
    [TEST_PATH, "/airflow" + TEST_PATH],
    ids=["root", "behind-a-base-url"],
)
def test_rewrites_under_a_path_prefix_too(path: str) -> None:
    body = _encode(ROW_BODY)
    downstream, _ = _run(_scope(len(body), path=path), _chunks(body, len(body)))
    assert "port" not in json.loads(downstream.body)


def test_adds_a_content_length_when_the_request_had_none() -> None:
    """A chunked upload has no content-length; the rewritten body still gets a correct one."""
    body = _encode(ROW_BODY)
    downstream, _ = _run(_scope(None), _chunks(body, 7))
    assert "port" not in json.loads(downstream.body)
    assert _content_lengths(downstream) == [str(len(downstream.body)).encode()]


def test_replaces_every_content_length_header_whatever_its_case() -> None:
    body = _encode(ROW_BODY)
    scope = _scope(None)
    scope["headers"] += [(b"Content-Length", str(len(body)).encode()), (b"CONTENT-LENGTH", b"1")]
    downstream, _ = _run(scope, _chunks(body, len(body)))
    assert _content_lengths(downstream) == [str(len(downstream.body)).encode()]


@pytest.mark.parametrize("size", [1, 5, 64, 333])
def test_rewrites_a_body_that_arrives_in_several_chunks(size: int) -> None:
    body = _encode(ROW_BODY)
    messages = [*_chunks(body, size)]
    messages[-1]["more_body"] = True
    messages.append({"type": "http.request", "body": b"", "more_body": False})  # an empty last chunk
    downstream, _ = _run(_scope(len(body)), messages)
    assert json.loads(downstream.body) == _without_port(ROW_BODY)
    assert _content_lengths(downstream) == [str(len(downstream.body)).encode()]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("GET", TEST_PATH, ROW_BODY, id="GET"),
        pytest.param("PUT", TEST_PATH, ROW_BODY, id="PUT"),
        pytest.param("PATCH", "/api/v2/connections/tfy_gateway", ROW_BODY, id="PATCH-connection"),
        pytest.param("POST", "/api/v2/connections", ROW_BODY, id="POST-create"),
        pytest.param("POST", "/api/v2/connections/enqueue-test", ROW_BODY, id="POST-enqueue-test"),
        pytest.param("POST", TEST_PATH + "/", ROW_BODY, id="POST-trailing-slash"),
        pytest.param("POST", "/ui/connections/test", ROW_BODY, id="POST-other-prefix"),
        pytest.param("POST", TEST_PATH, {**ROW_BODY, "conn_type": "http"}, id="conn-type-http"),
        pytest.param("POST", TEST_PATH, {**ROW_BODY, "port": None}, id="port-null"),
        pytest.param("POST", TEST_PATH, _without_port(ROW_BODY), id="port-absent"),
        pytest.param("POST", TEST_PATH, {**ROW_BODY, "port": 443}, id="port-443"),
        pytest.param("POST", TEST_PATH, {**ROW_BODY, "port": "0"}, id="port-string-0"),
    ],
)
def test_leaves_every_other_request_byte_identical(method: str, path: str, body: dict[str, Any]) -> None:
    raw = json.dumps(body, separators=(",", ":")).encode()  # not json.dumps' default spacing
    scope = _scope(len(raw), method=method, path=path)
    downstream, client = _run(scope, _chunks(raw, 10))
    _assert_untouched(scope, raw, downstream, client)


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/v2/version"), ("POST", "/api/v2/connections")])
def test_other_routes_get_the_servers_own_scope_and_receive(method: str, path: str) -> None:
    """Anything but a connection test is handed on as is: not even ``receive`` is wrapped."""
    body = _encode(ROW_BODY)
    scope = _scope(len(body), method=method, path=path)
    downstream = Downstream(read_body=False)
    _, client = _run(scope, _chunks(body, len(body)), downstream)
    assert downstream.scope is scope
    assert downstream.receive == client.receive
    assert client.received == 0


@pytest.mark.parametrize("scope_type", ["lifespan", "websocket"])
def test_non_http_scopes_pass_straight_through(scope_type: str) -> None:
    scope = {**_scope(None), "type": scope_type}
    downstream = Downstream(read_body=False)
    _, client = _run(scope, [], downstream)
    assert downstream.scope is scope
    assert downstream.receive == client.receive


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"conn_type=truefoundry&port=0", id="form-encoded"),
        pytest.param(b'{"conn_type": "truefoundry", "port": 0', id="truncated-json"),
        pytest.param(b"\xff\xfe\x00garbage", id="binary"),
        pytest.param(b"", id="empty"),
    ],
)
def test_passes_a_body_that_is_not_json_through_untouched(raw: bytes) -> None:
    scope = _scope(len(raw))
    downstream, client = _run(scope, _chunks(raw, 4))
    _assert_untouched(scope, raw, downstream, client)


@pytest.mark.parametrize("chunk", [4096, 16 * 1024, MAX_BODY])
def test_passes_an_oversized_body_through_untouched_and_complete(chunk: int) -> None:
    """More than 64 KiB is no connection test from the UI; it is streamed on, every byte of it."""
    padding = "x" * (MAX_BODY * 3)
    raw = _encode({**ROW_BODY, "description": padding})  # would be rewritten, were it small
    assert len(raw) > 3 * MAX_BODY
    scope = _scope(len(raw))
    messages = _chunks(raw, chunk)
    downstream, client = _run(scope, messages)
    _assert_untouched(scope, raw, downstream, client)
    assert client.received == len(messages), "the middleware lost or invented a message"


def test_buffers_at_most_64_kib_before_handing_on() -> None:
    """The middleware stops reading once it holds more than 64 KiB: the app reads the rest."""
    raw = _encode({**ROW_BODY, "description": "x" * (MAX_BODY * 4)})
    chunk = 1024
    messages = _chunks(raw, chunk)
    reads_before_app: list[int] = []
    downstream = Downstream()
    client = Client(messages)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reads_before_app.append(client.received)
        await downstream(scope, receive, send)

    middleware = PortFix(app)
    asyncio.run(asyncio.wait_for(middleware(_scope(len(raw)), client.receive, client.send), HANG_TIMEOUT))
    assert reads_before_app == [MAX_BODY // chunk + 1]
    assert downstream.body == raw


def test_the_app_still_hears_of_a_disconnect_after_the_body() -> None:
    """After the replayed body, ``receive`` is the server's again (e.g. to notice a disconnect)."""
    body = _encode(ROW_BODY)
    downstream, _ = _run(_scope(len(body)), _chunks(body, 9))
    assert downstream.receive is not None
    extra = asyncio.run(asyncio.wait_for(downstream.receive(), HANG_TIMEOUT))
    assert extra == {"type": "http.disconnect"}
    assert json.loads(downstream.body) == _without_port(ROW_BODY)


@pytest.mark.parametrize(
    "before",
    [
        pytest.param([], id="before-any-body"),
        pytest.param(
            [{"type": "http.request", "body": b'{"conn_type": "true', "more_body": True}], id="mid-body"
        ),
    ],
)
def test_a_client_that_disconnects_mid_request_does_not_hang(before: list[Message]) -> None:
    """The request is neither rewritten nor completed: the app sees the partial body, then the
    disconnect, and everything returns."""
    partial = b"".join(m["body"] for m in before)
    scope = _scope(len(_encode(ROW_BODY)))
    downstream, client = _run(scope, [*before, {"type": "http.disconnect"}])
    assert downstream.body == partial
    assert downstream.messages[-1] == {"type": "http.disconnect"}
    assert downstream.headers == scope["headers"]
    assert client.sent[-1]["body"] == RESPONSE_BODY


# The plugin, as Airflow sees it ---------------------------------------------------------------


def test_plugin_registers_the_middleware() -> None:
    assert TrueFoundryPlugin.name == "truefoundry"
    (entry,) = TrueFoundryPlugin.fastapi_root_middlewares
    assert entry["middleware"] is PortFix
    assert entry["args"] == []
    assert entry["kwargs"] == {}
    assert "73298" in entry["name"]


def test_plugin_is_an_airflow_plugins_entry_point() -> None:
    """Airflow always loads ``airflow.plugins`` entry points (provider-declared plugins only with
    lazy provider discovery off), so the API server gets the middleware on every deployment."""
    (entry,) = [e for e in entry_points(group="airflow.plugins") if e.name == "truefoundry"]
    assert entry.value == "airflow_provider_tfy.plugins:TrueFoundryPlugin"
    assert entry.load() is TrueFoundryPlugin


class _TestBody(BaseModel):
    """The part of Airflow's ``ConnectionBody`` that matters here."""

    conn_type: str
    port: int | None = None


def test_works_as_a_starlette_middleware_in_front_of_a_fastapi_route() -> None:
    """Added the way Airflow adds a root middleware (``app.add_middleware``), in front of a route
    that, like Airflow's, parses the body with pydantic: port 0 never reaches it."""
    import httpx
    from fastapi import FastAPI

    app = FastAPI()

    @app.post(TEST_PATH)
    def test_connection(body: _TestBody) -> dict[str, Any]:
        return {"fields_set": sorted(body.model_fields_set), "port": body.port}

    app.add_middleware(PortFix)

    async def post_both() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://airflow.example") as client:
            fixed = await client.post(TEST_PATH, json=ROW_BODY)
            other = await client.post(TEST_PATH, json={**ROW_BODY, "conn_type": "http"})
        return fixed, other

    fixed, other = asyncio.run(asyncio.wait_for(post_both(), HANG_TIMEOUT))
    assert fixed.status_code == 200, fixed.text
    assert fixed.json() == {"fields_set": ["conn_type"], "port": None}
    assert other.status_code == 200, other.text
    assert other.json() == {"fields_set": ["conn_type", "port"], "port": 0}
