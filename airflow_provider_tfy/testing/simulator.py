"""The gateway simulator: job, file and fault state plus the routes of the fine-tuning API."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from aiohttp import web

from .answers import JSON, RequestError, error_body, format_retry_after, html_error, json_response
from .faults import Fault
from .job_requests import parse_create, parse_list_query
from .jobs import DEFAULT_MODEL, ScriptedJob, new_job_id
from .server import HttpServer, Request, Response
from .uploads import MAX_UPLOAD_BYTES, UploadedFile, new_file_id, read_upload

__all__ = ["ENDPOINTS", "GatewaySimulator", "RequestRecord"]

logger = logging.getLogger("airflow_provider_tfy.testing")

JOBS_PATH = "/fine_tuning/jobs"
FILES_PATH = "/files"
ADMIN_PATH = "/__simulator__/"
REDACTED = "<redacted>"
#: Endpoints that take queued faults through :meth:`GatewaySimulator.add_endpoint_fault`.
ENDPOINTS = ("upload", "create", "list", "cancel")
_SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization"})
# (path kind, method) -> endpoint name; a known path with another method answers 405.
_ROUTES = {
    ("jobs", "GET"): "list",
    ("jobs", "HEAD"): "list",
    ("jobs", "POST"): "create",
    ("job", "GET"): "retrieve",
    ("job", "HEAD"): "retrieve",
    ("cancel", "POST"): "cancel",
    ("files", "POST"): "upload",
}
_ALLOW = {"jobs": "GET, HEAD, POST", "job": "GET, HEAD", "cancel": "POST", "files": "POST"}
# add_job() keyword arguments a created job may take from set_create_script(); the others come
# from the create request itself.
_CREATE_SCRIPT_FIELDS = frozenset(
    {
        "statuses",
        "polls_per_status",
        "seconds_per_status",
        "error",
        "fine_tuned_model",
        "trained_tokens",
        "extra_fields",
    }
)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the simulator answered (admin requests are not recorded).

    ``headers`` are lower-cased and the Authorization value is replaced by ``"<redacted>"``;
    ``has_valid_auth`` says whether it carried the right bearer key. ``status`` is None when the
    connection was reset instead of answered. ``path`` is the raw (still percent-encoded) path.
    ``endpoint`` is ``"retrieve"``, ``"list"``, ``"create"``, ``"cancel"`` or ``"upload"``
    (None for an unknown path or method).
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
    endpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the admin surface)."""
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class _Outage:
    fault: Fault
    ends_at: float | None
    until: Callable[[], bool] | None


class GatewaySimulator:
    """An in-process fake of the TrueFoundry AI Gateway fine-tuning API, served over real HTTP.

    Serves, behind bearer auth with ``api_key``:

    * ``GET {url}/fine_tuning/jobs/{id}`` (retrieve) for jobs scripted with :meth:`add_job`;
    * ``GET {url}/fine_tuning/jobs`` (list: newest first, ``limit``, ``after``,
      ``metadata[key]=value`` filters unless :attr:`ignore_list_filter`);
    * ``POST {url}/fine_tuning/jobs`` (create: jobs follow :meth:`set_create_script`);
    * ``POST {url}/fine_tuning/jobs/{id}/cancel`` (405 when :attr:`can_cancel` is False);
    * ``POST {url}/files`` (multipart ``file`` + ``purpose``, streamed and counted, never kept).

    :class:`Fault` answers are queued per job for retrieve (:meth:`add_fault`), per endpoint for
    the others (:meth:`add_endpoint_fault`), or for everything (:meth:`outage`). ``latency``
    seconds are added to every gateway response. ``path_prefix`` (e.g. ``"/api/llm"``) mounts
    all routes under a base path that :attr:`url` includes. ``clock`` drives job timestamps and
    time-based progression (inject a fake one for deterministic tests). At most
    ``max_records`` requests are kept in :attr:`requests`.

    ``host`` should be an IP literal: a name such as ``localhost`` may bind several sockets.
    Requests are answered in this order: a global outage (before authentication), then 401 for
    a missing/wrong key, then the queued faults, then the normal answer. HEAD is answered
    exactly like GET minus the body (it consumes faults and counts as a poll).
    An admin surface under ``{url}/__simulator__/`` (same bearer key) lets another process
    script it: ``POST jobs``, ``faults``, ``outage``, ``reset``, ``create_script``,
    ``endpoint_faults``, ``settings``; ``GET requests``, ``created_jobs``, ``files``.

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
        #: When True, the list endpoint ignores ``metadata[...]`` filters, as a gateway might.
        self.ignore_list_filter = False
        #: When False, the cancel endpoint answers 405, as a gateway without cancel would.
        self.can_cancel = True
        #: Uploads larger than this answer 413 (the gateway's documented 512 MB).
        self.max_upload_bytes = MAX_UPLOAD_BYTES
        self._clock = clock
        self._server = HttpServer(self._handle, host, port)
        self._lock = threading.Lock()
        self._jobs: dict[str, ScriptedJob] = {}
        self._faults: dict[str, deque[Fault]] = {}
        self._endpoint_faults: dict[str, deque[Fault]] = {name: deque() for name in ENDPOINTS}
        self._counts: dict[str, int] = {}
        self._cancel_counts: dict[str, int] = {}
        self._records: deque[RequestRecord] = deque(maxlen=max_records)
        self._outage: _Outage | None = None
        self._create_script: dict[str, Any] = {}
        self._create_faults: tuple[Fault, ...] = ()
        self._created: list[ScriptedJob] = []
        self._files: list[UploadedFile] = []

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
        fault_list = _check_faults(faults)
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

    def set_create_script(self, **script: Any) -> None:
        """How jobs created through ``POST /fine_tuning/jobs`` behave from now on.

        Takes :meth:`add_job`'s keyword arguments except those the create request itself
        supplies (``job_id``, ``model``, ``metadata``): ``statuses``, ``polls_per_status``,
        ``seconds_per_status``, ``error``, ``fine_tuned_model``, ``trained_tokens``,
        ``extra_fields`` and ``faults`` (queued for each created job's retrieve requests).
        With no arguments, restores the default (queued, running, succeeded; one poll each).
        """
        faults = _check_faults(script.pop("faults", ()))
        unknown = set(script) - _CREATE_SCRIPT_FIELDS
        if unknown:
            raise ValueError(
                f"unknown create-script fields {sorted(unknown)}; expected {sorted(_CREATE_SCRIPT_FIELDS)}"
            )
        ScriptedJob("ftjob-probe", clock=self._clock, **script)  # refuse a bad script now, not per create
        with self._lock:
            self._create_script = dict(script)
            self._create_faults = tuple(faults)

    def get_job(self, job_id: str) -> ScriptedJob:
        """The scripted job with this id (KeyError if unknown)."""
        with self._lock:
            return self._jobs[job_id]

    def remove_job(self, job_id: str) -> None:
        """Forget a job, so that it answers 404 from now on."""
        with self._lock:
            self._jobs.pop(job_id, None)

    def add_fault(self, job_id: str, fault: Fault) -> None:
        """Queue ``fault`` for the next not-yet-faulted retrieve of ``job_id`` (known or not)."""
        (fault,) = _check_faults([fault])
        with self._lock:
            self._faults.setdefault(job_id, deque()).append(fault)

    def add_endpoint_fault(self, endpoint: str, fault: Fault) -> None:
        """Queue ``fault`` for the next request to ``endpoint`` (``"upload"``, ``"create"``,
        ``"list"`` or ``"cancel"``); faults are consumed one per request, in order.

        On upload, create and cancel, only :meth:`Fault.applied` carries the request out; any
        other fault means the gateway did not act on it.
        """
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {list(ENDPOINTS)}")
        (fault,) = _check_faults([fault])
        with self._lock:
            self._endpoint_faults[endpoint].append(fault)

    def outage(
        self,
        seconds: float | None = None,
        *,
        until: Callable[[], bool] | None = None,
        fault: Fault | None = None,
    ) -> None:
        """Make every gateway request (all endpoints) fail with ``fault`` (default: 503).

        The outage lasts ``seconds`` from now, or until ``until()`` returns True (it is called
        on the server thread for each request, so keep it cheap and thread-safe), or, with
        neither, until :meth:`end_outage`. Outages are answered before authentication and do not
        consume queued faults, but they do count in :meth:`request_count`.
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

    def cancel_requests(self, job_id: str) -> int:
        """Cancel requests for this job id so far, whatever their outcome."""
        with self._lock:
            return self._cancel_counts.get(job_id, 0)

    @property
    def created_jobs(self) -> list[ScriptedJob]:
        """Jobs created through ``POST /fine_tuning/jobs``, oldest first."""
        with self._lock:
            return list(self._created)

    @property
    def files(self) -> list[UploadedFile]:
        """Files uploaded through ``POST /files``, oldest first."""
        with self._lock:
            return list(self._files)

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
        """Clear request counts, records and the connection count (jobs, files, faults are kept)."""
        with self._lock:
            self._counts.clear()
            self._cancel_counts.clear()
            self._records.clear()
        self._server.reset_connection_count()

    # -- request handling (event-loop thread) ----------------------------------------------

    async def _handle(self, request: Request) -> Response:
        kind, arg = self._route(request.path)
        if kind == "admin":
            from .admin import handle_admin  # only when someone scripts over HTTP

            response = await handle_admin(self, request, arg or "")
            logger.debug("%s %s -> %s", request.method, request.path, response.status)
            return response
        if self.latency:
            await asyncio.sleep(self.latency)
        authorised = self._authorised(request.headers)
        endpoint = _ROUTES.get((kind or "", request.method))
        job_id = arg if kind in ("job", "cancel") else None
        if job_id is not None:
            counts = (
                self._counts
                if endpoint == "retrieve"
                else self._cancel_counts
                if endpoint == "cancel"
                else None
            )
            if counts is not None:
                with self._lock:
                    counts[job_id] = counts.get(job_id, 0) + 1

        async def normal() -> Response:
            return await self._answer(kind, endpoint, job_id, request)

        outage = self._active_outage()
        if outage is not None and kind is not None:
            response = await self._apply_fault(outage, normal, endpoint, job_id)
        elif not authorised:
            response = self._unauthorised(request.headers)
        else:
            fault = self._next_fault(endpoint, job_id)
            if fault is not None:
                response = await self._apply_fault(fault, normal, endpoint, job_id)
            else:
                response = await normal()
        self._record(request, job_id, authorised, response, endpoint)
        return response

    def _route(self, raw_path: str) -> tuple[str | None, str | None]:
        prefix = self.path_prefix
        if prefix:
            if not raw_path.startswith(prefix + "/"):
                return None, None
            raw_path = raw_path[len(prefix) :]
        if raw_path == JOBS_PATH:
            return "jobs", None
        if raw_path == FILES_PATH:
            return "files", None
        if raw_path.startswith(JOBS_PATH + "/"):
            segment = raw_path[len(JOBS_PATH) + 1 :]
            job_segment, slash, rest = segment.partition("/")
            if job_segment and not slash:
                return "job", _decode_segment(job_segment)
            if job_segment and rest == "cancel":
                return "cancel", _decode_segment(job_segment)
            return None, None
        if raw_path.startswith(ADMIN_PATH):
            return "admin", raw_path[len(ADMIN_PATH) :]
        return None, None

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # aiohttp decoded the header as UTF-8 with surrogate escapes: this recovers the bytes sent.
        return hmac.compare_digest(token.strip().encode("utf-8", "surrogateescape"), self.api_key.encode())

    def _unauthorised(self, headers: Mapping[str, str]) -> Response:
        if "authorization" in headers:
            message = "Invalid API key provided."
        else:
            message = "Missing API key: send it as 'Authorization: Bearer <key>'."
        body = error_body(message, "invalid_request_error", "invalid_api_key")
        return Response(401, body, JSON, [("WWW-Authenticate", 'Bearer realm="truefoundry"')])

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

    def _next_fault(self, endpoint: str | None, job_id: str | None) -> Fault | None:
        with self._lock:
            if endpoint == "retrieve":
                queue = self._faults.get(job_id or "")
            elif endpoint is not None:
                queue = self._endpoint_faults[endpoint]
            else:
                return None
            return queue.popleft() if queue else None

    async def _answer(
        self, kind: str | None, endpoint: str | None, job_id: str | None, request: Request
    ) -> Response:
        """The normal (fault-free) answer for an authorised request."""
        if kind is None:
            body = error_body(f"Unknown path {request.path}", "invalid_request_error", "not_found")
            return Response(404, body, JSON)
        if endpoint is None:
            body = error_body(f"Method {request.method} not allowed", "invalid_request_error", None)
            return Response(405, body, JSON, [("Allow", _ALLOW[kind])])
        try:
            if endpoint == "retrieve":
                return self._retrieve(job_id or "")
            if endpoint == "list":
                return self._list(request)
            if endpoint == "create":
                return await self._create(request)
            if endpoint == "cancel":
                return self._cancel(job_id or "")
            return await self._upload(request)
        except RequestError as exc:
            return exc.response()

    def _retrieve(self, job_id: str) -> Response:
        with self._lock:
            job = self._jobs.get(job_id)
            payload = job.poll() if job is not None else None
        if payload is None:
            return _not_found(job_id)
        return json_response(200, payload)

    def _list(self, request: Request) -> Response:
        query = parse_list_query(request.query)
        with self._lock:
            jobs = list(reversed(self._jobs.values()))  # newest first, like the real API
            if query.metadata and not self.ignore_list_filter:
                jobs = [job for job in jobs if _matches(job.metadata, query.metadata)]
            if query.after:
                ids = [job.id for job in jobs]
                jobs = jobs[ids.index(query.after) + 1 :] if query.after in ids else []
            page = [job.peek() for job in jobs[: query.limit]]
        return json_response(200, {"object": "list", "data": page, "has_more": len(jobs) > query.limit})

    async def _create(self, request: Request) -> Response:
        try:
            raw = await request.body()
        except web.HTTPRequestEntityTooLarge:
            raise RequestError(413, "The request body is too large.") from None
        fields = parse_create(raw)
        with self._lock:
            script, faults = dict(self._create_script), self._create_faults
        job = ScriptedJob(new_job_id(), clock=self._clock, **script, **fields)
        with self._lock:
            self._jobs[job.id] = job
            self._created.append(job)
            if faults:
                self._faults.setdefault(job.id, deque()).extend(faults)
            payload = job.peek()
        return json_response(200, payload)

    def _cancel(self, job_id: str) -> Response:
        if not self.can_cancel:
            body = error_body(
                f"Method POST not allowed for {JOBS_PATH}/{{id}}/cancel", "invalid_request_error", None
            )
            return Response(405, body, JSON, [("Allow", "")])
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return _not_found(job_id)
            status = job.status
            if status in ("succeeded", "failed"):
                raise RequestError(
                    400,
                    f"Fine-tuning job {job_id} has already {status} and cannot be cancelled.",
                    param="fine_tuning_job_id",
                    code="job_not_cancellable",
                )
            job.cancel()
            payload = job.peek()
        return json_response(200, payload)

    async def _upload(self, request: Request) -> Response:
        if not request.headers.get("x-tfy-provider-name", "").strip():
            raise RequestError(
                400,
                "Missing required header 'x-tfy-provider-name': name the provider account to upload to.",
                param="x-tfy-provider-name",
                code="missing_required_parameter",
            )
        upload = await read_upload(request.http, self.max_upload_bytes)
        file = UploadedFile(
            id=new_file_id(),
            filename=upload.filename,
            purpose=upload.purpose,
            bytes=upload.size,
            content_type=upload.content_type,
            field_names=upload.field_names,
            headers=_redacted(request.headers),
            created_at=int(self._clock()),
            crc32=upload.crc32,
        )
        with self._lock:
            self._files.append(file)
        return json_response(200, file.to_api())

    async def _apply_fault(
        self,
        fault: Fault,
        normal: Callable[[], Awaitable[Response]],
        endpoint: str | None,
        job_id: str | None,
        applied: Response | None = None,
    ) -> Response:
        if fault.kind == "applied":
            assert fault.then is not None
            done = await normal()
            logger.debug("applied %s, then serving %s", endpoint, fault.then.kind)
            return await self._apply_fault(fault.then, _returning(done), endpoint, job_id, done)
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
            if fault.then is None:
                return await normal()
            return await self._apply_fault(fault.then, normal, endpoint, job_id, applied)
        if fault.kind == "reset":
            return Response(0, action="abort")
        if fault.kind == "rate_limit":
            body = error_body(
                "Rate limit exceeded. Please retry later.", "rate_limit_error", "rate_limit_exceeded"
            )
            headers = (
                [] if fault.retry_after is None else [("Retry-After", format_retry_after(fault.retry_after))]
            )
            return Response(429, body, JSON, headers)
        status = fault.http_status or 500
        if fault.kind == "server_error":
            return Response(status, error_body("The server had an error.", "server_error", None), JSON)
        if fault.kind == "html_error":
            return Response(status, html_error(status), "text/html; charset=utf-8")
        if fault.kind == "malformed":
            return Response(status, fault.body or b"", fault.content_type)
        if fault.kind == "truncated":
            body = applied.body if applied is not None else self._current_body(endpoint, job_id)
            return Response(200, body, JSON, action="truncate")
        # kind == "status"
        if fault.body is None:
            body = error_body(f"Simulated HTTP {status}", "invalid_request_error", None)
            return Response(status, body, JSON, list(fault.headers))
        return Response(status, fault.body, fault.content_type, list(fault.headers))

    def _current_body(self, endpoint: str | None, job_id: str | None) -> bytes:
        """What a truncated answer sends half of, without counting a poll or changing state."""
        with self._lock:
            job = self._jobs.get(job_id or "")
            if job is not None:
                payload: dict[str, Any] = job.peek()
            elif endpoint == "upload":
                payload = {"id": new_file_id(), "object": "file", "status": "processed"}
            elif endpoint == "create":
                payload = {"object": "fine_tuning.job", "id": new_job_id(), "status": "queued"}
            else:
                payload = {"object": "list", "data": [], "has_more": False}
        return json.dumps(payload).encode()

    def _record(
        self, request: Request, job_id: str | None, authorised: bool, response: Response, endpoint: str | None
    ) -> None:
        status = None if response.action == "abort" else response.status
        record = RequestRecord(
            method=request.method,
            path=request.path,
            query=dict(parse_qsl(request.query, keep_blank_values=True)) if request.query else {},
            headers=_redacted(request.headers),
            job_id=job_id,
            status=status,
            time=time.time(),
            has_valid_auth=authorised,
            connection_id=request.connection_id,
            endpoint=endpoint,
        )
        with self._lock:
            self._records.append(record)
        logger.debug("%s %s -> %s", request.method, request.path, "reset" if status is None else status)


def _returning(response: Response) -> Callable[[], Awaitable[Response]]:
    async def again() -> Response:
        return response

    return again


def _check_faults(faults: Iterable[Fault]) -> list[Fault]:
    fault_list = list(faults)
    for fault in fault_list:
        if not isinstance(fault, Fault):
            raise TypeError(f"faults must be Fault instances, got {fault!r}")
    return fault_list


def _matches(metadata: Mapping[str, str] | None, wanted: Mapping[str, str]) -> bool:
    have = metadata or {}
    return all(have.get(key) == value for key, value in wanted.items())


def _not_found(job_id: str) -> Response:
    body = error_body(
        f"Fine-tuning job {job_id} not found.",
        "invalid_request_error",
        "fine_tuning_job_not_found",
        "fine_tuning_job_id",
    )
    return Response(404, body, JSON)


def _redacted(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: (REDACTED if k in _SENSITIVE_HEADERS else v) for k, v in headers.items()}


def _normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip().rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix


def _decode_segment(segment: str) -> str:
    # aiohttp decoded the request line as UTF-8 with surrogate escapes; round-trip to bytes so
    # raw UTF-8 and %XX both work.
    return unquote_to_bytes(segment.encode("utf-8", "surrogateescape")).decode("utf-8", errors="replace")
