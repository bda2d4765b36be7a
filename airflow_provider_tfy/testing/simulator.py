"""The gateway simulator: job/fault state plus the routes of the fine-tuning API."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from .faults import Fault
from .jobs import DEFAULT_MODEL, ScriptedJob, new_job_id
from .server import HttpServer, Request, Response

__all__ = ["GatewaySimulator", "RequestRecord"]

logger = logging.getLogger("airflow_provider_tfy.testing")

JOBS_PATH = "/fine_tuning/jobs"
ADMIN_PATH = "/__simulator__/"
REDACTED = "<redacted>"
_SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization"})
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the simulator answered (admin requests are not recorded).

    ``headers`` are lower-cased and the Authorization value is replaced by ``"<redacted>"``;
    ``has_valid_auth`` says whether it carried the right bearer key. ``status`` is None when the
    connection was reset instead of answered. ``path`` is the raw (still percent-encoded) path.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    job_id: str | None
    status: int | None
    time: float
    has_valid_auth: bool
    connection_id: int


@dataclass(slots=True)
class _Outage:
    fault: Fault
    ends_at: float | None
    until: Callable[[], bool] | None


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "code": code, "param": param}}).encode()


def _json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode(), _JSON, headers or [])


class GatewaySimulator:
    """An in-process fake of the TrueFoundry AI Gateway fine-tuning API, served over real HTTP.

    Serves ``GET {url}/fine_tuning/jobs/{id}`` and ``GET {url}/fine_tuning/jobs`` for jobs
    scripted with :meth:`add_job`, behind bearer auth with ``api_key``, and can inject
    :class:`Fault` responses per job or globally (:meth:`outage`). ``latency`` seconds are added
    to every gateway response. ``path_prefix`` (e.g. ``"/api/llm"``) mounts all routes under a
    base path that :attr:`url` includes. ``clock`` drives job timestamps and time-based
    progression (inject a fake one for deterministic tests). At most ``max_records`` requests
    are kept in :attr:`requests`.

    ``host`` should be an IP literal: a name such as ``localhost`` may bind several sockets.
    Requests are answered in this order: a global outage (before authentication), then 401 for
    a missing/wrong key, then the job's queued faults, then the scripted answer. HEAD is
    answered exactly like GET minus the body (it consumes faults and counts as a poll).
    An admin surface under ``{url}/__simulator__/`` (same bearer key) lets another process
    script jobs: ``POST jobs``, ``POST faults``, ``POST outage``, ``POST reset`` and
    ``GET requests?job_id=...``.

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        api_key: str = "tfy-sim-key",
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        *,
        path_prefix: str = "",
        clock: Callable[[], float] = time.time,
        max_records: int = 100_000,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self.api_key = api_key
        self.host = host
        self.latency = float(latency)
        self.path_prefix = _normalise_prefix(path_prefix)
        self._clock = clock
        self._server = HttpServer(self._handle, host, port)
        self._lock = threading.Lock()
        self._jobs: dict[str, ScriptedJob] = {}
        self._faults: dict[str, deque[Fault]] = {}
        self._counts: dict[str, int] = {}
        self._records: deque[RequestRecord] = deque(maxlen=max_records)
        self._outage: _Outage | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> GatewaySimulator:
        """Start serving in a background thread; returns self."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Close every connection and stop the server thread. Safe to call twice."""
        self._server.stop()

    def __enter__(self) -> GatewaySimulator:
        if not self._server.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (only known once started)."""
        if self._server.port is None:
            raise RuntimeError("the simulator has not been started")
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL including any path prefix, without a trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path_prefix}"

    # -- scripting -------------------------------------------------------------------------

    def add_job(
        self,
        job_id: str | None = None,
        statuses: Sequence[str] = ("queued", "running", "succeeded"),
        polls_per_status: int = 1,
        seconds_per_status: float | None = None,
        error: Mapping[str, Any] | None = None,
        fine_tuned_model: str | None = None,
        model: str = DEFAULT_MODEL,
        trained_tokens: int | None = None,
        metadata: Mapping[str, str] | None = None,
        extra_fields: Mapping[str, Any] | None = None,
        faults: Iterable[Fault] = (),
    ) -> ScriptedJob:
        """Script a new job (see :class:`ScriptedJob` for how it progresses).

        ``faults`` are served, in order, to the job's next requests, one per request, before
        normal answers resume. Raises ValueError if ``job_id`` already exists.
        """
        return self._put_job(
            job_id,
            replace=False,
            statuses=statuses,
            polls_per_status=polls_per_status,
            seconds_per_status=seconds_per_status,
            error=error,
            fine_tuned_model=fine_tuned_model,
            model=model,
            trained_tokens=trained_tokens,
            metadata=metadata,
            extra_fields=extra_fields,
            faults=faults,
        )

    def set_job(self, job_id: str, **script: Any) -> ScriptedJob:
        """Like :meth:`add_job` but replaces any job of that id, restarting its script.

        Faults already queued for the id are kept; ``faults`` are appended to them.
        """
        return self._put_job(job_id, replace=True, **script)

    def _put_job(
        self, job_id: str | None, *, replace: bool, faults: Iterable[Fault] = (), **kwargs: Any
    ) -> ScriptedJob:
        job = ScriptedJob(job_id or new_job_id(), clock=self._clock, **kwargs)
        fault_list = list(faults)
        for fault in fault_list:
            if not isinstance(fault, Fault):
                raise TypeError(f"faults must be Fault instances, got {fault!r}")
        with self._lock:
            if job.id in self._jobs:
                if not replace:
                    raise ValueError(f"job {job.id!r} already exists; use set_job() to replace it")
                # Re-inserting moves it to the newest position, as a fresh job would be listed.
                del self._jobs[job.id]
            self._jobs[job.id] = job
            if fault_list:
                self._faults.setdefault(job.id, deque()).extend(fault_list)
        return job

    def get_job(self, job_id: str) -> ScriptedJob:
        """The scripted job with this id (KeyError if unknown)."""
        with self._lock:
            return self._jobs[job_id]

    def remove_job(self, job_id: str) -> None:
        """Forget a job, so that it answers 404 from now on."""
        with self._lock:
            self._jobs.pop(job_id, None)

    def add_fault(self, job_id: str, fault: Fault) -> None:
        """Queue ``fault`` for the next not-yet-faulted request of ``job_id`` (known or not)."""
        if not isinstance(fault, Fault):
            raise TypeError(f"expected a Fault, got {fault!r}")
        with self._lock:
            self._faults.setdefault(job_id, deque()).append(fault)

    def outage(
        self,
        seconds: float | None = None,
        *,
        until: Callable[[], bool] | None = None,
        fault: Fault | None = None,
    ) -> None:
        """Make every gateway request (job and list) fail with ``fault`` (default: 503).

        The outage lasts ``seconds`` from now, or until ``until()`` returns True (it is called
        on the server thread for each request, so keep it cheap and thread-safe), or, with
        neither, until :meth:`end_outage`. Outages are answered before authentication and do not
        consume per-job faults, but they do count in :meth:`request_count`.
        """
        if seconds is not None and seconds < 0:
            raise ValueError("seconds must be >= 0")
        ends_at = None if seconds is None else self._clock() + seconds
        with self._lock:
            self._outage = _Outage(fault or Fault.server_error(503), ends_at, until)

    def end_outage(self) -> None:
        """End any outage started with :meth:`outage`."""
        with self._lock:
            self._outage = None

    # -- observation -----------------------------------------------------------------------

    def request_count(self, job_id: str) -> int:
        """GET/HEAD requests for this job id so far, whatever their outcome (faults, 401, 404)."""
        with self._lock:
            return self._counts.get(job_id, 0)

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the recorded requests, oldest first."""
        with self._lock:
            return list(self._records)

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted so far; with keep-alive, many requests share one."""
        return self._server.connections_opened

    def reset_counters(self) -> None:
        """Clear request counts, records and the connection count (jobs and faults are kept)."""
        with self._lock:
            self._counts.clear()
            self._records.clear()
        self._server.reset_connection_count()

    # -- request handling (event-loop thread) ----------------------------------------------

    async def _handle(self, request: Request) -> Response:
        route, arg = self._route(request.path)
        if route == "admin":
            response = self._admin(request, arg or "")
            logger.debug("%s %s -> %s", request.method, request.path, response.status)
            return response
        if self.latency:
            await asyncio.sleep(self.latency)
        authorised = self._authorised(request.headers)
        job_id = arg if route == "job" else None
        if job_id is not None and request.method in ("GET", "HEAD"):
            with self._lock:
                self._counts[job_id] = self._counts.get(job_id, 0) + 1
        outage = self._active_outage()

        if outage is not None and route in ("job", "list"):
            response = await self._apply_fault(outage, lambda: self._answer(route, job_id, request), job_id)
        elif not authorised:
            response = self._unauthorised(request.headers)
        else:
            fault = self._next_fault(job_id) if route == "job" and request.method in ("GET", "HEAD") else None
            if fault is not None:
                response = await self._apply_fault(
                    fault, lambda: self._answer(route, job_id, request), job_id
                )
            else:
                response = self._answer(route, job_id, request)
        self._record(request, job_id, authorised, response)
        return response

    def _route(self, raw_path: str) -> tuple[str | None, str | None]:
        prefix = self.path_prefix
        if prefix:
            if not raw_path.startswith(prefix + "/"):
                return None, None
            raw_path = raw_path[len(prefix) :]
        if raw_path == JOBS_PATH:
            return "list", None
        if raw_path.startswith(JOBS_PATH + "/"):
            segment = raw_path[len(JOBS_PATH) + 1 :]
            if segment and "/" not in segment:
                return "job", _decode_segment(segment)
            return None, None
        if raw_path.startswith(ADMIN_PATH):
            return "admin", raw_path[len(ADMIN_PATH) :]
        return None, None

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # The header was decoded as latin-1, so this recovers the bytes the client sent.
        return hmac.compare_digest(token.strip().encode("latin-1"), self.api_key.encode())

    def _unauthorised(self, headers: Mapping[str, str]) -> Response:
        if "authorization" in headers:
            message = "Invalid API key provided."
        else:
            message = "Missing API key: send it as 'Authorization: Bearer <key>'."
        body = _error_body(message, "invalid_request_error", "invalid_api_key")
        return Response(401, body, _JSON, [("WWW-Authenticate", 'Bearer realm="truefoundry"')])

    def _active_outage(self) -> Fault | None:
        # Called without the lock held: until() is user code and may call back into the simulator.
        outage = self._outage
        if outage is None:
            return None
        over = outage.ends_at is not None and self._clock() >= outage.ends_at
        if not over and outage.until is not None:
            try:
                over = bool(outage.until())
            except Exception:
                logger.exception("outage until() callback failed; ending the outage")
                over = True
        if not over:
            return outage.fault
        with self._lock:
            if self._outage is outage:  # unless a new outage was started meanwhile
                self._outage = None
        return None

    def _next_fault(self, job_id: str | None) -> Fault | None:
        with self._lock:
            queue = self._faults.get(job_id or "")
            return queue.popleft() if queue else None

    def _answer(self, route: str | None, job_id: str | None, request: Request) -> Response:
        """The normal (fault-free) answer for an authorised request."""
        if route is None:
            body = _error_body(f"Unknown path {request.path}", "invalid_request_error", "not_found")
            return Response(404, body, _JSON)
        if request.method not in ("GET", "HEAD"):
            body = _error_body(f"Method {request.method} not allowed", "invalid_request_error", None)
            return Response(405, body, _JSON, [("Allow", "GET, HEAD")])
        if route == "list":
            return self._list(request)
        with self._lock:
            job = self._jobs.get(job_id or "")
            payload = job.poll() if job is not None else None
        if payload is None:
            return self._not_found(job_id or "")
        return _json_response(200, payload)

    def _not_found(self, job_id: str) -> Response:
        message = f"Fine-tuning job {job_id} not found."
        body = _error_body(
            message, "invalid_request_error", "fine_tuning_job_not_found", "fine_tuning_job_id"
        )
        return Response(404, body, _JSON)

    def _list(self, request: Request) -> Response:
        query = dict(parse_qsl(request.query, keep_blank_values=True))
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            body = _error_body(
                "limit must be an integer between 1 and 100", "invalid_request_error", None, "limit"
            )
            return Response(400, body, _JSON)
        with self._lock:
            jobs = list(reversed(self._jobs.values()))  # newest first, like the real API
            after = query.get("after")
            if after:
                ids = [job.id for job in jobs]
                jobs = jobs[ids.index(after) + 1 :] if after in ids else []
            page = [job.peek() for job in jobs[:limit]]
        return _json_response(200, {"object": "list", "data": page, "has_more": len(jobs) > limit})

    async def _apply_fault(
        self, fault: Fault, normal: Callable[[], Response], job_id: str | None
    ) -> Response:
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            if fault.then is None:
                return normal()
            return await self._apply_fault(fault.then, normal, job_id)
        if fault.kind == "reset":
            return Response(0, action="abort")
        if fault.kind == "rate_limit":
            body = _error_body(
                "Rate limit exceeded. Please retry later.", "rate_limit_error", "rate_limit_exceeded"
            )
            headers = (
                [] if fault.retry_after is None else [("Retry-After", _format_retry_after(fault.retry_after))]
            )
            return Response(429, body, _JSON, headers)
        status = fault.http_status or 500
        if fault.kind == "server_error":
            return Response(status, _error_body("The server had an error.", "server_error", None), _JSON)
        if fault.kind == "html_error":
            return Response(status, _html_error(status), "text/html; charset=utf-8")
        if fault.kind == "malformed":
            return Response(status, fault.body or b"", fault.content_type)
        if fault.kind == "truncated":
            return Response(200, self._current_body(job_id), _JSON, action="truncate")
        # kind == "status"
        if fault.body is None:
            body = _error_body(f"Simulated HTTP {status}", "invalid_request_error", None)
            return Response(status, body, _JSON, list(fault.headers))
        return Response(status, fault.body, fault.content_type, list(fault.headers))

    def _current_body(self, job_id: str | None) -> bytes:
        """The job's current document without counting a poll (truncation sends half of it)."""
        with self._lock:
            job = self._jobs.get(job_id or "")
            payload = job.peek() if job is not None else {"object": "list", "data": [], "has_more": False}
        return json.dumps(payload).encode()

    def _record(self, request: Request, job_id: str | None, authorised: bool, response: Response) -> None:
        status = None if response.action == "abort" else response.status
        headers = {k: (REDACTED if k in _SENSITIVE_HEADERS else v) for k, v in request.headers.items()}
        record = RequestRecord(
            method=request.method,
            path=request.path,
            query=dict(parse_qsl(request.query, keep_blank_values=True)),
            headers=headers,
            job_id=job_id,
            status=status,
            time=time.time(),
            has_valid_auth=authorised,
            connection_id=request.connection_id,
        )
        with self._lock:
            self._records.append(record)
        logger.debug("%s %s -> %s", request.method, request.path, "reset" if status is None else status)

    # -- admin surface ---------------------------------------------------------------------

    def _admin(self, request: Request, action: str) -> Response:
        """Scripting endpoints for a simulator running in another process (same bearer key)."""
        if not self._authorised(request.headers):
            return self._unauthorised(request.headers)
        handlers: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "requests"): self._admin_requests,
            ("HEAD", "requests"): self._admin_requests,
            ("POST", "jobs"): self._admin_jobs,
            ("POST", "faults"): self._admin_faults,
            ("POST", "outage"): self._admin_outage,
            ("POST", "reset"): self._admin_reset,
        }
        handler = handlers.get((request.method, action))
        if handler is None:
            message = f"unknown admin route {request.method} {ADMIN_PATH}{action}"
            return Response(404, _error_body(message, "invalid_request_error", "not_found"), _JSON)
        try:
            return handler(request)
        except (ValueError, TypeError, KeyError) as exc:
            message = f"bad admin request: {exc!r}"
            return Response(400, _error_body(message, "invalid_request_error", None), _JSON)

    def _admin_requests(self, request: Request) -> Response:
        query = dict(parse_qsl(request.query))
        with self._lock:
            count = self._counts.get(query["job_id"], 0) if "job_id" in query else len(self._records)
        return _json_response(200, {"count": count})

    def _admin_jobs(self, request: Request) -> Response:
        job = self._admin_put_job(_json_object(request.body))
        return _json_response(201, {"id": job.id, "statuses": list(job.statuses)})

    def _admin_faults(self, request: Request) -> Response:
        spec = _json_object(request.body)
        faults = [Fault.from_dict(item) for item in spec.get("faults", [])]
        for fault in faults:
            self.add_fault(str(spec["job_id"]), fault)
        return _json_response(200, {"queued": len(faults)})

    def _admin_outage(self, request: Request) -> Response:
        spec = _json_object(request.body)
        if spec.get("end"):
            self.end_outage()
        else:
            fault = Fault.from_dict(spec["fault"]) if spec.get("fault") else None
            self.outage(spec.get("seconds"), fault=fault)
        return _json_response(200, {"active": not spec.get("end")})

    def _admin_reset(self, request: Request) -> Response:
        self.reset_counters()
        return _json_response(200, {"reset": True})

    def _admin_put_job(self, spec: dict[str, Any]) -> ScriptedJob:
        allowed = {
            "statuses",
            "polls_per_status",
            "seconds_per_status",
            "error",
            "fine_tuned_model",
            "model",
            "trained_tokens",
            "metadata",
            "extra_fields",
        }
        unknown = set(spec) - allowed - {"job_id", "faults"}
        if unknown:
            raise ValueError(f"unknown job fields {sorted(unknown)}")
        kwargs = {k: v for k, v in spec.items() if k in allowed}
        faults = [Fault.from_dict(f) for f in spec.get("faults", [])]
        return self._put_job(spec.get("job_id"), replace=True, faults=faults, **kwargs)


def _json_object(raw: bytes) -> dict[str, Any]:
    spec = json.loads(raw or b"{}")
    if not isinstance(spec, dict):
        raise ValueError("the body must be a JSON object")
    return spec


def _normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip().rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix


def _decode_segment(segment: str) -> str:
    # The request line was decoded as latin-1; round-trip to bytes so raw UTF-8 and %XX both work.
    return unquote_to_bytes(segment.encode("latin-1")).decode("utf-8", errors="replace")


def _format_retry_after(value: int | float | str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return str(int(value))


def _html_error(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return (
        f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n"
        f"<body>\r\n<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
