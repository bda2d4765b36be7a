"""The docs' pictures of the Connections UI: the form filled in, and the Test button's success.

Taken in Debian's Chromium against a real API server (``airflow_server``) and the gateway
simulator; saved under ``artifacts/docs-images/`` in a normal run and under ``docs/images/`` by
``bash scripts/screenshots.sh`` (see ``tests/docs_pictures.py``). Each picture is cropped to the
part of the page it shows, and the key is checked to be nowhere on the page when it is taken.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from docs_pictures import around, chromium_page, take_picture

from airflow_provider_tfy.provider_info import HOST_LABEL, PASSWORD_LABEL

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from airflow_provider_tfy.testing import GatewaySimulator

    from .conftest import AirflowServer

pytestmark = [pytest.mark.ui, pytest.mark.timeout(240)]

CONN_ID = "truefoundry_default"
KEY = "tfy-docs-picture-Hq8Wm3Zr6Tn1Vb4K"
PROVIDER_ACCOUNT = "openai-main"
TOASTS = '[data-scope="toast"][data-part="root"]'


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewaySimulator]:
    from airflow_provider_tfy.testing import GatewaySimulator

    with GatewaySimulator(api_key=KEY) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    with chromium_page(tmp_path_factory.mktemp("chromium_profile"), width=1280, height=900) as tab:
        yield tab


def test_pictures_of_the_connection_form_and_its_test_button(
    airflow_server: AirflowServer, gateway: GatewaySimulator, page: Page
) -> None:
    from playwright.sync_api import expect

    airflow_server.api("DELETE", f"/api/v2/connections/{CONN_ID}")
    page.goto(airflow_server.url + "/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.locator('input[name="connection_id"]').fill(CONN_ID)
    dialog.get_by_role("combobox").first.click()
    page.keyboard.type("TrueFoundry")
    page.get_by_role("option", name="TrueFoundry AI Gateway", exact=True).click()
    dialog.locator('input[name="description"], textarea[name="description"]').first.fill(
        "The TrueFoundry AI Gateway that runs our fine-tuning jobs"
    )
    dialog.get_by_label(HOST_LABEL, exact=True).fill(gateway.url)
    dialog.get_by_label(PASSWORD_LABEL, exact=True).fill(KEY)
    # No focus ring or hover highlight in the picture.
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.mouse.move(0, 0)
    form = dialog.locator('[role="dialog"], [data-part="content"]').first
    picture = take_picture(page, "connection-form", KEY, element=form if form.count() else dialog)
    assert picture.exists()

    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    dialog.locator("#element_provider_name").fill(PROVIDER_ACCOUNT)
    dialog.get_by_role("button", name="Save").click()
    row = page.get_by_role("row").filter(has_text=CONN_ID)
    row.wait_for()
    dialog.wait_for(state="hidden")

    # A short window, so the picture holds the list, the row and the toast (fixed at the bottom).
    page.set_viewport_size({"width": 1280, "height": 400})
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as answer:
        row.get_by_role("button", name="Test Connection").click()
    assert answer.value.status == 200, answer.value.text()
    toast = page.locator(TOASTS).filter(has_text="Test Connection Successful").last
    toast.wait_for()
    expect(toast).to_have_css("opacity", "1")
    assert "the API key was accepted" in toast.inner_text()
    page.mouse.move(0, 0)
    assert around(row.bounding_box(), toast.bounding_box())["height"] <= 400, "the row is off the window"
    take_picture(page, "connection-test", KEY)


def test_the_pictures_are_where_the_docs_expect_them() -> None:
    """The names the tests save are the ones README.md embeds, and each is committed."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    for name in ("connection-form", "connection-test", "grid-pipeline", "deferred-wait-log"):
        assert f"docs/images/{name}.png" in readme, name
        assert (root / "docs" / "images" / f"{name}.png").is_file(), f"docs/images/{name}.png is missing"
