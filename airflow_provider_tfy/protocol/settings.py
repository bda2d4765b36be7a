"""A gateway's settings, read and checked once: base URL, key, TLS, timeout and ``x-tfy-*`` headers."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_tfy.exceptions import TrueFoundryConfigError
from airflow_provider_tfy.header_spec import HEADER_NAMES, HEADERS

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
# Connecting should be quick even when the gateway is slow to answer: cap it separately.
MAX_CONNECT_TIMEOUT = 10.0
_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_EXAMPLE_URL = "e.g. https://gateway.truefoundry.ai or https://<org>.truefoundry.cloud/api/llm"


@dataclass(frozen=True)
class Headers:
    """Validated values for the ``x-tfy-*`` headers (a typed mirror of ``HEADERS``); None sends none."""

    provider_name: str | None = None
    provider_model: str | None = None
    vertex_storage_bucket_name: str | None = None
    file_purpose: str | None = None
    metadata: dict[str, str] | None = None

    @classmethod
    def parse(cls, values: Mapping[str, Any], source: str = "argument") -> Headers:
        """Validate the header values in ``values`` (arguments or a connection's extra; other keys
        are ignored). Blank text counts as unset (a cleared UI field stores ``""``); ``metadata``
        may be a dict or its JSON text; a value with CR or LF is refused: it could smuggle a header.
        """
        parsed: dict[str, Any] = {}
        for spec in HEADERS:
            value = blank_as(values.get(spec.name), None)
            if spec.mapping:
                parsed[spec.name] = _string_map(value, spec.name, source)
            elif isinstance(value, str):
                parsed[spec.name] = _header_value(spec.name, value.strip(), source)
            elif value is not None:
                raise TrueFoundryConfigError(
                    f"{source} {spec.name!r} must be a string, got {type(value).__name__}; "
                    f"give the {spec.header} header's value as text."
                )
        return cls(**parsed)

    @classmethod
    def from_args(cls, headers: Mapping[str, Any], method: str) -> Headers:
        """Validate a hook method's ``**headers``; an unknown name is a clear ``TypeError``."""
        check_header_names(headers, method)
        return cls.parse(headers)

    def as_args(self) -> dict[str, Any]:
        """The values by argument name, as a trigger stores them."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def overridden_by(self, other: Headers | None) -> Headers:
        """These defaults with every value that ``other`` sets taking precedence."""
        if other is None:
            return self
        return Headers(**{k: v if v is not None else getattr(self, k) for k, v in other.as_args().items()})

    def to_headers(self) -> dict[str, str]:
        """The set values as HTTP headers."""
        rendered = {}
        for spec in HEADERS:
            value = getattr(self, spec.name)
            if value is not None:
                rendered[spec.header] = (
                    json.dumps(value, separators=(",", ":"), sort_keys=True) if spec.mapping else value
                )
        return rendered


def check_header_names(headers: Mapping[str, Any], method: str) -> None:
    """Refuse names that are not header arguments with a ``TypeError`` naming ``method`` and the
    arguments it takes (Python would only name an inner function)."""
    unknown = sorted(set(headers) - HEADER_NAMES.keys())
    if unknown:
        raise TypeError(
            f"{method}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"its header arguments are {', '.join(HEADER_NAMES)}."
        )


@dataclass(frozen=True)
class GatewayConfig:
    """Everything needed to talk to one gateway, read once from an Airflow connection.

    The key is kept out of ``repr`` so the config can be logged or shown in a traceback safely.
    """

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    headers: Headers = Headers()
    timeout: float = DEFAULT_TIMEOUT
    verify: bool | str = True

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` of the gateway, for messages and connection pools."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"


def gateway_config(
    conn_id: str, *, host: str | None, password: str | None, extra: Mapping[str, Any], timeout: Any = None
) -> GatewayConfig:
    """Build a :class:`GatewayConfig` from a connection's fields, or say exactly what is wrong.

    ``timeout`` (a hook parameter) takes precedence over the extra's ``timeout``.
    """
    where = f"Connection {conn_id!r}"
    api_key = (password or "").strip()
    if not api_key:
        raise TrueFoundryConfigError(
            f"{where} has no API key: put your TrueFoundry API key (personal access token or "
            "virtual-account token) in the connection's password."
        )
    if not api_key.isascii() or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in api_key):
        raise TrueFoundryConfigError(
            f"{where}: the API key contains spaces, control or non-ASCII characters; paste the key "
            "exactly as TrueFoundry shows it."
        )
    return GatewayConfig(
        conn_id=conn_id,
        base_url=_base_url(
            host, where, _flag(extra.get("allow_insecure_http"), "allow_insecure_http", where)
        ),
        api_key=api_key,
        headers=Headers.parse(extra, source=f"{where} extra"),
        timeout=positive_number(
            blank_as(extra.get("timeout"), DEFAULT_TIMEOUT) if timeout is None else timeout, "timeout", where
        ),
        verify=_verify(blank_as(extra.get("verify"), True), where),
    )


def _base_url(host: str | None, where: str, allow_insecure_http: bool) -> str:
    """The checked gateway base URL without trailing slashes; a path prefix is kept.

    Plain http would send the key in clear text, so it is accepted only for loopback hosts (the
    simulator, a local port-forward) unless the extra sets ``allow_insecure_http``. Messages never
    echo the URL: a mistyped one may carry a token in its user info or query.
    """

    def refuse(problem: str) -> TrueFoundryConfigError:
        return TrueFoundryConfigError(f"{where}: {problem}")

    url = (host or "").strip()
    if not url:
        raise TrueFoundryConfigError(f"{where} has no host: set it to the gateway base URL, {_EXAMPLE_URL}.")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise refuse(f"the gateway base URL contains spaces or control characters; {_EXAMPLE_URL}.")
    if "://" not in url:
        raise refuse(f"the gateway base URL has no scheme; write it in full, {_EXAMPLE_URL}.")
    try:
        parts = urlsplit(url)
        hostname, _ = parts.hostname, parts.port  # the port raises if it is not a number
    except ValueError:
        raise refuse(
            f"the gateway base URL is not a valid URL (bad port or address); {_EXAMPLE_URL}."
        ) from None
    if parts.username is not None or parts.password is not None:
        raise refuse(
            "the gateway base URL contains credentials (user:password@); remove them and put the "
            "API key in the connection's password."
        )
    if parts.scheme not in ("http", "https"):
        raise refuse(
            f"the gateway base URL must start with https:// (got {parts.scheme[:10]}://); {_EXAMPLE_URL}."
        )
    if not hostname:
        raise refuse(f"the gateway base URL has no host name; {_EXAMPLE_URL}.")
    if parts.query or parts.fragment:
        raise refuse(f"the gateway base URL must not have a query (?...) or fragment (#...); {_EXAMPLE_URL}.")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(hostname):
        raise refuse(
            f"plain http would send the API key unencrypted to {hostname}; use https, "
            'or set "allow_insecure_http": true in the extra if the network is trusted.'
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def positive_number(value: Any, name: str, where: str) -> float:
    """Read a positive, finite number (int, float or numeric text), else a clear error."""
    number = None
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        with contextlib.suppress(ValueError, OverflowError):
            number = float(value)
    if number is None or not math.isfinite(number) or number <= 0:
        raise TrueFoundryConfigError(
            f"{where}: {name!r} must be a positive number of seconds, got {value!r}."
        )
    return number


def has_control_chars(text: str) -> bool:
    """Whether ``text`` holds a control character (CR, LF, NUL, DEL...)."""
    return _CONTROL_CHARS.search(text) is not None


def blank_as(value: Any, default: Any) -> Any:
    """``default`` for a value a connection form stores for a cleared field (None or blank text)."""
    return default if value is None or (isinstance(value, str) and not value.strip()) else value


def _flag(value: Any, name: str, where: str) -> bool:
    if isinstance(value, bool) or value is None or value == "":
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise TrueFoundryConfigError(f"{where} extra {name!r} must be true or false, got {value!r}.")


def _verify(value: Any, where: str) -> bool | str:
    """TLS verification: on by default; a CA bundle path; or explicitly off (with a warning)."""
    if isinstance(value, str) and value.strip().lower() not in _TRUE | _FALSE:
        return value.strip()
    verify = _flag(value, "verify", where)
    if not verify:
        log.warning(
            "%s turns TLS certificate verification off: the API key could be read by anyone able to "
            "intercept the connection. Give a CA bundle path in 'verify' instead.",
            where,
        )
    return verify


def _header_value(name: str, value: str, source: str) -> str:
    if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in value):
        raise TrueFoundryConfigError(
            f"{source} {name!r} contains a control character (CR, LF or similar), which cannot go into "
            f"the {HEADER_NAMES[name]} header; remove it."
        )
    if not value.isascii():
        raise TrueFoundryConfigError(
            f"{source} {name!r} contains non-ASCII characters, which HTTP headers cannot carry; "
            "use plain ASCII (metadata values may use any characters: they are JSON-escaped)."
        )
    return value


def _string_map(value: Any, name: str, source: str) -> dict[str, str] | None:
    if value is None or value == {}:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise TrueFoundryConfigError(
                f"{source} {name!r} is not valid JSON; give an object of strings, "
                'e.g. {"team": "ml-platform"}.'
            ) from None
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return dict(value)
    if not isinstance(value, Mapping):
        got = type(value).__name__
    else:
        bad = next((f"{k!r}: {type(v).__name__}" for k, v in value.items() if not isinstance(v, str)), None)
        got = f"a value that is not a string ({bad})" if bad else "a key that is not a string"
    raise TrueFoundryConfigError(
        f"{source} {name!r} must map strings to strings (the gateway's {HEADER_NAMES[name]}), "
        f'e.g. {{"team": "ml-platform"}}; got {got}.'
    )
