"""The provider's metadata: what Airflow's provider manager and Connections UI (only this on 3.2+) read."""

from __future__ import annotations

from typing import Any

from airflow_provider_tfy import __version__
from airflow_provider_tfy.header_spec import HEADERS

CONN_TYPE = "truefoundry"
HOOK_NAME = "TrueFoundry AI Gateway"
HOOK_CLASS = "airflow_provider_tfy.hooks.truefoundry.TrueFoundryHook"

HOST_LABEL = "Gateway base URL"
PASSWORD_LABEL = "API key"

# One source for the extra fields: the declarative form (Airflow 3.2+) and the wtforms widgets
# (Airflow 2.11-3.1) are both derived from it, so the two UIs can never disagree.
EXTRA_FIELDS: dict[str, dict[str, Any]] = {
    **{
        spec.name: {
            "label": spec.label,
            "description": spec.description,
            "type": "object" if spec.mapping else "string",
            "placeholder": spec.placeholder,
        }
        for spec in HEADERS
    },
    "timeout": {
        "label": "Request timeout (seconds)",
        "description": "Seconds to wait for each HTTP request before it counts as failed. Default 30.",
        "type": "number",
        "minimum": 0.1,
        "placeholder": "30",
    },
}


def ui_field_behaviour() -> dict[str, Any]:
    """Hide login, port (part of the base URL) and schema; relabel host and password (snake_case keys)."""
    return {
        "hidden_fields": ["login", "port", "schema"],
        "relabeling": {"host": HOST_LABEL, "password": PASSWORD_LABEL},
        "placeholders": {
            "host": "https://gateway.truefoundry.ai or https://<org>.truefoundry.cloud/api/llm",
            "password": "TrueFoundry personal access token or virtual-account token",
            **{name: spec["placeholder"] for name, spec in EXTRA_FIELDS.items()},
        },
    }


def _schema(spec: dict[str, Any]) -> dict[str, Any]:
    return {"type": ["null", spec["type"]], **({"exclusiveMinimum": 0} if "minimum" in spec else {})}


def _modules(*names: str) -> list[dict[str, Any]]:
    return [{"integration-name": HOOK_NAME, "python-modules": [f"airflow_provider_tfy.{n}" for n in names]}]


def provider_info() -> dict[str, Any]:
    """Build the dict that ``get_provider_info()`` returns."""
    behaviour = {k.replace("_", "-"): v for k, v in ui_field_behaviour().items()}  # kebab-case here
    conn_fields = {
        name: {"label": spec["label"], "description": spec["description"], "schema": _schema(spec)}
        for name, spec in EXTRA_FIELDS.items()
    }
    return {
        "package-name": "airflow-provider-tfy",
        "name": "TrueFoundry",
        "description": "Wait on TrueFoundry AI Gateway fine-tuning jobs from Airflow.",
        # Every release, newest first, as Airflow's own providers list them (see CHANGELOG.md).
        "versions": [__version__, "0.1.0"],
        "integrations": [
            {
                "integration-name": HOOK_NAME,
                "external-doc-url": "https://docs.truefoundry.com/gateway",
                "tags": ["software"],
            }
        ],
        "hooks": _modules("hooks.truefoundry"),
        "operators": _modules("operators.files", "operators.fine_tuning"),
        "sensors": _modules("sensors.fine_tuning"),
        "triggers": _modules("triggers.fine_tuning"),
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": HOOK_CLASS,
                "hook-name": HOOK_NAME,
                "ui-field-behaviour": behaviour,
                "conn-fields": conn_fields,
            }
        ],
    }
