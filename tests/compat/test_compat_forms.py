"""The Connections form: the fields each version's UI gets for the ``truefoundry`` type.

Airflow 2.11 (Flask UI) builds the form from the hook's ``get_connection_form_widgets()`` and
``get_ui_field_behaviour()``, 3.0-3.1 (React UI) converts those same methods' output, and 3.2+
reads the provider info's declarative ``conn-fields``. Whatever the source, the same fields with
the same labels must come out.
"""

from __future__ import annotations

from compat_helpers import airflow_cli_json, only_airflow_2, only_airflow_3

from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
from airflow_provider_tfy.provider_info import CONN_TYPE, EXTRA_FIELDS, ui_field_behaviour

PREFIX = f"extra__{CONN_TYPE}__"


def test_ui_field_behaviour_names_every_extra_field() -> None:
    behaviour = TrueFoundryHook.get_ui_field_behaviour()

    assert behaviour == ui_field_behaviour()
    assert set(EXTRA_FIELDS) <= set(behaviour["placeholders"])
    assert {"host", "password"} <= set(behaviour["relabeling"])


@only_airflow_2
def test_connection_form_widgets_are_wtforms_fields() -> None:
    from wtforms import StringField

    widgets = TrueFoundryHook.get_connection_form_widgets()

    assert list(widgets) == list(EXTRA_FIELDS)
    for name, field in widgets.items():
        assert field.field_class is StringField, name
        assert str(field.args[0]) == EXTRA_FIELDS[name]["label"]
        assert field.kwargs["description"] == EXTRA_FIELDS[name]["description"]


@only_airflow_2
def test_airflow_providers_widgets_lists_the_extra_fields() -> None:
    widgets = {
        w["connection_parameter_name"]: w
        for w in airflow_cli_json("providers", "widgets")
        if w["connection_parameter_name"].startswith(PREFIX)
    }

    assert sorted(widgets) == sorted(PREFIX + name for name in EXTRA_FIELDS)
    assert {w["class"] for w in widgets.values()} == {TrueFoundryHook.__name__}
    assert {w["package_name"] for w in widgets.values()} == {"airflow-provider-tfy"}


@only_airflow_2
def test_providers_manager_prefixes_the_placeholders_for_the_flask_form() -> None:
    from airflow.providers_manager import ProvidersManager

    behaviour = ProvidersManager().field_behaviours[CONN_TYPE]

    assert behaviour["hidden_fields"] == ui_field_behaviour()["hidden_fields"]
    for name, spec in EXTRA_FIELDS.items():
        assert behaviour["placeholders"][PREFIX + name] == spec["placeholder"]


@only_airflow_3
def test_connections_ui_metadata_lists_the_extra_fields() -> None:
    # What the React UI's connection form is built from (GET /ui/connections/hook_meta).
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    (meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == CONN_TYPE]

    assert meta.hook_class_name == TrueFoundryHook.__module__ + "." + TrueFoundryHook.__name__
    assert meta.extra_fields is not None
    assert list(meta.extra_fields) == list(EXTRA_FIELDS)
    for name, field in meta.extra_fields.items():
        assert field["schema"]["title"] == EXTRA_FIELDS[name]["label"], name
        assert field["description"] == EXTRA_FIELDS[name]["description"], name
    behaviour = ui_field_behaviour()
    assert meta.standard_fields is not None
    assert meta.standard_fields.host.title == behaviour["relabeling"]["host"]
    assert meta.standard_fields.password.title == behaviour["relabeling"]["password"]
    for hidden in behaviour["hidden_fields"]:
        assert getattr(meta.standard_fields, "url_schema" if hidden == "schema" else hidden).hidden, hidden
