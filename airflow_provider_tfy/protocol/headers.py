"""The gateway's ``x-tfy-*`` headers: declared once, validated once, rendered once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from airflow_provider_tfy.exceptions import TrueFoundryConfigError

HEADER_NAMES = {
    "provider_name": "x-tfy-provider-name",
    "provider_model": "x-tfy-provider-model",
    "vertex_storage_bucket_name": "x-tfy-vertex-storage-bucket-name",
    "file_purpose": "x-tfy-file-purpose",
    "metadata": "x-tfy-metadata",
}


class HeaderArgs(TypedDict, total=False):
    """The header arguments every hook method takes (``**headers: Unpack[HeaderArgs]``).

    Each overrides the connection's extra of the same name; unset ones send no header.

    :param provider_name: ``x-tfy-provider-name``, the provider-account integration (e.g. ``openai-main``).
    :param provider_model: ``x-tfy-provider-model``, the provider's base model id (Vertex AI).
    :param vertex_storage_bucket_name: ``x-tfy-vertex-storage-bucket-name`` (Vertex AI).
    :param file_purpose: ``x-tfy-file-purpose``.
    :param metadata: ``x-tfy-metadata``, an object of strings (or its JSON text).
    """

    provider_name: str | None
    provider_model: str | None
    vertex_storage_bucket_name: str | None
    file_purpose: str | None
    metadata: dict[str, str] | str | None


@dataclass(frozen=True)
class HeaderOptions:
    """Values for the gateway's ``x-tfy-*`` headers; ``None`` sends no header."""

    provider_name: str | None = None
    provider_model: str | None = None
    vertex_storage_bucket_name: str | None = None
    file_purpose: str | None = None
    metadata: dict[str, str] | None = None

    def overridden_by(self, other: HeaderOptions) -> HeaderOptions:
        """Return these defaults with every value that ``other`` sets taking precedence."""
        return HeaderOptions(
            **{
                name: getattr(other, name) if getattr(other, name) is not None else getattr(self, name)
                for name in HEADER_NAMES
            }
        )

    def to_headers(self) -> dict[str, str]:
        """Render the set values as HTTP headers."""
        headers: dict[str, str] = {}
        for name, header in HEADER_NAMES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if name == "metadata":
                value = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
            headers[header] = value
        return headers


def header_args(headers: Mapping[str, Any], method: str) -> HeaderOptions:
    """Validate a hook method's ``**headers``; an unknown name is a clear ``TypeError``.

    Python would only say "unexpected keyword argument" of an inner function; this names the
    method and the arguments it does take.
    """
    unknown = sorted(set(headers) - HEADER_NAMES.keys())
    if unknown:
        raise TypeError(
            f"{method}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"its header arguments are {', '.join(HEADER_NAMES)}."
        )
    return header_options(**headers)


def header_options(
    *,
    provider_name: Any = None,
    provider_model: Any = None,
    vertex_storage_bucket_name: Any = None,
    file_purpose: Any = None,
    metadata: Any = None,
    source: str = "argument",
) -> HeaderOptions:
    """Validate header values from arguments or a connection's extra.

    Empty strings count as unset (a cleared UI field stores ``""``). ``metadata`` may be a dict or
    its JSON text. A value with CR or LF is refused: it could smuggle a header.
    """
    values: dict[str, Any] = {}
    for name, value in (
        ("provider_name", provider_name),
        ("provider_model", provider_model),
        ("vertex_storage_bucket_name", vertex_storage_bucket_name),
        ("file_purpose", file_purpose),
    ):
        value = unset_as(value, None)
        if value is None:
            continue
        if not isinstance(value, str):
            raise TrueFoundryConfigError(
                f"{source} {name!r} must be a string, got {type(value).__name__}; "
                f"give the {HEADER_NAMES[name]} header's value as text."
            )
        values[name] = _header_value(name, value.strip(), source)
    values["metadata"] = _metadata(metadata, source)
    return HeaderOptions(**values)


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


def _metadata(value: Any, source: str) -> dict[str, str] | None:
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise TrueFoundryConfigError(
                f"{source} 'metadata' is not valid JSON; give an object of strings, "
                'e.g. {"team": "ml-platform"}.'
            ) from None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TrueFoundryConfigError(
            f"{source} 'metadata' must map strings to strings (the gateway's x-tfy-metadata), "
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
