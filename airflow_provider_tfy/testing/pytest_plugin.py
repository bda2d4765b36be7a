"""Pytest fixtures serving a :class:`~airflow_provider_tfy.testing.GatewaySimulator`.

Registered through the package's ``pytest11`` entry point, so this module is imported at every
pytest start: it must stay cheap, and the simulator itself is only imported inside fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .simulator import GatewaySimulator


@pytest.fixture
def truefoundry_gateway() -> Iterator[GatewaySimulator]:
    """A started gateway simulator (key ``tfy-sim-key``) private to one test, stopped afterwards."""
    from .simulator import GatewaySimulator

    with GatewaySimulator() as simulator:
        yield simulator


@pytest.fixture(scope="session")
def truefoundry_gateway_session() -> Iterator[GatewaySimulator]:
    """One simulator shared by the whole session; use unique job ids and avoid global outages."""
    from .simulator import GatewaySimulator

    with GatewaySimulator() as simulator:
        yield simulator
