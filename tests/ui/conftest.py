"""Fixtures for the Connections UI tests: a real Airflow API server and Debian's Chromium.

The API server runs as its own process group with a fresh ``AIRFLOW_HOME`` and SQLite database,
the simple auth manager (everyone is admin) and Test Connection enabled. It imports this provider
from the same virtualenv as the tests, so what it shows is what a user who installed the package
would see. Chromium is the system package (``/usr/bin/chromium``); no browser is ever downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Request

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
# Headless as root in a sandbox-less container; the background-networking flags stop Chromium
# calling outside hosts, which this network refuses (and which would only slow the test).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 90
CALL_FAILED = pytest.StashKey[bool]()


@dataclass(frozen=True)
class AirflowServer:
    """A running API server: its base URL, an HTTP session for the REST API, and its log file."""

    url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    http: requests.Session

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call the server's REST API (no login: every user is admin)."""
        return self.http.request(method, self.url + path, timeout=30, **kwargs)

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as err:
            return f"(no server log: {err})"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether a test's body failed, so a fixture can keep a screenshot of the page."""
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _airflow_env(home: Path) -> dict[str, str]:
    """The server's environment: ours minus every inherited Airflow setting, plus the test's."""
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
        # Stored passwords are encrypted, as on a real deployment.
        AIRFLOW__CORE__FERNET_KEY=Fernet.generate_key().decode(),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(64),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group (gunicorn/uvicorn workers included)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _wait_until_ready(server: AirflowServer) -> None:
    """Poll until the REST API answers; fail at once, with the log, if the server exits."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        if server.process.poll() is not None:
            code = server.process.returncode
            pytest.fail(f"the API server exited ({code}) while starting; its log:\n{server.log_tail()}")
        try:
            if server.api("GET", "/api/v2/version").status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the API server did not answer in {SERVER_START_TIMEOUT} s:\n{server.log_tail()}")
        time.sleep(0.25)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where screenshots and the server log go (``artifacts/`` is git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def airflow_server(tmp_path_factory: pytest.TempPathFactory, artifacts_dir: Path) -> Iterator[AirflowServer]:
    """A real ``airflow api-server`` on loopback, with this provider installed.

    One for the session: starting one costs half a minute, and each module keeps to
    connection ids of its own.
    """
    home = tmp_path_factory.mktemp("airflow_home")
    env = _airflow_env(home)
    airflow = Path(sys.executable).with_name("airflow")
    if not airflow.exists():
        pytest.fail(f"the airflow CLI is not installed next to {sys.executable}")

    migrate = subprocess.run(
        [str(airflow), "db", "migrate"],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if migrate.returncode != 0:
        pytest.fail(f"`airflow db migrate` failed ({migrate.returncode}):\n{migrate.stdout}{migrate.stderr}")

    port = _free_port()
    log_path = home / "api-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(airflow), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group, so teardown stops the workers too
        )
    http = requests.Session()
    http.trust_env = False  # loopback only: never through a proxy
    server = AirflowServer(url=f"http://127.0.0.1:{port}", log_path=log_path, process=process, http=http)
    try:
        _wait_until_ready(server)
        yield server
    finally:
        _stop(process)
        http.close()
        with contextlib.suppress(OSError):
            shutil.copyfile(log_path, artifacts_dir / "api-server.log")


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    """Debian's Chromium; missing, it fails the tests (in CI and locally alike).

    A green run must mean the UI was really driven in a browser, never that it was quietly skipped.
    """
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is not installed, and the UI tests need it: install Debian's `chromium` "
            "package (`sudo apt-get install chromium`; .ci/run does), or deselect them with "
            "`--ignore=tests/ui`."
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def browser_context(
    chromium_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrowserContext]:
    """A persistent Chromium context in a throw-away profile folder."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium_profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(chromium_path),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1200},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def sent_tests() -> list[dict[str, Any]]:
    """The bodies of the Test Connection requests the browser sent, oldest first."""
    return []


@pytest.fixture(scope="module")
def module_page(browser_context: BrowserContext, sent_tests: list[dict[str, Any]]) -> Iterator[Page]:
    """One tab shared by the module's tests, recording what its Test Connection buttons send."""
    tab = browser_context.new_page()

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/api/v2/connections/test"):
            sent_tests.append(json.loads(request.post_data or "{}"))

    tab.on("request", record)
    yield tab
    tab.close()


@pytest.fixture
def page(module_page: Page, request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[Page]:
    """The shared tab for one test; when the test fails, a screenshot of it is kept."""
    yield module_page
    if request.node.stash.get(CALL_FAILED, False):
        module_page.screenshot(path=str(artifacts_dir / f"FAILED-{request.node.name}.png"), full_page=True)
