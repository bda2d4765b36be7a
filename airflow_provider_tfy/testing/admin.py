"""The admin surface under ``{url}/__simulator__/``: scripting a simulator from another process.

Same bearer key as the gateway routes; bodies and answers are JSON. Never recorded, never
delayed, never faulted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from .answers import JSON, error_body, json_response
from .faults import Fault
from .server import Request, Response

if TYPE_CHECKING:
    from .simulator import GatewaySimulator

_JOB_FIELDS = frozenset(
    {
        "statuses",
        "polls_per_status",
        "seconds_per_status",
        "error",
        "fine_tuned_model",
        "model",
        "trained_tokens",
        "metadata",
        "extra_fields",
        "training_file",
        "validation_file",
        "suffix",
        "seed",
        "method",
        "hyperparameters",
        "integrations",
    }
)
_SETTINGS = ("ignore_list_filter", "can_cancel")

_Handler = Callable[["GatewaySimulator", Request, dict[str, Any]], Response]


async def handle_admin(sim: GatewaySimulator, request: Request, action: str) -> Response:
    """Answer one admin request (``action`` is the path after ``__simulator__/``)."""
    if not sim._authorised(request.headers):
        return sim._unauthorised(request.headers)
    handler = _HANDLERS.get((request.method, action))
    if handler is None:
        message = f"unknown admin route {request.method} /__simulator__/{action}"
        return Response(404, error_body(message, "invalid_request_error", "not_found"), JSON)
    try:
        spec = _json_object(await request.body()) if request.method == "POST" else {}
        return handler(sim, request, spec)
    except (ValueError, TypeError, KeyError) as exc:
        message = f"bad admin request: {exc!r}"
        return Response(400, error_body(message, "invalid_request_error", None), JSON)


def _requests(sim: GatewaySimulator, request: Request, spec: dict[str, Any]) -> Response:
    """``GET requests[?job_id=...][&endpoint=...]``: a count and the matching records.

    With ``job_id``, ``count`` is :meth:`GatewaySimulator.request_count` (retrieve requests);
    otherwise it is the number of matching records.
    """
    query = dict(parse_qsl(request.query))
    records = [
        record
        for record in sim.requests
        if ("job_id" not in query or record.job_id == query["job_id"])
        and ("endpoint" not in query or record.endpoint == query["endpoint"])
    ]
    count = (
        sim.request_count(query["job_id"]) if "job_id" in query and "endpoint" not in query else len(records)
    )
    return json_response(200, {"count": count, "records": [r.to_dict() for r in records]})


def _jobs(sim: GatewaySimulator, request: Request, spec: dict[str, Any]) -> Response:
    unknown = set(spec) - _JOB_FIELDS - {"job_id", "faults"}
    if unknown:
        raise ValueError(f"unknown job fields {sorted(unknown)}")
    kwargs = {k: v for k, v in spec.items() if k in _JOB_FIELDS}
    faults = [Fault.from_dict(f) for f in spec.get("faults", [])]
    job = sim._put_job(spec.get("job_id"), replace=True, faults=faults, **kwargs)
    return json_response(201, {"id": job.id, "statuses": list(job.statuses)})


def _faults(sim: GatewaySimulator, request: Request, spec: dict[str, Any]) -> Response:
    faults = [Fault.from_dict(item) for item in spec.get("faults", [])]
    for fault in faults:
        sim.add_fault(str(spec["job_id"]), fault)
    return json_response(200, {"queued": len(faults)})


def _outage(sim: GatewaySimulator, request: Request, spec: dict[str, Any]) -> Response:
    if spec.get("end"):
        sim.end_outage()
    else:
        fault = Fault.from_dict(spec["fault"]) if spec.get("fault") else None
        sim.outage(spec.get("seconds"), fault=fault)
    return json_response(200, {"active": not spec.get("end")})


def _reset(sim: GatewaySimulator, request: Request, spec: dict[str, Any]) -> Response:
    sim.reset_counters()
    return json_response(200, {"reset": True})


def _create_script(sim: GatewaySimulator, request: Request, spec: dict[str, Any]) -> Response:
    """``POST create_script``: the body is :meth:`GatewaySimulator.set_create_script`'s kwargs."""
    script = dict(spec)
    if "faults" in script:
        script["faults"] = [Fault.from_dict(f) for f in script["faults"]]
    sim.set_create_script(**script)
    return json_response(200, {"script": spec})


def _endpoint_faults(sim: GatewaySimulator, request: Request, spec: dict[str, Any]) -> Response:
    """``POST endpoint_faults``: ``{"endpoint": "create", "fault": {...}}`` (or ``"faults": [...]``)."""
    unknown = set(spec) - {"endpoint", "fault", "faults"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    items = [spec["fault"]] if "fault" in spec else list(spec.get("faults", []))
    faults = [Fault.from_dict(item) for item in items]
    for fault in faults:
        sim.add_endpoint_fault(str(spec["endpoint"]), fault)
    return json_response(200, {"queued": len(faults)})


def _settings(sim: GatewaySimulator, request: Request, spec: dict[str, Any]) -> Response:
    """``POST settings``: ``{"ignore_list_filter": bool, "can_cancel": bool}`` (either may be left out)."""
    unknown = set(spec) - set(_SETTINGS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; expected {list(_SETTINGS)}")
    for name, value in spec.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be true or false, got {value!r}")
    for name, value in spec.items():
        setattr(sim, name, value)
    return json_response(200, {name: getattr(sim, name) for name in _SETTINGS})


def _created_jobs(sim: GatewaySimulator, request: Request, spec: dict[str, Any]) -> Response:
    """``GET created_jobs``: each created job's script, counters and current body, oldest first."""
    data = []
    with sim._lock:
        for job in sim._created:
            data.append(
                {
                    "id": job.id,
                    "statuses": list(job.statuses),
                    "suffix": job.suffix,
                    "polls": job.polls,
                    "cancelled": job.cancelled_at is not None,
                    "cancel_requests": sim._cancel_counts.get(job.id, 0),
                    "job": job.peek(),
                }
            )
    return json_response(200, {"data": data})


def _files(sim: GatewaySimulator, request: Request, spec: dict[str, Any]) -> Response:
    """``GET files``: every uploaded file's record, oldest first."""
    return json_response(200, {"data": [file.to_dict() for file in sim.files]})


def _json_object(raw: bytes) -> dict[str, Any]:
    spec = json.loads(raw or b"{}")
    if not isinstance(spec, dict):
        raise ValueError("the body must be a JSON object")
    return spec


_HANDLERS: dict[tuple[str, str], _Handler] = {
    ("GET", "requests"): _requests,
    ("HEAD", "requests"): _requests,
    ("POST", "jobs"): _jobs,
    ("POST", "faults"): _faults,
    ("POST", "outage"): _outage,
    ("POST", "reset"): _reset,
    ("POST", "create_script"): _create_script,
    ("POST", "endpoint_faults"): _endpoint_faults,
    ("POST", "settings"): _settings,
    ("GET", "created_jobs"): _created_jobs,
    ("GET", "files"): _files,
}
