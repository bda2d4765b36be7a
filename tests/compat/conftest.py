"""Fixtures of the cross-version smoke suite (``tests/compat``).

The suite runs unchanged on every Airflow version the provider declares: on the locked 3.3.x as
part of the normal test run, and through ``scripts/compat.sh`` on the newest 2.11.x, 3.0.x, 3.1.x
and 3.2.x (Python 3.11) and on the locked 3.3.x under Python 3.12 and 3.13, each in its own
environment with the provider installed from a built wheel.

``tests/conftest.py`` has already pointed ``AIRFLOW_HOME`` at a throwaway directory and the DAGs
folder at ``example_dags/`` before anything imports Airflow; its ``airflow_db`` fixture migrates
the metadata DB with the running version's own ``airflow db migrate``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from compat_helpers import collect_provider_warnings, load_example_dags

from airflow_provider_tfy.testing import GatewaySimulator


@pytest.fixture
def truefoundry_conn(truefoundry_gateway: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Point ``truefoundry_default`` at the test's simulator; call it again to change the extra.

    Uses an ``AIRFLOW_CONN_*`` environment variable, which every Airflow version reads, in tasks
    and in the in-process triggerer of ``dag.test()`` alike.
    """

    def configure(*, password: str | None = None, **extra: Any) -> Any:
        conn: dict[str, Any] = {
            "conn_type": "truefoundry",
            "host": truefoundry_gateway.url,
            "password": truefoundry_gateway.api_key if password is None else password,
        }
        if extra:
            conn["extra"] = extra
        monkeypatch.setenv("AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT", json.dumps(conn))
        return truefoundry_gateway

    configure()
    return configure


@pytest.fixture
def example_dags(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example DAG module, freshly imported, with a migrated metadata DB behind it."""
    return load_example_dags(monkeypatch)


@pytest.fixture
def provider_warnings() -> Iterator[list[str]]:
    """Deprecation warnings our own code causes during the test (see ``collect_provider_warnings``)."""
    with collect_provider_warnings() as found:
        yield found


@pytest.fixture
def secret_key() -> str:
    """An API key of this test's own, so finding it anywhere means this test leaked it."""
    return f"tfy-compat-secret-{secrets.token_hex(16)}"


@pytest.fixture
def gateway_with_secret_key(secret_key: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewaySimulator]:
    """A simulator with :func:`secret_key`, and ``truefoundry_default`` pointing at it."""
    with GatewaySimulator(api_key=secret_key) as sim:
        conn = {"conn_type": "truefoundry", "host": sim.url, "password": secret_key}
        monkeypatch.setenv("AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT", json.dumps(conn))
        yield sim
