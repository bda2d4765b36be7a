"""Reading a gateway's settings from an Airflow connection: base URL, key, TLS, timeout."""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_tfy.exceptions import TrueFoundryConfigError
from airflow_provider_tfy.protocol.headers import Headers, unset_as

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
# Connecting should be quick even when the gateway is slow to answer: cap it separately.
MAX_CONNECT_TIMEOUT = 10.0
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class GatewayConfig:
    """Everything needed to talk to one gateway, read once from an Airflow connection.

    The key is kept out of ``repr`` so the config can be logged or shown in a traceback safely.
    """

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    headers: Headers = Headers()  # noqa: RUF009 - frozen, so one shared default is safe
    timeout: float = DEFAULT_TIMEOUT
    verify: bool | str = True

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` of the gateway, for messages and connection pools."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"


def gateway_config(
    conn_id: str,
    *,
    host: str | None,
    password: str | None,
    extra: Mapping[str, Any],
    timeout: float | None = None,
) -> GatewayConfig:
    """Build a :class:`GatewayConfig` from a connection's fields, or say exactly what is wrong.

    ``timeout`` (a hook parameter) takes precedence over the extra's ``timeout``.
    """
    where = f"Connection {conn_id!r}"
    if not password or not password.strip():
        raise TrueFoundryConfigError(
            f"{where} has no API key: put your TrueFoundry API key (personal access token or "
            "virtual-account token) in the connection's password."
        )
    api_key = password.strip()
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in api_key) or not api_key.isascii():
        raise TrueFoundryConfigError(
            f"{where}: the API key contains spaces, control or non-ASCII characters; paste the key "
            "exactly as TrueFoundry shows it."
        )
    allow_http = _flag(extra.get("allow_insecure_http"), "allow_insecure_http", where)
    return GatewayConfig(
        conn_id=conn_id,
        base_url=normalize_base_url(host, where=where, allow_insecure_http=allow_http),
        api_key=api_key,
        headers=Headers.parse(extra, source=f"{where} extra"),
        timeout=positive_number(
            timeout if timeout is not None else unset_as(extra.get("timeout"), DEFAULT_TIMEOUT),
            "timeout",
            where,
        ),
        verify=_verify(extra.get("verify", True), where),
    )


def normalize_base_url(host: str | None, *, where: str, allow_insecure_http: bool = False) -> str:
    """Check the gateway base URL and drop trailing slashes; a path prefix is kept.

    Plain http would send the key in clear text, so it is accepted only for loopback hosts (the
    simulator, a local port-forward) unless the connection's extra sets ``allow_insecure_http``.
    """
    example = "e.g. https://gateway.truefoundry.ai or https://<org>.truefoundry.cloud/api/llm"
    # Messages below never echo the URL: a mistyped one may carry a token in its user info or query.
    if not host or not host.strip():
        raise TrueFoundryConfigError(f"{where} has no host: set it to the gateway base URL, {example}.")
    url = host.strip()
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise TrueFoundryConfigError(
            f"{where}: the gateway base URL contains spaces or control characters; {example}."
        )
    if "://" not in url:
        raise TrueFoundryConfigError(
            f"{where}: the gateway base URL has no scheme; write it in full, {example}."
        )
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise TrueFoundryConfigError(
            f"{where}: the gateway base URL is not a valid URL (bad port or address); {example}."
        ) from None
    if parts.username is not None or parts.password is not None:
        raise TrueFoundryConfigError(
            f"{where}: the gateway base URL contains credentials (user:password@); remove them "
            "and put the API key in the connection's password."
        )
    if parts.scheme not in ("http", "https"):
        raise TrueFoundryConfigError(
            f"{where}: the gateway base URL must start with https:// (got {parts.scheme[:10]}://); {example}."
        )
    if not hostname:
        raise TrueFoundryConfigError(f"{where}: the gateway base URL has no host name; {example}.")
    if parts.query or parts.fragment:
        raise TrueFoundryConfigError(
            f"{where}: the gateway base URL must not have a query (?...) or fragment (#...); {example}."
        )
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(hostname):
        raise TrueFoundryConfigError(
            f"{where}: plain http would send the API key unencrypted to {hostname}; use https, "
            'or set "allow_insecure_http": true in the extra if the network is trusted.'
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def positive_number(value: Any, name: str, where: str) -> float:
    """Read a positive, finite number (int, float or numeric text)."""
    number: float | None = None
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            number = None
    if number is None or not math.isfinite(number) or number <= 0:
        raise TrueFoundryConfigError(
            f"{where}: {name!r} must be a positive number of seconds, got {value!r}."
        )
    return number


def _flag(value: Any, name: str, where: str) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise TrueFoundryConfigError(f"{where} extra {name!r} must be true or false, got {value!r}.")


def _verify(value: Any, where: str) -> bool | str:
    """TLS verification: on by default; a CA bundle path; or explicitly off (with a warning)."""
    value = unset_as(value, True)
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
