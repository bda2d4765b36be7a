"""Helpers shared by the benchmark scenarios: environment, statistics, process metrics.

Stdlib only, and no Airflow import: the orchestrator and the simulator host load this too.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "benchmarks"
API_KEY = "tfy-bench-0123456789abcdef"


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class Metric:
    """One row of the results table.

    ``target`` is a human-readable bound such as ``"<= 1.1"``; ``met`` is None when the row is
    informational. ``ours_lower_bound``/``baseline_lower_bound`` mark a value only known to be at
    least this large (e.g. a lag that includes polls still unanswered when a run was stopped).
    """

    scenario: str
    metric: str
    ours: float | None
    baseline: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    unit: str = ""
    baseline_name: str = ""
    note: str = ""
    ours_lower_bound: bool = False
    baseline_lower_bound: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form (NaN-free)."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }


def ratio(ours: float | None, baseline: float | None) -> float | None:
    """``ours / baseline``, or None when either is missing or the baseline is zero."""
    if ours is None or baseline is None or baseline == 0:
        return None
    return ours / baseline


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return percentile(values, 50.0)


# --------------------------------------------------------------------------------------------
# Process metrics (psutil when installed, /proc or getrusage otherwise)
# --------------------------------------------------------------------------------------------

try:
    import psutil as _psutil
except ImportError:  # pragma: no cover - depends on the environment
    _psutil = None

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The current resident set size of this process."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE
    if _psutil is not None:
        return int(_psutil.Process().memory_info().rss)
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The resident set size's high-water mark (since start or the last :func:`reset_peak_rss`)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux ``clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def cpu_seconds() -> float:
    """User plus system CPU time of this process, all threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def runqueue_wait_seconds() -> float | None:
    """Time this (calling) thread has spent runnable but waiting for a CPU, or None if unknown.

    On a shared machine this is the time other processes took from us (Linux schedstat).
    """
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as schedstat:
            return int(schedstat.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def release_memory() -> None:
    """Collect garbage and hand free heap pages back to the OS, so RSS deltas start clean."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def raise_nofile(wanted: int) -> int:
    """Raise the open-files soft limit towards ``wanted`` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def airflow_env(home: Path, base_url: str | None = None, api_key: str = API_KEY) -> dict[str, str]:
    """A clean environment for a throwaway Airflow home, with the connection pointing at ``base_url``.

    No metadata DB is needed: the connection comes from the environment. Logging is set to
    WARNING for every side alike, so neither pays for per-status info lines.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    # Installed packages have bytecode; a run without it would time the compiler, not imports.
    # It is kept in the repository's git-ignored artifacts/, never in the virtualenv.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
        PYTHONPYCACHEPREFIX=str(ARTIFACTS / "pycache"),
    )
    if base_url is not None:
        conn = {"conn_type": "truefoundry", "host": base_url, "password": api_key}
        env["AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT"] = json.dumps(conn)
    return env


# --------------------------------------------------------------------------------------------
# The simulator host: the gateway simulator in its own process, scripted over stdin/stdout
# --------------------------------------------------------------------------------------------


class SimHost:
    """Client side of :mod:`benchmarks.simhost`: start it, send it commands, stop it."""

    def __init__(self, env: Mapping[str, str], api_key: str = API_KEY, latency: float = 0.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.simhost", "--api-key", api_key, "--latency", str(latency)],
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        hello = self._read()
        self.url: str = hello["url"]
        self.pid: int = hello["pid"]
        self.api_key = api_key

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"simulator host exited (code {self.process.poll()})")
        return json.loads(line)

    def command(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one command and return its JSON answer; raises on an error answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"simulator host: {answer['error']}")
        return answer

    def stop(self) -> None:
        """Ask the host to stop; kill it if it does not."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self.command("quit")
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def __enter__(self) -> SimHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Stopwatch:
    """Wall (perf_counter) and CPU time between ``start()`` and ``stop()``."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self._wall0 = 0.0
        self._cpu0 = 0.0

    def start(self) -> Stopwatch:
        self._wall0, self._cpu0 = time.perf_counter(), cpu_seconds()
        return self

    def stop(self) -> Stopwatch:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = cpu_seconds() - self._cpu0
        return self
