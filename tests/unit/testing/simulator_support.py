"""Helpers shared by the simulator's tests (imported by conftest.py and test modules)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from urllib.parse import quote

from airflow_provider_tfy.testing import GatewaySimulator

API_KEY = "tfy-sim-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}

JobUrl = Callable[[GatewaySimulator, str], str]


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


def job_url(sim: GatewaySimulator, job_id: str) -> str:
    """The retrieve URL for ``job_id``, percent-encoding every reserved character."""
    return f"{sim.url}/fine_tuning/jobs/{quote(job_id, safe='')}"


def job_path(sim: GatewaySimulator, job_id: str) -> str:
    """Like :func:`job_url` but only the path, for ``http.client``."""
    return job_url(sim, job_id).removeprefix(f"http://127.0.0.1:{sim.port}")


PROVIDER = {"x-tfy-provider-name": "openai-main"}
JSONL = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
