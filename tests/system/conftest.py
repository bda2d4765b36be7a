"""Fixtures for the system tests: a real Airflow stack (see :mod:`airflow_stack`)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from airflow_stack import AirflowStack, free_port, stack_environment

from airflow_provider_tfy.testing import GatewaySimulator


@pytest.fixture(scope="module")
def airflow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """A started, ready Airflow stack talking to a gateway simulator; stopped at the end."""
    base = tmp_path_factory.mktemp("airflow-stack")
    home = base / "home"
    home.mkdir()
    # A key no Airflow component would print by chance: if it shows up in a log, it leaked.
    api_key = f"tfy-systest-{secrets.token_hex(16)}"
    with GatewaySimulator(api_key=api_key) as simulator:
        port = free_port()
        stack = AirflowStack(
            home=home,
            process_log_dir=base / "process-logs",
            env=stack_environment(home, port, simulator),
            port=port,
            simulator=simulator,
            api_key=api_key,
        )
        try:
            stack.run_cli("db", "migrate")
            stack.mark("migrated")
            stack.start()
            stack.wait_until_ready()
            yield stack
        finally:
            leftovers = stack.stop()
        if leftovers:
            pytest.fail(f"processes of {home} survived teardown (now killed): {leftovers}")
