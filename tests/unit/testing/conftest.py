"""Shared fixtures for the gateway simulator's own tests."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

# tests/ holds shared helpers such as spec_schema.py but is not a package.
_TESTS_DIR = str(Path(__file__).resolve().parents[2])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from jsonschema import Draft202012Validator  # noqa: E402
from spec_schema import load_job_schema  # noqa: E402

from airflow_provider_tfy.testing import GatewaySimulator  # noqa: E402

API_KEY = "tfy-sim-key"


class FakeClock:
    """A settable clock for deterministic time-based progression and outages."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def _job_url(sim: GatewaySimulator, job_id: str) -> str:
    return f"{sim.url}/fine_tuning/jobs/{quote(job_id, safe='')}"


@pytest.fixture
def job_url() -> Callable[[GatewaySimulator, str], str]:
    """Builds the retrieve URL for a job id, percent-encoding every reserved character."""
    return _job_url


@pytest.fixture(scope="session")
def job_validator() -> Draft202012Validator:
    """Validates bodies against the spec's 200 schema (nullable converted to type unions)."""
    schema = load_job_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


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
def http() -> Iterator[requests.Session]:
    """A keep-alive session that sends the right key and never hangs a test."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {API_KEY}"
        original = session.request

        def request_with_timeout(*args: object, **kwargs: object) -> requests.Response:
            kwargs.setdefault("timeout", 10)
            return original(*args, **kwargs)  # type: ignore[arg-type]

        session.request = request_with_timeout  # type: ignore[method-assign]
        yield session
