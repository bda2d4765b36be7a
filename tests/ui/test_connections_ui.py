"""The Connections UI of a real Airflow API server, driven in Debian's Chromium.

What a user does: add a TrueFoundry AI Gateway connection through the form (gateway base URL,
API key and an extra; there is no login, port or schema box), save it, press the row's Test
Connection button, break the key through the Edit form and test again. The gateway is the
in-process simulator on loopback; the API server calls it from its own process when a test runs.

The row's Test button only works thanks to this package's API-server plugin: Airflow 3.3.2 posts
``port: 0`` for a connection stored without a port and then refuses the test (apache/airflow#73298);
the plugin's middleware drops that ``port: 0`` for ``truefoundry`` test requests. The last test
proves it is the middleware, and nothing else, that makes the difference.

Screenshots of every step land in ``artifacts/ui/`` (git-ignored), with the server's log.

The tests share one server, one browser page and one connection, and run in file order; the
Test Connection test recreates the connection through the REST API when run on its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_tfy.provider_info import EXTRA_FIELDS, HOST_LABEL, PASSWORD_LABEL

if TYPE_CHECKING:
    from collections.abc import Callable

    from playwright.sync_api import Locator, Page

    from airflow_provider_tfy.testing import GatewaySimulator

    from .conftest import AirflowServer

    Screenshot = Callable[[Page, str], None]

pytestmark = [pytest.mark.ui, pytest.mark.timeout(240)]

CONN_ID = "tfy_ui_gateway"
# Distinctive, so that finding either anywhere it must not be is unambiguous.
GOOD_KEY = "tfy-ui-good-Q7mX2vK9pL4wR8sT"
WRONG_KEY = "tfy-ui-wrong-Z3nB6cH1jD5fG0yU"
PROVIDER_ACCOUNT = "openai-main"
TIMEOUT_SECONDS = 12.5
SUCCESS_TOAST = "Test Connection Successful"
FAILURE_TOAST = "Test Connection Failed"
TOASTS = '[data-scope="toast"][data-part="root"]'
HIDDEN_INPUTS = ("login", "port", "schema")
MIDDLEWARE = "airflow_provider_tfy.plugins.TestConnectionPortFix"
PORT_MISMATCH = "differs from the stored connection"
# The Airflow release this package is locked to, whose API refuses the row button's port 0.
AIRFLOW_WITH_PORT_ZERO_BUG = "3.3.2"


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewaySimulator]:
    """The gateway simulator, accepting only ``GOOD_KEY``."""
    from airflow_provider_tfy.testing import GatewaySimulator

    with GatewaySimulator(api_key=GOOD_KEY) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def screenshots(artifacts_dir: Path) -> Screenshot:
    """Save a full-page screenshot of a step under ``artifacts/ui/``."""
    for old in artifacts_dir.glob("*.png"):
        old.unlink()

    def shoot(page: Page, name: str) -> None:
        page.screenshot(path=str(artifacts_dir / f"{name}.png"), full_page=True)

    return shoot


def _open_connections(page: Page, server: AirflowServer) -> None:
    page.goto(server.url + "/connections")
    page.get_by_role("button", name="Add Connection").wait_for()


def _row(page: Page) -> Locator:
    return page.get_by_role("row").filter(has_text=CONN_ID)


def _wait_for_toast(page: Page, title: str) -> Locator:
    """The newest toast with this title, once it has faded in (for a readable screenshot)."""
    from playwright.sync_api import expect

    toast = page.locator(TOASTS).filter(has_text=title).last
    toast.wait_for()
    expect(toast).to_have_css("opacity", "1")
    return toast


def _click_test(page: Page) -> int:
    """Press the row's Test Connection button; the API's HTTP status for the test."""
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as answer:
        _row(page).get_by_role("button", name="Test Connection").click()
    return answer.value.status


def _stored(server: AirflowServer, conn_id: str = CONN_ID) -> tuple[dict[str, Any], str]:
    response = server.api("GET", f"/api/v2/connections/{conn_id}")
    assert response.status_code == 200, response.text
    return response.json(), response.text


def _row_button_body(stored: dict[str, Any]) -> dict[str, Any]:
    """What Airflow 3.3.2's row Test button posts for a connection as the REST API lists it.

    Mirrors the UI's code: ``port: Number(connection.port)`` (so a stored NULL becomes 0), the
    password as listed (masked), empty strings for the other missing fields.
    """
    return {
        "conn_type": stored["conn_type"],
        "connection_id": stored["connection_id"],
        "description": stored.get("description") or "",
        "extra": stored.get("extra") or "{}",
        "host": stored.get("host") or "",
        "login": stored.get("login") or "",
        "password": stored.get("password") or "",
        "port": stored.get("port") or 0,
        "schema": stored.get("schema") or "",
    }


def _assert_no_key(text: str, where: str) -> None:
    for key in (GOOD_KEY, WRONG_KEY):
        assert key not in text, f"an API key shows in {where}"


def _assert_hidden_boxes_absent(dialog: Locator) -> None:
    for name in HIDDEN_INPUTS:
        assert dialog.locator(f'input[name="{name}"]').count() == 0, f"the {name} box is shown"
    for default_label in ("Host", "Login", "Password", "Port", "Schema"):
        assert dialog.get_by_text(default_label, exact=True).count() == 0, f"{default_label!r} is shown"


def test_hook_meta_declares_the_form(airflow_server: AirflowServer) -> None:
    """The server's form metadata (built from provider info on 3.3) has our labels and extras."""
    response = airflow_server.api("GET", "/ui/connections/hook_meta")
    assert response.status_code == 200, response.text
    metas = [m for m in response.json() if m["connection_type"] == "truefoundry"]
    assert len(metas) == 1, "the truefoundry connection type is not offered"
    meta = metas[0]
    assert meta["hook_name"] == "TrueFoundry AI Gateway"
    assert meta["hook_class_name"] == "airflow_provider_tfy.hooks.truefoundry.TrueFoundryHook"

    standard = meta["standard_fields"]
    assert standard["host"]["title"] == HOST_LABEL == "Gateway base URL"
    assert not standard["host"]["hidden"]
    assert "https://gateway.truefoundry.ai" in standard["host"]["placeholder"]
    assert "truefoundry.cloud/api/llm" in standard["host"]["placeholder"]
    assert standard["password"]["title"] == PASSWORD_LABEL == "API key"
    assert not standard["password"]["hidden"]
    assert standard["password"]["placeholder"]
    # The port belongs in the base URL: no login, port or schema box.
    for name in ("login", "port", "url_schema"):
        assert standard[name]["hidden"], f"{name} is not hidden"

    extras = meta["extra_fields"]
    assert set(extras) == {
        "provider_name",
        "provider_model",
        "vertex_storage_bucket_name",
        "file_purpose",
        "metadata",
        "timeout",
    }
    for name, field in extras.items():
        assert field["schema"]["title"] == EXTRA_FIELDS[name]["label"], name
        assert field["description"] == EXTRA_FIELDS[name]["description"], name
        assert len(field["description"]) > 30, f"{name}: the description tells a user too little"
    assert "object" in extras["metadata"]["schema"]["type"]
    assert "number" in extras["timeout"]["schema"]["type"]
    assert extras["timeout"]["schema"]["exclusiveMinimum"] == 0


def test_plugin_with_the_test_button_fix_is_loaded(airflow_server: AirflowServer) -> None:
    """The API server loaded our ``airflow.plugins`` entry point and its root middleware."""
    response = airflow_server.api("GET", "/api/v2/plugins")
    assert response.status_code == 200, response.text
    plugins = [p for p in response.json()["plugins"] if p["name"] == "truefoundry"]
    assert len(plugins) == 1, f"the truefoundry plugin is not loaded: {response.text[:2000]}"
    middlewares = plugins[0]["fastapi_root_middlewares"]
    assert [m["middleware"] for m in middlewares] == [MIDDLEWARE]
    assert "73298" in middlewares[0]["name"]


def test_add_connection_through_the_form(
    airflow_server: AirflowServer, gateway: GatewaySimulator, page: Page, screenshots: Screenshot
) -> None:
    """1. The form shows our fields; 2. what is saved is what was typed, with the key masked."""
    airflow_server.api("DELETE", f"/api/v2/connections/{CONN_ID}")  # a rerun starts clean
    _open_connections(page, airflow_server)
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.locator('input[name="connection_id"]').fill(CONN_ID)
    dialog.get_by_role("combobox").first.click()
    page.keyboard.type("TrueFoundry")
    page.get_by_role("option", name="TrueFoundry AI Gateway", exact=True).click()

    # 1. Standard fields: relabelled host and password; no login, port or schema box.
    host = dialog.get_by_label(HOST_LABEL, exact=True)
    key = dialog.get_by_label(PASSWORD_LABEL, exact=True)
    host.wait_for()
    assert host.get_attribute("name") == "host"
    assert "https://gateway.truefoundry.ai" in (host.get_attribute("placeholder") or "")
    assert key.get_attribute("name") == "password"
    assert key.get_attribute("type") == "password"
    _assert_hidden_boxes_absent(dialog)
    screenshots(page, "01-add-form-standard-fields")

    host.fill(gateway.url)
    key.fill(GOOD_KEY)

    # Every extra field, with its description under it.
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    for name, spec in EXTRA_FIELDS.items():
        group = dialog.get_by_role("group").filter(
            has=page.locator('[data-part="label"]', has_text=re.compile(rf"^{re.escape(spec['label'])}\s*$"))
        )
        group.wait_for()
        helper = group.locator('[data-part="helper-text"]')
        assert helper.inner_text().strip() == spec["description"], name
    dialog.locator("#element_provider_name").fill(PROVIDER_ACCOUNT)
    dialog.get_by_label(EXTRA_FIELDS["timeout"]["label"]).fill(str(TIMEOUT_SECONDS))
    _assert_hidden_boxes_absent(dialog)
    screenshots(page, "02-add-form-extra-fields")

    # 2. Save; the REST API has what was typed, and shows the key masked.
    dialog.get_by_role("button", name="Save").click()
    _row(page).wait_for()
    dialog.wait_for(state="hidden")
    screenshots(page, "03-saved-connection-row")

    stored, raw = _stored(airflow_server)
    assert stored["conn_type"] == "truefoundry"
    assert stored["host"] == gateway.url
    assert stored["password"] == "***"
    assert stored["port"] is None
    assert stored["login"] is None
    assert stored["schema"] is None
    extra = json.loads(stored["extra"])
    assert extra["provider_name"] == PROVIDER_ACCOUNT
    assert float(extra["timeout"]) == TIMEOUT_SECONDS
    _assert_no_key(raw, "the REST API's GET of the connection")
    _assert_no_key(page.locator("body").inner_text(), "the connections page")


def test_test_connection_button(
    airflow_server: AirflowServer,
    gateway: GatewaySimulator,
    page: Page,
    screenshots: Screenshot,
    sent_tests: list[dict[str, Any]],
) -> None:
    """3. The row's Test button succeeds, then fails clearly (without the key) once it is wrong."""
    if airflow_server.api("GET", f"/api/v2/connections/{CONN_ID}").status_code == 404:
        created = airflow_server.api(
            "POST",
            "/api/v2/connections",
            json={
                "connection_id": CONN_ID,
                "conn_type": "truefoundry",
                "host": gateway.url,
                "password": GOOD_KEY,
                "extra": json.dumps({"provider_name": PROVIDER_ACCOUNT, "timeout": TIMEOUT_SECONDS}),
            },
        )
        assert created.status_code == 201, created.text
    stored, _ = _stored(airflow_server)
    assert stored["port"] is None
    _open_connections(page, airflow_server)
    _row(page).wait_for()

    # Success also proves the stored key is the one typed: the UI only ever sends it masked.
    accepted_before = sum(1 for r in gateway.requests if r.has_valid_auth)
    assert _click_test(page) == 200
    success = _wait_for_toast(page, SUCCESS_TOAST)
    screenshots(page, "04-test-connection-success")
    assert "API key was accepted" in success.inner_text(), success.inner_text()
    # What the button sent is Airflow 3.3.2's port-0 request: the middleware made it pass.
    assert sent_tests[-1] == _row_button_body(stored)
    assert sent_tests[-1]["port"] == 0
    assert sent_tests[-1]["password"] == "***"
    assert sum(1 for r in gateway.requests if r.has_valid_auth) > accepted_before, (
        "the gateway never saw the right key"
    )

    # Change the key to a wrong one through the Edit form.
    _row(page).get_by_role("button", name="Edit Connection").click()
    dialog = page.get_by_role("dialog")
    key = dialog.get_by_label(PASSWORD_LABEL, exact=True)
    key.wait_for()
    _assert_hidden_boxes_absent(dialog)
    key.fill(WRONG_KEY)
    screenshots(page, "05-edit-form-wrong-key")
    dialog.get_by_role("button", name="Save").click()
    dialog.wait_for(state="hidden")
    stored, raw = _stored(airflow_server)
    assert stored["password"] == "***"
    assert (stored["host"], stored["port"]) == (gateway.url, None)
    assert json.loads(stored["extra"])["provider_name"] == PROVIDER_ACCOUNT
    _assert_no_key(raw, "the REST API's GET of the connection")

    rejected_before = sum(1 for r in gateway.requests if not r.has_valid_auth)
    assert _click_test(page) == 200  # the test ran; its answer says it failed
    failure = _wait_for_toast(page, FAILURE_TOAST)
    screenshots(page, "06-test-connection-wrong-key")
    message = failure.inner_text()
    assert re.search(r"(?i)rejected the API key", message), message
    assert "401" in message, message
    assert PORT_MISMATCH not in message, message
    _assert_no_key(message, "the failure toast")
    _assert_no_key(page.locator("body").inner_text(), "the page after a failed test")
    assert sent_tests[-1] == _row_button_body(stored)
    assert sum(1 for r in gateway.requests if not r.has_valid_auth) > rejected_before, (
        "the gateway never saw the wrong key: the test did not use the edited connection"
    )
    _assert_no_key(airflow_server.log_tail(chars=10**7), "the API server's log")


def test_middleware_is_what_fixes_the_row_button(
    airflow_server: AirflowServer, gateway: GatewaySimulator
) -> None:
    """The row button's port-0 request passes for ``truefoundry`` and still fails for other types.

    Airflow 3.3.2 answers 400 to ``port: 0`` with the masked password for a connection stored
    without a port (apache/airflow#73298). Our middleware drops that port for ``truefoundry``
    requests only, so the same request for a stored ``http`` connection still gets Airflow's 400.
    """
    tfy_id, http_id = "tfy_ui_port_fix", "http_ui_port_fix"
    for conn_id in (tfy_id, http_id):
        airflow_server.api("DELETE", f"/api/v2/connections/{conn_id}")
    try:
        for conn_id, conn_type in ((tfy_id, "truefoundry"), (http_id, "http")):
            created = airflow_server.api(
                "POST",
                "/api/v2/connections",
                json={
                    "connection_id": conn_id,
                    "conn_type": conn_type,
                    "host": gateway.url,
                    "password": GOOD_KEY,
                },
            )
            assert created.status_code == 201, created.text

        tfy_stored, _ = _stored(airflow_server, tfy_id)
        tfy_body = _row_button_body(tfy_stored)
        assert (tfy_body["port"], tfy_body["password"]) == (0, "***")
        tfy = airflow_server.api("POST", "/api/v2/connections/test", json=tfy_body)
        assert tfy.status_code == 200, tfy.text
        assert tfy.json()["status"] is True, tfy.text
        assert "API key was accepted" in tfy.json()["message"]

        http_stored, _ = _stored(airflow_server, http_id)
        http_body = _row_button_body(http_stored)
        assert http_body == {**tfy_body, "conn_type": "http", "connection_id": http_id}
        http = airflow_server.api("POST", "/api/v2/connections/test", json=http_body)
        if http.status_code != 400 and version("apache-airflow") != AIRFLOW_WITH_PORT_ZERO_BUG:
            pytest.skip(
                f"Airflow {version('apache-airflow')} accepts the row's port 0 itself "
                f"(answered {http.status_code}): it has apache/airflow#73298, the middleware is redundant"
            )
        assert http.status_code == 400, http.text
        assert PORT_MISMATCH in http.json()["detail"]
    finally:
        for conn_id in (tfy_id, http_id):
            airflow_server.api("DELETE", f"/api/v2/connections/{conn_id}")
