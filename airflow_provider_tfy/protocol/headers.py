"""The gateway's ``x-tfy-*`` headers: declared once, validated once, rendered once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from airflow_provider_tfy.exceptions import TrueFoundryConfigError
from airflow_provider_tfy.header_spec import HEADER_NAMES, HEADERS, param_lines


class HeaderArgs(TypedDict, total=False):
    """The header arguments every hook method takes (``**headers: Unpack[HeaderArgs]``).

    Each overrides the connection's extra of the same name; unset ones send no header. A typed
    mirror of :data:`~airflow_provider_tfy.header_spec.HEADERS` (a test keeps them equal).
    """

    provider_name: str | None
    provider_model: str | None
    vertex_storage_bucket_name: str | None
    file_purpose: str | None
    metadata: dict[str, str] | str | None


HeaderArgs.__doc__ = (HeaderArgs.__doc__ or "").rstrip() + "\n" + param_lines()


@dataclass(frozen=True)
class Headers:
    """Validated values for the ``x-tfy-*`` headers (a typed mirror of :data:`HEADERS`); ``None``
    sends no header."""

    provider_name: str | None = None
    provider_model: str | None = None
    vertex_storage_bucket_name: str | None = None
    file_purpose: str | None = None
    metadata: dict[str, str] | None = None

    @classmethod
    def parse(cls, values: Mapping[str, Any], source: str = "argument") -> Headers:
        """Validate the header values in ``values`` (arguments or a connection's extra; other keys
        are ignored).

        Empty strings count as unset (a cleared UI field stores ``""``). ``metadata`` may be a dict
        or its JSON text. A value with CR or LF is refused: it could smuggle a header.
        """
        parsed: dict[str, Any] = {}
        for spec in HEADERS:
            value = values.get(spec.name)
            if spec.mapping:
                parsed[spec.name] = _metadata(value, spec.name, source)
                continue
            value = unset_as(value, None)
            if value is None:
                continue
            if not isinstance(value, str):
                raise TrueFoundryConfigError(
                    f"{source} {spec.name!r} must be a string, got {type(value).__name__}; "
                    f"give the {spec.header} header's value as text."
                )
            parsed[spec.name] = _header_value(spec.name, value.strip(), source)
        return cls(**parsed)

    @classmethod
    def from_args(cls, headers: Mapping[str, Any], method: str) -> Headers:
        """Validate a hook method's ``**headers``; an unknown name is a clear ``TypeError``."""
        check_header_names(headers, method)
        return cls.parse(headers)

    def as_args(self) -> dict[str, Any]:
        """The values by argument name, as a trigger stores them."""
        return {name: getattr(self, name) for name in HEADER_NAMES}

    def overridden_by(self, other: Headers) -> Headers:
        """Return these defaults with every value that ``other`` sets taking precedence."""
        return Headers(**{k: v if v is not None else getattr(self, k) for k, v in other.as_args().items()})

    def to_headers(self) -> dict[str, str]:
        """Render the set values as HTTP headers."""
        headers: dict[str, str] = {}
        for spec in HEADERS:
            value = getattr(self, spec.name)
            if value is None:
                continue
            if spec.mapping:
                value = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
            headers[spec.header] = value
        return headers


def check_header_names(headers: Mapping[str, Any], method: str) -> None:
    """Refuse names that are not header arguments with a ``TypeError`` naming ``method``.

    Python would only say "unexpected keyword argument" of an inner function; this names the
    method and the arguments it does take.
    """
    unknown = sorted(set(headers) - HEADER_NAMES.keys())
    if unknown:
        raise TypeError(
            f"{method}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"its header arguments are {', '.join(HEADER_NAMES)}."
        )


def unset_as(value: Any, default: Any) -> Any:
    """A connection form stores a cleared field as None or blank text: both mean the default."""
    return default if value is None or (isinstance(value, str) and not value.strip()) else value


def _header_value(name: str, value: str, source: str) -> str:
    if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in value):
        raise TrueFoundryConfigError(
            f"{source} {name!r} contains a control character (CR, LF or similar), which cannot go into "
            f"the {HEADER_NAMES.get(name, name)} header; remove it."
        )
    if not value.isascii():
        raise TrueFoundryConfigError(
            f"{source} {name!r} contains non-ASCII characters, which HTTP headers cannot carry; "
            "use plain ASCII (metadata values may use any characters: they are JSON-escaped)."
        )
    return value


def _metadata(value: Any, name: str, source: str) -> dict[str, str] | None:
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise TrueFoundryConfigError(
                f"{source} {name!r} is not valid JSON; give an object of strings, "
                'e.g. {"team": "ml-platform"}.'
            ) from None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TrueFoundryConfigError(
            f"{source} {name!r} must map strings to strings (the gateway's {HEADER_NAMES[name]}), "
            f'e.g. {{"team": "ml-platform"}}; got {_describe_type(value)}.'
        )
    return dict(value)


def _describe_type(value: Any) -> str:
    if isinstance(value, Mapping):
        bad = next((f"{k!r}: {type(v).__name__}" for k, v in value.items() if not isinstance(v, str)), None)
        if bad:
            return f"a value that is not a string ({bad})"
        return "a key that is not a string"
    return type(value).__name__
