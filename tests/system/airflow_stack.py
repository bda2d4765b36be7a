"""A real Airflow stack on loopback: api-server, scheduler, dag-processor and triggerer.

The stack runs LocalExecutor on a SQLite metadata DB in a fresh ``AIRFLOW_HOME`` and parses the
repo's ``example_dags``. Its gateway is a :class:`GatewaySimulator` in this test process, started
first so that its URL and key can go into the Airflow processes' environment.

The connection is given as ``AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT`` in that environment rather than
created with ``POST /api/v2/connections``: it exists before any process starts (no window in
which a task could run without it), it reaches the task workers and the triggerer alike through
the same secrets-backend lookup, it keeps the key out of the metadata DB, and it is exactly what
``python -m airflow_provider_tfy.testing`` tells users to export.

Every process gets its own process group and log file; teardown stops them as
``/work/shared/notes/airflow-real-stack.md`` prescribes (SIGTERM each leader, wait, then SIGKILL
each group) and then looks for any process still in their sessions or carrying this ``AIRFLOW_HOME``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import requests
from airflow_cli import run_airflow

from airflow_provider_tfy.testing import GatewaySimulator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = ROOT / "example_dags"
AIRFLOW_BIN = Path(sys.executable).parent / "airflow"
DEFERRABLE_DAG = "example_truefoundry_fine_tuning_deferrable"

PROCESSES: dict[str, list[str]] = {
    # The API server's command line is completed with host and port in start().
    "api-server": ["api-server", "--workers", "1"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}
STARTUP_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a log file, for failure messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as err:
        return f"<cannot read {path}: {err}>"


def stack_processes(home: Path, sessions: set[int]) -> list[tuple[int, str]]:
    """Live processes (pid, command line) that belong to the stack of ``home``.

    A process belongs if it is in one of ``sessions`` (each Airflow process was started as a
    session leader; workers and task processes stay in that session even when they make their own
    process group) or if its environment or command line names ``home``. The session test is
    needed: the api-server and the LocalExecutor workers call setproctitle, which overwrites the
    memory that ``/proc/<pid>/environ`` and ``cmdline`` show.
    """
    marker = str(home).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            # Fields after "(comm)": state, ppid, pgrp, session, ...
            state, _, _, session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
        if state == "Z":  # a zombie holds nothing; its parent has not reaped it yet
            continue
        if int(session) in sessions or marker in cmdline or marker in environ:
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    return found


@dataclass
class AirflowStack:
    """The running stack: its environment, processes, REST client and the gateway simulator."""

    home: Path
    process_log_dir: Path
    env: dict[str, str]
    port: int
    simulator: GatewaySimulator
    api_key: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _log_handles: list[IO[bytes]] = field(default_factory=list)
    _session: requests.Session = field(default_factory=requests.Session)
    stopped: bool = False
    #: Seconds since the fixture began, per milestone (migrated, api, SchedulerJob, ...): for reports.
    timings: dict[str, float] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic)

    def mark(self, milestone: str) -> None:
        self.timings[milestone] = round(time.monotonic() - self._t0, 1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def task_log_dir(self) -> Path:
        return self.home / "logs"

    def process_log(self, name: str) -> Path:
        return self.process_log_dir / f"{name}.log"

    # -- REST ------------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call the REST API (the simple auth manager makes everyone admin: no token needed)."""
        kwargs.setdefault("timeout", 30)
        return self._session.request(method, f"{self.base_url}{path}", **kwargs)

    def api_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API and return its JSON, failing the test on any non-2xx answer."""
        response = self.api(method, path, **kwargs)
        assert response.ok, f"{method} {path} answered {response.status_code}: {response.text[:2000]}"
        return response.json()

    # -- lifecycle -------------------------------------------------------------------------

    def run_cli(self, *args: str, timeout: float = 180) -> None:
        """Run one ``airflow`` command to completion in the stack's environment."""
        run_airflow(*args, env=self.env, cwd=self.home, timeout=timeout)

    def start(self) -> None:
        """Start the four processes, each in its own process group with its own log file."""
        self.process_log_dir.mkdir(parents=True, exist_ok=True)
        for name, args in PROCESSES.items():
            if name == "api-server":
                args = [*args, "--host", "127.0.0.1", "--port", str(self.port)]
            handle = self.process_log(name).open("wb")
            self._log_handles.append(handle)
            self.processes[name] = subprocess.Popen(
                [str(AIRFLOW_BIN), *args],
                env=self.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session, hence own process group (pgid == pid)
            )

    def check_alive(self) -> None:
        """Fail at once, with the log tails, if any process has exited."""
        dead = {name: proc.returncode for name, proc in self.processes.items() if proc.poll() is not None}
        if dead:
            pytest.fail(f"Airflow process(es) exited early: {dead}\n{self.log_tails()}")

    def log_tails(self, chars: int = 3000) -> str:
        return "\n".join(
            f"----- {name} ({self.process_log(name)}) -----\n{tail(self.process_log(name), chars)}"
            for name in self.processes
        )

    def wait_until_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until the API answers, scheduler and triggerer heartbeat, and the DAG is parsed."""
        deadline = time.monotonic() + timeout
        pending = ["api", "SchedulerJob", "TriggererJob", "dag"]
        while pending:
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(
                    f"Airflow stack not ready after {timeout:.0f} s (waiting for {pending})\n"
                    f"{self.log_tails()}"
                )
            try:
                if pending[0] == "api":
                    ready = self.api("GET", "/api/v2/version", timeout=5).ok
                elif pending[0] == "dag":
                    ready = self.api("GET", f"/api/v2/dags/{DEFERRABLE_DAG}", timeout=5).ok
                    if not ready:
                        self.check_import_errors()
                else:
                    ready = bool(self.alive_jobs(pending[0]))
            except requests.RequestException:
                ready = False
            if ready:
                self.mark(pending.pop(0))
            else:
                time.sleep(0.5)

    def check_import_errors(self) -> None:
        """Fail at once if the dag-processor could not import a file of the DAGs folder."""
        errors = self.api_json("GET", "/api/v2/importErrors")["import_errors"]
        if errors:
            pytest.fail("the DAGs folder has import errors:\n" + "\n".join(e["stack_trace"] for e in errors))

    def alive_jobs(self, job_type: str) -> list[dict[str, Any]]:
        """The running jobs of one type (SchedulerJob, TriggererJob, ...) with a fresh heartbeat."""
        answer = self.api_json(
            "GET", "/api/v2/jobs", params={"job_type": job_type, "job_state": "running", "is_alive": "true"}
        )
        return answer["jobs"]

    def running_processes(self) -> list[tuple[int, str]]:
        """Every live process of this stack: the four leaders and all their descendants."""
        return stack_processes(self.home, {proc.pid for proc in self.processes.values()})

    def stop(self) -> list[tuple[int, str]]:
        """Stop every process; return (after killing them) any that outlived the teardown.

        SIGTERM each leader (never whole groups at once: that once hung the scheduler), wait up to
        STOP_TIMEOUT for all of them, then SIGKILL every group to catch workers and leftovers.
        Whatever is still alive after that escaped the procedure: it is killed too, and returned
        so that the caller can fail. Safe to call twice.
        """
        if not self.stopped:
            self.stopped = True
            for proc in self.processes.values():
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            for proc in self.processes.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            for proc in self.processes.values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            for proc in self.processes.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            for handle in self._log_handles:
                handle.close()
            self._session.close()
        # A process in a group of its own (task processes make one) may take a moment to notice
        # that its parent died; give it that moment before calling it a leftover.
        deadline = time.monotonic() + 10
        leftovers = self.running_processes()
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.5)
            leftovers = self.running_processes()
        for pid, _ in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return leftovers


def stack_environment(home: Path, port: int, simulator: GatewaySimulator) -> dict[str, str]:
    """The Airflow processes' environment: inherited AIRFLOW* variables stripped, then set anew."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and not k.startswith("TFY_")}
    base_url = f"http://127.0.0.1:{port}"
    connection = {"conn_type": "truefoundry", "host": simulator.url, "password": simulator.api_key}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(EXAMPLE_DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=base_url,
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{base_url}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET=base64.b64encode(secrets.token_bytes(64)).decode(),
        AIRFLOW__API__SECRET_KEY=secrets.token_hex(32),
        AIRFLOW__CORE__FERNET_KEY=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL="1",
        AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT=json.dumps(connection),
        # Read when the DAG file is parsed: poll the simulator every second, give up after 60 s.
        TFY_EXAMPLE_POKE_INTERVAL="1",
        TFY_EXAMPLE_TIMEOUT="60",
        PYTHONUNBUFFERED="1",
    )
    return env
