"""JSON Schemas for gateway answers, derived from the OpenAPI files in ``tests/spec/``.

``retrieve-fine-tuning-job.openapi.yaml`` is TrueFoundry's own spec; the others (upload, create,
list, cancel) are ours, written from TrueFoundry's docs (and OpenAI's API for cancel).
OpenAPI 3.0 marks optional-null values with ``nullable: true``, which JSON Schema validators
ignore; :func:`load_job_schema` and :func:`response_schema` rewrite them as
``type: [T, "null"]`` so ``jsonschema`` can check real response bodies.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

SPEC_DIR = Path(__file__).parent / "spec"
SPEC_PATH = SPEC_DIR / "retrieve-fine-tuning-job.openapi.yaml"
RETRIEVE_PATH = "/fine_tuning/jobs/{fine_tuning_job_id}"
#: endpoint name (as the simulator records it) -> (spec file, path, method)
OPERATIONS: dict[str, tuple[str, str, str]] = {
    "retrieve": ("retrieve-fine-tuning-job.openapi.yaml", RETRIEVE_PATH, "get"),
    "list": ("list-fine-tuning-jobs.openapi.yaml", "/fine_tuning/jobs", "get"),
    "create": ("create-fine-tuning-job.openapi.yaml", "/fine_tuning/jobs", "post"),
    "cancel": (
        "cancel-fine-tuning-job.openapi.yaml",
        "/fine_tuning/jobs/{fine_tuning_job_id}/cancel",
        "post",
    ),
    "upload": ("upload-file.openapi.yaml", "/files", "post"),
}


@functools.cache
def load_spec() -> dict[str, Any]:
    """The parsed OpenAPI document (cached; do not mutate)."""
    with SPEC_PATH.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def load_job_schema() -> dict[str, Any]:
    """A fresh JSON Schema (draft 2020-12) for the 200 body of ``GET /fine_tuning/jobs/{id}``."""
    operation = load_spec()["paths"][RETRIEVE_PATH]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    converted = _nullable_to_union(copy.deepcopy(schema))
    converted["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return converted


@functools.cache
def load_spec_file(name: str) -> dict[str, Any]:
    """One parsed OpenAPI file of ``tests/spec/`` (cached; do not mutate)."""
    with (SPEC_DIR / name).open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def operation(endpoint: str) -> dict[str, Any]:
    """The OpenAPI operation object for a simulator endpoint name (cached; do not mutate)."""
    name, path, method = OPERATIONS[endpoint]
    return load_spec_file(name)["paths"][path][method]


def raw_response_schema(endpoint: str, status: int) -> dict[str, Any] | None:
    """The OpenAPI 3.0 schema of an answer, ``$ref`` inlined, ``nullable`` kept.

    None when the spec declares the status without a body schema (TrueFoundry's retrieve errors);
    KeyError when it does not declare the status at all.
    """
    name = OPERATIONS[endpoint][0]
    response = operation(endpoint)["responses"][str(status)]
    content = response.get("content", {}).get("application/json")
    if content is None:
        return None
    return _inline_refs(copy.deepcopy(content["schema"]), load_spec_file(name))


def response_schema(endpoint: str, status: int) -> dict[str, Any] | None:
    """Like :func:`raw_response_schema`, as JSON Schema draft 2020-12 (nullable as type unions)."""
    raw = raw_response_schema(endpoint, status)
    if raw is None:
        return None
    converted = _nullable_to_union(raw)
    converted["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return converted


def _inline_refs(node: Any, document: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline_refs(item, document) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return _inline_refs(copy.deepcopy(target), document)
    return {key: _inline_refs(value, document) for key, value in node.items()}


def _nullable_to_union(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable_to_union(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable_to_union(value) for key, value in node.items()}
    # Only a boolean is the keyword; a property that happens to be named "nullable" is a dict.
    if isinstance(node.get("nullable"), bool) and node.pop("nullable"):
        if "type" in node:
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            node["type"] = [*types, "null"] if "null" not in types else types
        if "enum" in node and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
    return node
