"""JSON Schema for the retrieve-fine-tuning-job 200 response, derived from the OpenAPI spec.

OpenAPI 3.0 marks optional-null values with ``nullable: true``, which JSON Schema validators
ignore; :func:`load_job_schema` rewrites them as ``type: [T, "null"]`` so ``jsonschema`` can check
real response bodies.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

SPEC_PATH = Path(__file__).parent / "spec" / "retrieve-fine-tuning-job.openapi.yaml"
RETRIEVE_PATH = "/fine_tuning/jobs/{fine_tuning_job_id}"


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
