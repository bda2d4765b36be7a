"""Unit tests of the provider metadata Airflow's provider manager and Connections UI read."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

import airflow_provider_tfy
from airflow_provider_tfy import get_provider_info

CONN_FIELDS = (
    "provider_name",
    "provider_model",
    "vertex_storage_bucket_name",
    "file_purpose",
    "metadata",
    "timeout",
)


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    return get_provider_info()


@pytest.fixture(scope="module")
def connection_type(info: dict[str, Any]) -> dict[str, Any]:
    (conn_type,) = [c for c in info["connection-types"] if c["connection-type"] == "truefoundry"]
    return conn_type


def test_validates_against_airflows_provider_info_schema(info: dict[str, Any]) -> None:
    schema_text = importlib.resources.files("airflow").joinpath("provider_info.schema.json").read_text()
    schema = json.loads(schema_text)
    jsonschema.validate(info, schema)
    # The schema must actually constrain something, or the validation above proves nothing.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**info, "connection-types": [{"connection-type": "truefoundry"}]}, schema)


def test_identity(info: dict[str, Any]) -> None:
    assert info["package-name"] == "airflow-provider-tfy"
    assert info["versions"][0] == airflow_provider_tfy.__version__
    assert airflow_provider_tfy.__version__ == importlib.metadata.version("airflow-provider-tfy")
    assert info["name"]
    assert info["description"]


def test_is_json_serialisable(info: dict[str, Any]) -> None:
    assert json.loads(json.dumps(info)) == info


def test_connection_type(connection_type: dict[str, Any]) -> None:
    assert connection_type["hook-name"] == "TrueFoundry AI Gateway"
    assert connection_type["hook-class-name"] == "airflow_provider_tfy.hooks.truefoundry.TrueFoundryHook"


def test_declared_modules_and_hook_class_exist(info: dict[str, Any], connection_type: dict[str, Any]) -> None:
    module_name, _, class_name = connection_type["hook-class-name"].rpartition(".")
    hook_module = importlib.import_module(module_name)
    assert hasattr(hook_module, class_name)
    for section in ("hooks", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                assert importlib.util.find_spec(module) is not None, module


@pytest.mark.parametrize("name", CONN_FIELDS)
def test_conn_fields(name: str, connection_type: dict[str, Any]) -> None:
    field = connection_type["conn-fields"][name]
    assert isinstance(field["label"], str)
    assert field["label"].strip()
    assert isinstance(field["description"], str)
    assert len(field["description"]) > 20
    schema = field["schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    # A cleared field must stay valid.
    jsonschema.validate(None, schema)


def test_conn_field_schemas_accept_good_and_refuse_bad_values(connection_type: dict[str, Any]) -> None:
    fields = connection_type["conn-fields"]
    jsonschema.validate({"team": "ml-platform"}, fields["metadata"]["schema"])
    jsonschema.validate(30, fields["timeout"]["schema"])
    jsonschema.validate("openai-main", fields["provider_name"]["schema"])
    for bad in (0, -1, "30"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, fields["timeout"]["schema"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(5, fields["provider_name"]["schema"])


def test_ui_field_behaviour(connection_type: dict[str, Any]) -> None:
    behaviour = connection_type["ui-field-behaviour"]
    hidden = set(behaviour["hidden-fields"])
    relabeling = behaviour["relabeling"]
    assert {"login", "schema"} <= hidden
    assert not {"host", "password"} & hidden
    assert relabeling["host"] == "Gateway base URL"
    assert relabeling["password"] == "API key"
    # The port is either hidden or explained (it stays visible for Airflow's Test button).
    assert "port" in hidden or "URL" in relabeling.get("port", "")
    assert "https://" in behaviour["placeholders"]["host"]
    assert set(CONN_FIELDS) <= behaviour["placeholders"].keys()


def test_entry_point_is_registered_and_loads() -> None:
    (entry_point,) = [
        ep
        for ep in importlib.metadata.entry_points(group="apache_airflow_provider")
        if ep.value == "airflow_provider_tfy:get_provider_info"
    ]
    assert entry_point.dist is not None
    assert entry_point.dist.name == "airflow-provider-tfy"
    loaded = entry_point.load()
    assert loaded() == get_provider_info()


def test_importing_the_package_does_not_import_airflow() -> None:
    code = (
        "import sys, airflow_provider_tfy; info = airflow_provider_tfy.get_provider_info(); "
        "print('airflow' in sys.modules, info['package-name'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "airflow-provider-tfy"]
