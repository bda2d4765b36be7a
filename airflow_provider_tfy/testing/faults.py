"""Scriptable failure modes the gateway simulator can inject into responses."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Fault"]

_KINDS = frozenset(
    {
        "rate_limit",
        "server_error",
        "html_error",
        "reset",
        "delay",
        "malformed",
        "truncated",
        "status",
        "applied",
    }
)


@dataclass(frozen=True)
class Fault:
    """One misbehaviour served instead of (or before) a normal response.

    Build instances with the class-method constructors; each fault is consumed by exactly one
    request. ``kind`` names the behaviour, the other fields parametrise it. On an endpoint that
    changes state (upload, create, cancel) every fault except :meth:`applied` (and a
    :meth:`delay` without ``then``) means the gateway did *not* act on the request.
    """

    kind: str
    http_status: int | None = None
    retry_after: int | float | str | None = None
    seconds: float = 0.0
    then: Fault | None = None
    body: bytes | None = None
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(_KINDS)}")

    @classmethod
    def rate_limit(cls, retry_after: int | float | str | None = None) -> Fault:
        """HTTP 429; ``retry_after`` seconds (or a verbatim string such as an HTTP date) if given."""
        if isinstance(retry_after, bool):
            raise TypeError("retry_after must be a number, a string or None")
        return cls(kind="rate_limit", http_status=429, retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """A 5xx answer with a small JSON error body."""
        _check_status(status, 500, 599)
        return cls(kind="server_error", http_status=status)

    @classmethod
    def html_error(cls, status: int = 502) -> Fault:
        """A 5xx answer with a ``text/html`` body, as a load balancer in front of the gateway sends."""
        _check_status(status, 500, 599)
        return cls(kind="html_error", http_status=status)

    @classmethod
    def reset(cls) -> Fault:
        """Abort the TCP connection (RST where possible) without sending any response."""
        return cls(kind="reset")

    @classmethod
    def delay(cls, seconds: float, then: Fault | None = None) -> Fault:
        """Wait ``seconds`` before answering normally, or before applying ``then``."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        if then is not None and then.kind == "delay":
            # Nested delays are allowed but pointless; flatten so the record stays readable.
            return cls(kind="delay", seconds=float(seconds) + then.seconds, then=then.then)
        return cls(kind="delay", seconds=float(seconds), then=then)

    @classmethod
    def applied(cls, then: Fault) -> Fault:
        """The request IS carried out (job created, file stored, job cancelled), then ``then`` is
        served instead of the answer: the lost answer that leaves a client unsure (e.g.
        ``Fault.applied(then=Fault.server_error(500))`` or ``then=Fault.reset()``)."""
        if not isinstance(then, Fault):
            raise TypeError(f"then must be a Fault, got {then!r}")
        if then.kind == "applied":
            raise ValueError("then must not be another applied fault")
        return cls(kind="applied", then=then)

    @classmethod
    def malformed(
        cls,
        body: bytes | str = b'{"id": "x", ',
        status: int = 200,
        content_type: str = "application/json",
    ) -> Fault:
        """Send ``body`` verbatim (by default invalid JSON) with the given status and content type."""
        _check_status(status, 200, 599)
        raw = body.encode() if isinstance(body, str) else bytes(body)
        return cls(kind="malformed", http_status=status, body=raw, content_type=content_type)

    @classmethod
    def truncated(cls) -> Fault:
        """Send a 200 whose Content-Length promises more bytes than are sent, then close."""
        return cls(kind="truncated", http_status=200)

    @classmethod
    def status(
        cls,
        code: int,
        body: bytes | str | Mapping[str, Any] | list[Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """An arbitrary status (e.g. 400, 403, 404, or 301 with a ``Location`` header).

        ``body`` may be bytes/str (sent verbatim), a JSON-serialisable dict/list, or None for a
        small default JSON error body.
        """
        _check_status(code, 200, 599)
        content_type: str | None = None
        raw: bytes | None
        if body is None:
            raw = None
        elif isinstance(body, bytes | str):
            raw = body.encode() if isinstance(body, str) else bytes(body)
            content_type = "text/plain; charset=utf-8" if isinstance(body, str) else None
        else:
            raw = json.dumps(body).encode()
            content_type = "application/json"
        pairs = tuple((str(k), str(v)) for k, v in (headers or {}).items())
        if any(name.lower() == "content-type" for name, _ in pairs):
            content_type = None  # the caller's header wins; never send two
        return cls(kind="status", http_status=code, body=raw, content_type=content_type, headers=pairs)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Fault:
        """Build a fault from its JSON form, e.g. ``{"kind": "rate_limit", "retry_after": 1}``.

        ``then`` (for ``delay`` and ``applied``) is itself such a dict; ``http_status`` may stand
        for the builders' ``status`` (or ``code``). Used by the simulator's
        admin surface and the CLI.
        """
        args = dict(spec)
        kind = args.pop("kind", None)
        if "http_status" in args:
            # The dataclass field's name, accepted for the builders' ``status`` / ``code``.
            args["code" if kind == "status" else "status"] = args.pop("http_status")
        if kind in ("delay", "applied") and isinstance(args.get("then"), Mapping):
            args["then"] = cls.from_dict(args["then"])
        builders: dict[str, Callable[..., Fault]] = {
            "rate_limit": cls.rate_limit,
            "server_error": cls.server_error,
            "html_error": cls.html_error,
            "reset": cls.reset,
            "delay": cls.delay,
            "malformed": cls.malformed,
            "truncated": cls.truncated,
            "status": cls.status,
            "applied": cls.applied,
        }
        if kind not in builders:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(builders)}")
        try:
            return builders[kind](**args)
        except TypeError as exc:
            raise ValueError(f"bad arguments for fault {kind!r}: {exc}") from None


def _check_status(status: int, low: int, high: int) -> None:
    if isinstance(status, bool) or not isinstance(status, int) or not low <= status <= high:
        raise ValueError(f"status must be an integer in [{low}, {high}], got {status!r}")
