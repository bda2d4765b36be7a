"""Bodies the simulator answers with: OpenAI-style JSON errors, JSON documents, HTML error pages."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from .server import Response

JSON = "application/json"


class RequestError(Exception):
    """A request the gateway refuses, answered as ``status`` with an OpenAI-style error body."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def response(self) -> Response:
        """The answer for this error."""
        return Response(self.status, error_body(self.message, "invalid_request_error", self.code, self.param))


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    """OpenAI's error envelope: ``{"error": {"message", "type", "code", "param"}}``."""
    return json.dumps({"error": {"message": message, "type": type_, "code": code, "param": param}}).encode()


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    """``payload`` as a JSON answer."""
    return Response(status, json.dumps(payload).encode(), JSON, headers or [])


def format_retry_after(value: int | float | str) -> str:
    """A ``Retry-After`` value: whole seconds as an integer, strings verbatim."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return str(int(value))


def html_error(status: int) -> bytes:
    """The HTML page a load balancer (here: nginx) sends for a 5xx."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return (
        f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n"
        f"<body>\r\n<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
