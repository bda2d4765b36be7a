"""Shared fixtures for the gateway simulator's own tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

# Shared helpers live in tests/ (spec_schema.py) and next to this file; neither is a package.
for _path in (Path(__file__).resolve().parents[2], Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from jsonschema import Draft202012Validator  # noqa: E402
from simulator_support import API_KEY, FakeClock, JobUrl  # noqa: E402
from simulator_support import job_url as _job_url  # noqa: E402
from spec_schema import load_job_schema  # noqa: E402

from airflow_provider_tfy.testing import GatewaySimulator  # noqa: E402


@pytest.fixture
def sim() -> Iterator[GatewaySimulator]:
    with GatewaySimulator(api_key=API_KEY) as simulator:
        yield simulator


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clocked_sim(clock: FakeClock) -> Iterator[GatewaySimulator]:
    with GatewaySimulator(api_key=API_KEY, clock=clock) as simulator:
        yield simulator


@pytest.fixture
def job_url() -> JobUrl:
    """Builds the retrieve URL for a job id, percent-encoding every reserved character."""
    return _job_url


@pytest.fixture(scope="session")
def job_validator() -> Draft202012Validator:
    """Validates bodies against the spec's 200 schema (nullable converted to type unions)."""
    schema = load_job_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


class _Session(requests.Session):
    """Sends the right key and applies a default timeout, so no test can hang on a socket."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return super().request(*args, **kwargs)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """A keep-alive ``requests`` session authenticated with the simulator's key."""
    with _Session() as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        yield client
