"""Checking create bodies and list queries the way the gateway's docs describe them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .answers import RequestError

__all__ = ["ListQuery", "parse_create", "parse_list_query"]

MAX_SUFFIX = 64
MAX_METADATA_PAIRS = 16
_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "validation_file": (str,),
    "suffix": (str,),
    "seed": (int,),
    "method": (dict,),
    "hyperparameters": (dict,),
    "metadata": (dict,),
    "integrations": (list,),
}
_TYPE_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "an array"}
_FIELDS = frozenset({"model", "training_file", *_OPTIONAL_TYPES})


def parse_create(raw: bytes) -> dict[str, Any]:
    """The fields of a ``POST /fine_tuning/jobs`` body, or RequestError (400) naming the problem.

    ``model`` and ``training_file`` are required non-empty strings; any training file id is
    accepted (the simulator does not check it names an uploaded file, as the gateway may not
    either). ``suffix`` is at most 64 characters and ``metadata`` at most 16 pairs of strings.
    Unknown fields are refused, as OpenAI does.
    """
    try:
        body = json.loads(raw)
    except ValueError:
        raise RequestError(
            400, "We could not parse the JSON body of your request: expected a JSON object."
        ) from None
    if not isinstance(body, dict):
        raise RequestError(400, "The request body must be a JSON object.")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise RequestError(
            400,
            f"Unrecognized request argument supplied: {unknown[0]}",
            param=unknown[0],
            code="unknown_parameter",
        )
    for name in ("model", "training_file"):
        value = body.get(name)
        if value is None or value == "":
            raise RequestError(
                400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
            )
        if not isinstance(value, str):
            raise _invalid_type(name, str, value)
    fields = {name: body[name] for name in ("model", "training_file")}
    for name, types in _OPTIONAL_TYPES.items():
        value = body.get(name)
        if value is None:
            fields[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise _invalid_type(name, types[0], value)
        fields[name] = value
    suffix = fields["suffix"]
    if suffix is not None and len(suffix) > MAX_SUFFIX:
        raise RequestError(
            400,
            f"Invalid 'suffix': at most {MAX_SUFFIX} characters, got {len(suffix)}.",
            param="suffix",
            code="string_above_max_length",
        )
    metadata = fields["metadata"]
    if metadata is not None:
        if len(metadata) > MAX_METADATA_PAIRS:
            raise RequestError(
                400,
                f"Invalid 'metadata': at most {MAX_METADATA_PAIRS} key-value pairs, got {len(metadata)}.",
                param="metadata",
                code="object_above_max_properties",
            )
        for key, value in metadata.items():
            if not isinstance(value, str):
                raise RequestError(
                    400,
                    f"Invalid 'metadata.{key}': expected a string value.",
                    param=f"metadata.{key}",
                    code="invalid_type",
                )
    integrations = fields["integrations"]
    if integrations is not None and not all(isinstance(item, dict) for item in integrations):
        raise RequestError(400, "Invalid 'integrations': expected an array of objects.", param="integrations")
    return fields


def _invalid_type(name: str, expected: type, value: Any) -> RequestError:
    return RequestError(
        400,
        f"Invalid type for '{name}': expected {_TYPE_NAMES[expected]}, but got {type(value).__name__}.",
        param=name,
        code="invalid_type",
    )


@dataclass(frozen=True, slots=True)
class ListQuery:
    """``GET /fine_tuning/jobs`` parameters: page size, cursor and metadata filter."""

    limit: int
    after: str | None
    metadata: dict[str, str]


def parse_list_query(query: str) -> ListQuery:
    """Read ``limit`` (1-100, default 20), ``after`` and ``metadata[key]=value`` filters."""
    pairs = parse_qsl(query, keep_blank_values=True)
    values = dict(pairs)
    try:
        limit = int(values.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise RequestError(400, "limit must be an integer between 1 and 100", param="limit")
    metadata = {
        name[len("metadata[") : -1]: value
        for name, value in pairs
        if name.startswith("metadata[") and name.endswith("]")
    }
    return ListQuery(limit, values.get("after") or None, metadata)
