"""The pytest plugin: its fixtures work, and importing it stays cheap."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from airflow_provider_tfy.testing import GatewaySimulator


def test_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    entry_points = importlib.metadata.entry_points(group="pytest11")
    assert "airflow_provider_tfy.testing.pytest_plugin" in {ep.value for ep in entry_points}


def test_function_fixture_yields_a_started_simulator(truefoundry_gateway: GatewaySimulator) -> None:
    assert isinstance(truefoundry_gateway, GatewaySimulator)
    job = truefoundry_gateway.add_job(statuses=("succeeded",))
    response = requests.get(
        f"{truefoundry_gateway.url}/fine_tuning/jobs/{job.id}",
        headers={"Authorization": f"Bearer {truefoundry_gateway.api_key}"},
        timeout=10,
    )
    assert response.json()["status"] == "succeeded"


def test_session_fixture_is_shared(
    truefoundry_gateway_session: GatewaySimulator, request: pytest.FixtureRequest
) -> None:
    assert request.getfixturevalue("truefoundry_gateway_session") is truefoundry_gateway_session
    assert truefoundry_gateway_session.url.startswith("http://127.0.0.1:")


def test_importing_the_plugin_and_package_is_light() -> None:
    code = (
        "import sys\n"
        "import airflow_provider_tfy.testing.pytest_plugin\n"
        "import airflow_provider_tfy.testing as t\n"
        "heavy = ('airflow', 'asyncio', 'airflow_provider_tfy.testing.simulator')\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "t.GatewaySimulator\n"
        "print('airflow' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split("\n")[:2] == ["[]", "False"]


def test_fixture_is_usable_from_a_fresh_pytest_run(tmp_path: Path) -> None:
    test_file = tmp_path / "test_uses_fixture.py"
    test_file.write_text(
        "import requests\n"
        "def test_it(truefoundry_gateway):\n"
        "    job = truefoundry_gateway.add_job(statuses=('failed',))\n"
        "    url = f'{truefoundry_gateway.url}/fine_tuning/jobs/{job.id}'\n"
        "    body = requests.get(url, headers={'Authorization': 'Bearer tfy-sim-key'}, timeout=10).json()\n"
        "    assert body['status'] == 'failed'\n"
        "    global SIM\n"
        "    SIM = truefoundry_gateway\n"
        "def test_it_was_stopped():\n"
        "    assert not SIM._server.running\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:hypothesispytest",
            "-p",
            "no:anyio",
            str(test_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
