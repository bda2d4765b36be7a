"""A production-shaped Airflow stack on loopback: CeleryExecutor, two workers, two triggerers.

api-server, scheduler, dag-processor, two triggerers and two Celery workers (``worker-1`` and
``worker-2``, ``airflow celery worker``) run as separate processes against a private PostgreSQL
cluster (:mod:`postgres`: the metadata database and Celery's result backend) and a private Redis
server (:mod:`redis_broker`: the broker), in a fresh ``AIRFLOW_HOME``, parsing a DAGs folder made
of ``example_dags/`` and ``tests/system/dags/``. Their gateway is a :class:`GatewaySimulator` in
this test process, started first on a fixed free port (so it can be stopped and started again on
the same port) so that its URL and key can go into the processes' environment.

A task runs in a worker's pool process, which is the task's supervisor; the task's code runs in
the supervisor's child (:meth:`AirflowStack.task_process` finds both). Workers serve no logs: the
api-server reads the task logs from the shared ``AIRFLOW_HOME``.

The connection is given as ``AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT`` in that environment rather than
created with ``POST /api/v2/connections``: it exists before any process starts, it reaches the
task workers and the triggerers alike through the same secrets-backend lookup, it keeps the key
out of the metadata DB, and it is exactly what ``python -m airflow_provider_tfy.testing`` tells
users to export.

Every process gets its own session (hence process group) and log file. Teardown SIGTERMs each
leader, never whole groups at once (a group-wide SIGTERM once hung the scheduler), waits for them
all, then SIGKILLs each group; it then looks for any process still in their sessions or carrying
this ``AIRFLOW_HOME`` (task processes make process groups of their own, but stay in the
session). See ``conftest.py`` for the helpers tests use.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
import requests
from airflow_cli import run_airflow
from cryptography.fernet import Fernet
from postgres import PostgresCluster
from redis_broker import RedisServer
from statsd_listener import PREFIX as STATSD_PREFIX
from statsd_listener import StatsdListener

from airflow_provider_tfy.testing import GatewaySimulator

ROOT = Path(__file__).resolve().parents[2]
DAG_SOURCES = (ROOT / "example_dags", Path(__file__).resolve().parent / "dags")
AIRFLOW_BIN = Path(sys.executable).parent / "airflow"
DEFERRABLE_DAG = "example_truefoundry_fine_tuning_deferrable"
SENSOR = "wait_for_fine_tuning"
REGISTER = "register_model"
TRIGGERERS = ("triggerer-1", "triggerer-2")

WORKERS = ("worker-1", "worker-2")
#: Task slots per Celery worker (prefork pool processes); a deferred task holds none.
WORKER_CONCURRENCY = 4

PROCESSES: dict[str, list[str]] = {
    # The API server's command line is completed with host and port in start_process().
    "api-server": ["api-server", "--workers", "1"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    **{name: ["triggerer", "--skip-serve-logs"] for name in TRIGGERERS},
    # Two Celery workers on one host: distinct node names, and no log server (both would want
    # port 8793; the api-server reads the task logs from the shared AIRFLOW_HOME). No mingle or
    # gossip: nothing to sync between two workers that start empty, and a faster start.
    **{
        name: [
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@%h",
            "--concurrency",
            str(WORKER_CONCURRENCY),
            "--skip-serve-logs",
            "--without-mingle",
            "--without-gossip",
        ]
        for name in WORKERS
    },
}
STARTUP_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
RUN_TIMEOUT = 180.0

# How long a running try may go without a heartbeat before the scheduler fails it (and, with
# retries left, runs it again). Airflow's default of 300 s would make the frozen-worker scenario
# (test_interruptions_stack.py) wait five minutes; live task processes heartbeat every second
# (``[workers] min_heartbeat_interval`` below), so 20 s still leaves a busy machine a wide margin.
# The scheduler looks for such tries every 10 s by default: every 2 s instead, so that the
# scenario waits ~20 s, not up to 30.
TASK_HEARTBEAT_TIMEOUT = 20
TASK_HEARTBEAT_TIMEOUT_CHECK_SECONDS = 2

# Failover settings, lowered for a test. A triggerer takes over the triggers of a peer whose
# heartbeat is older than the threshold (Airflow's defaults: 5 s heartbeat, 30 s threshold, so a
# crash costs a wait ~30 s). A 1 s heartbeat with a 10 s threshold makes a takeover take ~10 s;
# the threshold keeps a margin of ten missed heartbeats so that a live triggerer, slowed down on a
# busy 2-core machine, is never taken for dead (which would run its triggers twice for a while).
TRIGGERER_HEARTBEAT_SEC = 1
TRIGGERER_HEALTH_CHECK_THRESHOLD = 10  # an integer: the triggerer reads it with getint
# Each triggerer takes at most this many triggers (default 1,000), so that 20 waits at once are
# certain to spread over both: one triggerer alone would otherwise pick up every trigger that was
# unassigned when it looked. A survivor still has room for a crashed peer's share of a scenario.
TRIGGERER_CAPACITY = 12

T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a log file, for failure messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as err:
        return f"<cannot read {path}: {err}>"


def wait_until(
    check: Callable[[], T],
    timeout: float,
    what: str,
    period: float = 0.5,
    describe: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` until it returns something truthy and return that; fail after ``timeout``.

    ``describe`` adds the state of things to the failure message.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout:.0f} s waiting for {what}\n{describe() if describe else ''}"
            )
        time.sleep(period)


def proc_entries() -> Iterable[tuple[int, int, str, int, int, bytes, bytes]]:
    """(pid, ppid, state, pgrp, session, cmdline, environ) of every process we may read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            # Fields after "(comm)": state, ppid, pgrp, session, ...
            state, ppid, pgrp, session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
        yield int(entry.name), int(ppid), state, int(pgrp), int(session), cmdline, environ


def stack_processes(home: Path, sessions: set[int]) -> list[tuple[int, str]]:
    """Live processes (pid, command line) that belong to the stack of ``home``.

    A process belongs if it is in one of ``sessions`` (each Airflow process was started as a
    session leader; workers and task processes stay in that session even when they make their own
    process group) or if its environment or command line names ``home``. The session test is
    needed: the api-server and the Celery workers call setproctitle, which overwrites the
    memory that ``/proc/<pid>/environ`` and ``cmdline`` show.
    """
    marker = str(home).encode()
    return [
        (pid, cmdline.replace(b"\0", b" ").decode(errors="replace").strip())
        for pid, _, state, _, session, cmdline, environ in proc_entries()
        # A zombie holds nothing; its parent has not reaped it yet.
        if state != "Z" and (session in sessions or marker in cmdline or marker in environ)
    ]


@dataclass
class AirflowStack:
    """The running stack: processes, REST and SQL access, the gateway simulator. See conftest.py."""

    base: Path
    env: dict[str, str]
    port: int
    simulator: GatewaySimulator
    api_key: str
    postgres: PostgresCluster
    broker: RedisServer
    #: Airflow's metrics (StatsD over loopback UDP), e.g. ``metrics.count("truefoundry....")``.
    metrics: StatsdListener
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: Every pid that ever led a stack process (restarted ones too): their sessions are the stack's.
    sessions: set[int] = field(default_factory=set)
    #: The TriggererJob id of each triggerer process now running, by process name.
    triggerer_jobs: dict[str, int] = field(default_factory=dict)
    stopped: bool = False
    #: Seconds since the fixture began, per milestone (migrated, api, ...): for reports.
    timings: dict[str, float] = field(default_factory=dict)
    _log_handles: list[IO[bytes]] = field(default_factory=list)
    #: The size of each process log when that process was last started: where its run begins.
    _log_offsets: dict[str, int] = field(default_factory=dict)
    _session: requests.Session = field(default_factory=requests.Session)
    _t0: float = field(default_factory=time.monotonic)
    _db: Any = None

    @property
    def home(self) -> Path:
        return self.base / "home"

    @property
    def dags_folder(self) -> Path:
        return self.base / "dags"

    @property
    def process_log_dir(self) -> Path:
        return self.base / "process-logs"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def task_log_dir(self) -> Path:
        return self.home / "logs"

    def mark(self, milestone: str) -> None:
        self.timings[milestone] = round(time.monotonic() - self._t0, 1)

    def process_log(self, name: str) -> Path:
        return self.process_log_dir / f"{name}.log"

    # -- lifecycle -------------------------------------------------------------------------

    def prepare(self) -> None:
        """Make the home and DAGs folder and migrate the database."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        self.process_log_dir.mkdir(parents=True, exist_ok=True)
        for source in DAG_SOURCES:
            # The DAG files and the data files shipped beside them (the pipeline's training JSONL).
            for path in [*source.glob("*.py"), *source.glob("*.jsonl")]:
                shutil.copy(path, self.dags_folder / path.name)
        run_airflow("db", "migrate", env=self.env, cwd=self.home, timeout=300)
        self.mark("migrated")

    def start_process(self, name: str) -> subprocess.Popen[bytes]:
        """Start (or start again) one process in its own session, appending to its log file."""
        args = PROCESSES[name]
        if name == "api-server":
            args = [*args, "--host", "127.0.0.1", "--port", str(self.port)]
        handle = self.process_log(name).open("ab")
        self._log_handles.append(handle)
        self._log_offsets[name] = os.fstat(handle.fileno()).st_size
        proc = subprocess.Popen(
            [str(AIRFLOW_BIN), *args],
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session, hence own process group (pgid == pid)
        )
        self.processes[name] = proc
        self.sessions.add(proc.pid)
        return proc

    def start(self) -> None:
        """Start every process and wait until the stack is ready.

        The second triggerer starts once the first has registered, so that each TriggererJob id
        is known to belong to one process (the job table records no pid).
        """
        for name in PROCESSES:
            if name != TRIGGERERS[1]:
                self.start_process(name)
        self.wait_for_api()
        self.triggerer_jobs[TRIGGERERS[0]] = self.wait_for_new_triggerer(set())
        self.start_process(TRIGGERERS[1])
        self.triggerer_jobs[TRIGGERERS[1]] = self.wait_for_new_triggerer(set(self.triggerer_jobs.values()))
        wait_until(lambda: self.alive_jobs("SchedulerJob"), STARTUP_TIMEOUT, "the scheduler's heartbeat")
        for name in WORKERS:
            self.wait_for_worker(name)
        self.wait_for_dags()
        self.mark("ready")

    def wait_for_api(self) -> None:
        def answers() -> bool:
            self.check_alive()
            try:
                return self.api("GET", "/api/v2/version", timeout=5).ok
            except requests.RequestException:
                return False

        wait_until(answers, STARTUP_TIMEOUT, "the API server")
        self.mark("api")

    def wait_for_new_triggerer(self, known: set[int]) -> int:
        """Wait for a triggerer job id not in ``known`` to heartbeat; return it."""

        def new_job() -> int | None:
            self.check_alive()
            fresh = {job["id"] for job in self.alive_jobs("TriggererJob")} - known
            return min(fresh) if fresh else None

        job_id = wait_until(new_job, STARTUP_TIMEOUT, "a new triggerer's heartbeat")
        self.mark(f"triggerer job {job_id}")
        return job_id

    def wait_for_worker(self, name: str) -> None:
        """Wait until a Celery worker (started last by :meth:`start_process`) consumes its queue:
        Celery logs ``<node name> ready.`` once connected to the broker with its pool up."""

        pattern = re.compile(rf"{re.escape(name)}@\S+ ready\.".encode())

        def ready() -> bool:
            self.check_alive()
            with self.process_log(name).open("rb") as log:
                log.seek(self._log_offsets[name])
                return bool(pattern.search(log.read()))

        wait_until(ready, STARTUP_TIMEOUT, f"the Celery worker {name} to be ready")
        self.mark(name)

    def wait_for_dags(self) -> None:
        """Wait until every DAG of the folder is parsed, then unpause them all."""
        expected = {
            DEFERRABLE_DAG,
            "systest_deferrable",
            "systest_deadline",
            "systest_poke_retry",
            "systest_start_from_trigger",
            "systest_watcher_consumer",
        }

        def parsed() -> bool:
            self.check_alive()
            errors = self.api_json("GET", "/api/v2/importErrors")["import_errors"]
            if errors:
                pytest.fail(
                    "the DAGs folder has import errors:\n" + "\n".join(e["stack_trace"] for e in errors)
                )
            dags = {
                dag["dag_id"] for dag in self.api_json("GET", "/api/v2/dags", params={"limit": 100})["dags"]
            }
            return expected <= dags

        wait_until(parsed, STARTUP_TIMEOUT, f"the DAGs {sorted(expected)} to be parsed")
        for dag in self.api_json("GET", "/api/v2/dags", params={"limit": 100})["dags"]:
            self.api_json("PATCH", f"/api/v2/dags/{dag['dag_id']}", json={"is_paused": False})
        self.mark("dags")

    def check_alive(self) -> None:
        """Fail at once, with the log tails, if any process has exited unasked."""
        dead = {name: proc.returncode for name, proc in self.processes.items() if proc.poll() is not None}
        if dead:
            pytest.fail(f"Airflow process(es) exited early: {dead}\n{self.log_tails()}")

    def log_tails(self, chars: int = 3000) -> str:
        return "\n".join(
            f"----- {name} ({self.process_log(name)}) -----\n{tail(self.process_log(name), chars)}"
            for name in self.processes
        )

    def kill(
        self,
        name: str,
        sig: signal.Signals = signal.SIGKILL,
        *,
        group: bool = True,
        wait: float | None = STOP_TIMEOUT,
    ) -> subprocess.Popen[bytes]:
        """Send ``sig`` to a process (its whole process group by default) and reap it.

        The process is forgotten: :meth:`check_alive` no longer expects it. With ``wait=None``
        the call returns at once (a Celery worker's warm shutdown ends when its tasks do): the
        caller waits on the returned process.
        """
        proc = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        if wait is not None:
            proc.wait(timeout=wait)
        self.triggerer_jobs.pop(name, None)
        return proc

    def restart(self, name: str) -> None:
        """Start a process again (after :meth:`kill`); wait for a triggerer's new job id, or for
        a Celery worker to be ready."""
        known = set(self.triggerer_jobs.values())
        self.start_process(name)
        if name in TRIGGERERS:
            self.triggerer_jobs[name] = self.wait_for_new_triggerer(known)
        if name in WORKERS:
            self.wait_for_worker(name)

    def session_pids(self, name: str) -> list[int]:
        """Every live process in the session of a running stack process: for a Celery worker,
        its main process, its pool, the task supervisors and the task processes."""
        leader = self.processes[name].pid
        return [
            pid for pid, _, state, _, session, _, _ in proc_entries() if session == leader and state != "Z"
        ]

    def signal_session(self, name: str, sig: signal.Signals) -> list[int]:
        """Send ``sig`` to every process in a stack process's session (task processes make groups
        of their own, so ``killpg`` of the leader's group would miss them); return their pids."""
        pids = self.session_pids(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

    def running_processes(self) -> list[tuple[int, str]]:
        """Every live process of this stack: the leaders and all their descendants."""
        return stack_processes(self.home, self.sessions)

    def stop(self) -> list[tuple[int, str]]:
        """Stop every process; return (after killing them) any that outlived the teardown.

        SIGTERM each leader (never whole groups at once: that once hung the scheduler), wait up to
        STOP_TIMEOUT for all of them, then SIGKILL every group to catch workers and leftovers.
        Whatever is still alive after that escaped the procedure: it is killed too, and returned
        so that the caller can fail. Safe to call twice.
        """
        if not self.stopped:
            self.stopped = True
            procs = list(self.processes.values())
            for proc in procs:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            for pid in self.sessions:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            for handle in self._log_handles:
                handle.close()
            self._session.close()
            if self._db is not None:
                self._db.close()
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

    # -- REST ------------------------------------------------------------------------------

    def api(self, method: str, path: str, *, attempts: int = 3, **kwargs: Any) -> requests.Response:
        """Call the REST API (the simple auth manager makes everyone admin: no token needed).

        A read that times out is tried again (a single api-server worker also serves every task's
        heartbeats, and a busy 2-core machine can starve it); other requests only when
        ``attempts`` says so, for calls made safe to repeat.
        """
        kwargs.setdefault("timeout", 60)
        if method != "GET":
            attempts = kwargs.pop("retry_attempts", 1)
        for attempt in range(1, attempts + 1):
            try:
                return self._session.request(method, f"{self.base_url}{path}", **kwargs)
            except requests.Timeout:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def api_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API and return its JSON, failing the test on any non-2xx answer."""
        response = self.api(method, path, **kwargs)
        assert response.ok, f"{method} {path} answered {response.status_code}: {response.text[:2000]}"
        return response.json()

    def alive_jobs(self, job_type: str) -> list[dict[str, Any]]:
        """The running jobs of one type (SchedulerJob, TriggererJob, ...) with a fresh heartbeat."""
        answer = self.api_json(
            "GET", "/api/v2/jobs", params={"job_type": job_type, "job_state": "running", "is_alive": "true"}
        )
        return list(answer["jobs"])

    def trigger_run(self, dag_id: str, job_id: str) -> str:
        """Trigger a run of ``dag_id`` waiting for ``job_id``; return its run id.

        The run id is chosen here, so a POST repeated after a timeout cannot make a second run:
        it answers 409 for the run the first one made.
        """
        run_id = f"systest__{job_id}"
        body = {"dag_run_id": run_id, "conf": {"job_id": job_id}, "logical_date": None}
        response = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body, retry_attempts=3)
        assert response.ok or response.status_code == 409, f"{response.status_code}: {response.text[:2000]}"
        return run_id

    def run_states(self, dag_id: str) -> dict[str, str]:
        """The state of every run of ``dag_id``, by run id (one request)."""
        answer = self.api_json("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 1000})
        return {run["dag_run_id"]: run["state"] for run in answer["dag_runs"]}

    def wait_for_runs(
        self, dag_id: str, run_ids: Iterable[str], timeout: float = RUN_TIMEOUT
    ) -> dict[str, str]:
        """Wait until every run is ``success`` or ``failed``; return their states."""
        wanted = list(run_ids)
        deadline = time.monotonic() + timeout
        while True:
            states = self.run_states(dag_id)
            done = {run: states.get(run) for run in wanted}
            if all(state in ("success", "failed") for state in done.values()):
                return {run: str(state) for run, state in done.items()}
            self.check_alive()
            if time.monotonic() > deadline:
                pending = {run: state for run, state in done.items() if state not in ("success", "failed")}
                pytest.fail(
                    f"runs still unfinished after {timeout:.0f} s: {pending}\n"
                    f"tasks: { {run: self.task_states(dag_id, run) for run in list(pending)[:3]} }\n"
                    f"{self.log_tails()}"
                )
            time.sleep(1)

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """The run's task instances (REST objects: state, try_number, start_date, ...) by task id."""
        answer = self.api_json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti for ti in answer["task_instances"]}

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {task: ti["state"] for task, ti in self.task_instances(dag_id, run_id).items()}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api_json("GET", path)["value"]

    def task_log_entries(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> list[Any]:
        """The task's log through the REST API (JSON, else the endpoint answers 406)."""
        answer = self.api_json(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
            headers={"Accept": "application/json"},
        )
        return list(answer["content"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log through the REST API, as one searchable text."""
        return json.dumps(self.task_log_entries(dag_id, run_id, task_id, try_number))

    def events_of(self, dag_id: str, run_id: str, task_id: str) -> list[str]:
        """The event-log events recorded for one task of a run, oldest first."""
        answer = self.api_json(
            "GET",
            "/api/v2/eventLogs",
            params={"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "order_by": "id", "limit": 100},
        )
        return [entry["event"] for entry in answer["event_logs"]]

    def trigger_log_files(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1
    ) -> dict[int, Path]:
        """The ``attempt=<n>.log.trigger.<N>.log`` files of a task, by triggerer job id N."""
        folder = self.task_log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return {
            int(path.name.rsplit(".", 2)[-2]): path
            for path in folder.glob(f"attempt={try_number}.log.trigger.*.log")
        }

    # -- database --------------------------------------------------------------------------

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one query on the metadata database and return its rows."""
        if self._db is None:
            self._db = self.postgres.connect()
        with self._db.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    def triggers(self) -> list[dict[str, Any]]:
        """Every trigger row with its task and kwargs (as stored text): which triggerer holds what.

        ``triggerer_id`` is the TriggererJob id (see :attr:`triggerer_jobs`), None while unassigned.
        """
        fernet = Fernet(self.env["AIRFLOW__CORE__FERNET_KEY"].encode())
        rows = self.sql(
            "SELECT t.id, t.triggerer_id, t.classpath, t.kwargs, ti.dag_id, ti.run_id, ti.task_id "
            "FROM trigger t LEFT JOIN task_instance ti ON ti.trigger_id = t.id ORDER BY t.id"
        )
        return [
            {
                "id": trigger_id,
                "triggerer_id": triggerer_id,
                "classpath": classpath,
                # Airflow 3.3 stores them as JSON; older versions Fernet-encrypted.
                "kwargs": kwargs if kwargs.startswith("{") else fernet.decrypt(kwargs.encode()).decode(),
                "dag_id": dag_id,
                "run_id": run_id,
                "task_id": task_id,
            }
            for trigger_id, triggerer_id, classpath, kwargs, dag_id, run_id, task_id in rows
        ]

    def holders(self, dag_id: str, run_ids: Iterable[str]) -> dict[str, int | None]:
        """The triggerer job id holding each run's trigger (None: unassigned), for runs with one."""
        wanted = set(run_ids)
        return {
            t["run_id"]: t["triggerer_id"]
            for t in self.triggers()
            if t["dag_id"] == dag_id and t["run_id"] in wanted
        }

    # -- processes of tasks ----------------------------------------------------------------

    def task_process(
        self, dag_id: str, run_id: str, task_id: str, try_number: int | None = None
    ) -> tuple[int, int, int] | None:
        """(supervisor pid, task runner pid, session) of one task instance's running try (of
        ``try_number``, else of any try), if any.

        A Celery worker's pool process runs each task as its supervisor: it holds the task's log
        file open (its path names the dag, run and task; no command line does) for as long as the
        try runs, and the task's own code runs in the supervisor's child. The session is the
        worker's (its main process's pid: see :meth:`worker_of`).
        """
        needle = f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/"
        if try_number is not None:
            needle += f"attempt={try_number}.log"
        entries = [(pid, ppid, state, session) for pid, ppid, state, _, session, _, _ in proc_entries()]
        holders = {}
        for pid, _, state, session in entries:
            if state == "Z" or session not in self.sessions:
                continue
            with contextlib.suppress(OSError):
                if any(needle in os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()):
                    holders[pid] = session
        # The task runner may hold the log too (inherited); the supervisor is the holder whose
        # child is a holder or, once the child closed it, the one holder with a live child.
        for pid, ppid, state, _ in entries:
            if ppid in holders and state != "Z":
                return ppid, pid, holders[ppid]
        return None

    def task_runner_pid(self, dag_id: str, run_id: str, task_id: str) -> int | None:
        """The pid of the process running one task instance's code now, if there is one.

        Killing it is a worker crash (the supervisor reports the try failed); see
        :meth:`task_process`.
        """
        found = self.task_process(dag_id, run_id, task_id)
        return found[1] if found else None

    def worker_of(self, dag_id: str, run_id: str, task_id: str, try_number: int | None = None) -> str | None:
        """The name of the Celery worker (``worker-1``/``worker-2``) running a task now, if any."""
        found = self.task_process(dag_id, run_id, task_id, try_number)
        if found is None:
            return None
        leaders = {proc.pid: name for name, proc in self.processes.items()}
        return leaders.get(found[2])

    # -- secrets ---------------------------------------------------------------------------

    def files_holding(self, secret: str) -> list[Path]:
        """Every process log and task log (triggers' included) that contains ``secret``."""
        files = [
            *(p for p in self.task_log_dir.rglob("*") if p.is_file()),
            *(p for p in self.process_log_dir.glob("*.log")),
        ]
        return [p for p in files if secret.encode() in p.read_bytes()]


def stack_environment(
    base: Path, port: int, simulator: GatewaySimulator, database_url: str, broker_url: str, statsd_port: int
) -> dict[str, str]:
    """The Airflow processes' environment: inherited AIRFLOW* variables stripped, then set anew."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and not k.startswith("TFY_")}
    home = base / "home"
    base_url = f"http://127.0.0.1:{port}"
    connection = {"conn_type": "truefoundry", "host": simulator.url, "password": simulator.api_key}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(base / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database_url,
        AIRFLOW__CELERY__BROKER_URL=broker_url,
        # Airflow's metrics, the provider's truefoundry.* counters among them, to the test's listener.
        AIRFLOW__METRICS__STATSD_ON="True",
        AIRFLOW__METRICS__STATSD_HOST="127.0.0.1",
        AIRFLOW__METRICS__STATSD_PORT=str(statsd_port),
        AIRFLOW__METRICS__STATSD_PREFIX=STATSD_PREFIX,
        # Celery's task states go to the metadata database (SQLAlchemy, its default driver).
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+{database_url}",
        AIRFLOW__CELERY__WORKER_CONCURRENCY=str(WORKER_CONCURRENCY),
        # The scheduler gives Redis 1 s by default to take a task; a busy 2-core machine can be
        # slower, and a send that times out is only tried again at the next scheduler loop.
        AIRFLOW__CELERY__OPERATION_TIMEOUT="10",
        AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=str(TASK_HEARTBEAT_TIMEOUT),
        AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL=str(
            TASK_HEARTBEAT_TIMEOUT_CHECK_SECONDS
        ),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=base_url,
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{base_url}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET=base64.b64encode(secrets.token_bytes(64)).decode(),
        AIRFLOW__API__SECRET_KEY=secrets.token_hex(32),
        AIRFLOW__CORE__FERNET_KEY=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        # Task processes heartbeat every second: see the race notes in test_real_stack.py.
        AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL="1",
        # At most this many tasks running at once, as the two workers' slots (deferred tasks hold
        # none). More task processes starting at once only queue up on two cores and on the one
        # api-server worker, whose execution API every task start and heartbeat goes through.
        AIRFLOW__CORE__PARALLELISM=str(WORKER_CONCURRENCY * len(WORKERS)),
        # A task's calls to the execution API give up after 5 s by default (5 tries); on a busy
        # 2-core CI machine the api-server can take longer, which fails the task before it runs.
        AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT="30",
        AIRFLOW__TRIGGERER__CAPACITY=str(TRIGGERER_CAPACITY),
        # The scheduler's own check of deferral timeouts (every 15 s by default) is a backstop
        # that would race the trigger's deadline, which is what the deadline scenario tests.
        AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL="3600",
        AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC=str(TRIGGERER_HEARTBEAT_SEC),
        AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD=str(TRIGGERER_HEALTH_CHECK_THRESHOLD),
        AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT=json.dumps(connection),
        # Read when the example DAG file is parsed: poll every second, give up after 15 minutes.
        TFY_EXAMPLE_POKE_INTERVAL="1",
        TFY_EXAMPLE_TIMEOUT="900",
        PYTHONUNBUFFERED="1",
    )
    return env
