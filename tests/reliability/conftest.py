"""Fixtures for the reliability suite: a simulator with a key of its own, and its connection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_tfy.testing import GatewaySimulator

from ._support import CONN_ENV, CONN_ID, connection_json, free_port, new_key

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic must reach the simulator directly, whatever the CI box's proxy settings."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def api_key() -> str:
    """A key unique to the test, so a leak is attributable."""
    return new_key()


@pytest.fixture
def gateway(api_key: str) -> Iterator[GatewaySimulator]:
    """A started simulator on a fixed port (so a scenario can stop and restart it)."""
    simulator = GatewaySimulator(api_key=api_key, port=free_port())
    with simulator:
        yield simulator


@pytest.fixture
def gateway_conn(gateway: GatewaySimulator, api_key: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The connection id of an Airflow connection pointing at ``gateway``."""
    monkeypatch.setenv(CONN_ENV, connection_json(gateway.url, api_key))
    return CONN_ID
