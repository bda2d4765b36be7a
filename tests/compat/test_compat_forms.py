"""The Connections form: the fields each version's UI gets for the ``truefoundry`` type.

Airflow 2.11 (Flask UI) builds the form from the hook's ``get_connection_form_widgets()`` and
``get_ui_field_behaviour()``, 3.0-3.1 (React UI) converts those same methods' output, and 3.2+
reads the provider info's declarative ``conn-fields``. Whatever the source, the same fields with
the same labels must come out.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from compat_helpers import AIRFLOW_30, airflow_cli_json, only_airflow_2, only_airflow_3, run_fresh_python

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


@only_airflow_2
def test_connections_page_shows_the_fields_and_saves_what_the_hook_reads(
    airflow_db: Path, truefoundry_conn: Any
) -> None:
    """Airflow 2's real Connections page, through Flask's test client instead of a browser."""
    sim = truefoundry_conn()
    # A browser sends every input of the form; the ones left empty arrive as "".
    form = {PREFIX + name: "" for name in EXTRA_FIELDS}
    form.update(
        {
            "conn_id": "truefoundry_from_ui",
            "conn_type": CONN_TYPE,
            "host": sim.url,
            "password": sim.api_key,
            PREFIX + "provider_name": "openai-main",
            PREFIX + "metadata": '{"team": "ml-platform"}',
            PREFIX + "timeout": "30",
        }
    )
    job = sim.add_job(statuses=("running",))
    # No login page in a test: anonymous visitors get the Admin role in this throwaway home.
    (airflow_db / "webserver_config.py").write_text('AUTH_ROLE_PUBLIC = "Admin"\n')
    # A fresh interpreter: it reads the airflow.cfg (and Fernet key) that `airflow db migrate`
    # wrote, so it can decrypt the password the page stores.
    page = run_fresh_python(
        f"""
from airflow.hooks.base import BaseHook
from airflow.www.app import create_app
from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook

app = create_app(testing=True)
app.config["WTF_CSRF_ENABLED"] = False
client = app.test_client()
add = client.get("/connection/add")
saved = client.post("/connection/add", data={form!r})
extra = BaseHook.get_connection("truefoundry_from_ui").extra_dejson
job = TrueFoundryHook("truefoundry_from_ui", max_retries=0).get_fine_tuning_job({job.id!r})
result(
    {{
        "status": add.status_code,
        "html": add.get_data(as_text=True),
        "saved": saved.status_code,
        "extra": extra,
        "job_status": job.status,
    }}
)
"""
    )

    assert page["status"] == 200
    assert "TrueFoundry AI Gateway" in page["html"]
    for name in EXTRA_FIELDS:
        assert f'name="{PREFIX}{name}"' in page["html"], name
    assert page["saved"] == 302  # back to the list: the connection was stored
    assert page["extra"] == {
        "provider_name": "openai-main",
        "metadata": '{"team": "ml-platform"}',
        "timeout": "30",
    }
    assert page["job_status"] == "running"
    (request,) = [r for r in sim.requests if r.job_id == job.id]
    assert request.has_valid_auth
    assert request.headers["x-tfy-provider-name"] == "openai-main"
    assert json.loads(request.headers["x-tfy-metadata"]) == {"team": "ml-platform"}


_HOOK_META = """
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

result({m.connection_type: m.model_dump(mode="json") for m in HookMetaService.hook_meta_data()})
"""


def _fab_installed() -> bool:
    return importlib.util.find_spec("flask_appbuilder") is not None


@only_airflow_3
def test_connections_ui_metadata_lists_the_extra_fields() -> None:
    # What the React UI's connection form is built from (GET /ui/connections/hook_meta). Fresh
    # interpreter: on 3.0-3.1 this converts the hook's Python form methods with wtforms mocked
    # out, which only works if it is the first thing to initialise the providers manager.
    metas = run_fresh_python(_HOOK_META)
    meta = metas["truefoundry"]
    assert meta["hook_class_name"] == f"{TrueFoundryHook.__module__}.{TrueFoundryHook.__name__}"

    if AIRFLOW_30 and not _fab_installed():
        # Airflow 3.0.x builds Python-defined forms only with the FAB provider installed (3.1 stubs
        # it out); without it every such hook, Airflow's own SMTP hook too, gets the generic form.
        assert meta["standard_fields"] is None
        assert meta["extra_fields"] is None
        assert metas["smtp"]["standard_fields"] is None
        assert metas["smtp"]["extra_fields"] is None
        return
    extra_fields = meta["extra_fields"]
    assert list(extra_fields or {}) == list(EXTRA_FIELDS)
    for name, field in extra_fields.items():
        assert field["schema"]["title"] == EXTRA_FIELDS[name]["label"], name
        assert field["description"] == EXTRA_FIELDS[name]["description"], name
    behaviour = ui_field_behaviour()
    standard = meta["standard_fields"]
    for name, label in behaviour["relabeling"].items():
        assert standard[name]["title"] == label, name
    for name in behaviour["hidden_fields"]:
        assert standard["url_schema" if name == "schema" else name]["hidden"], name
