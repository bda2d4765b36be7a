"""The system tests' one shared stack: Airflow on CeleryExecutor, two workers, two triggerers.

``airflow_stack`` (session-scoped) starts, once for the whole ``tests/system`` suite:

- a :class:`GatewaySimulator` in this process (``stack.simulator``: script jobs with
  ``add_job``/``set_job``, read ``requests``/``request_count``/``created_jobs``/
  ``cancel_requests``; ``stop()``/``start()`` restarts it on the same port);
- a private PostgreSQL cluster (``stack.postgres``, see ``postgres.py``): the metadata database
  and Celery's result backend;
- a private Redis server (``stack.broker``, see ``redis_broker.py``): Celery's broker, on a free
  loopback port, nothing kept on disk;
- api-server, scheduler, dag-processor, ``triggerer-1`` and ``triggerer-2``, and two Celery
  workers ``worker-1`` and ``worker-2`` (``airflow celery worker``, 4 slots each), all on
  loopback, parsing ``example_dags/`` plus ``tests/system/dags/`` (add a DAG file there for a
  new scenario; the DAGs parsed at start are unpaused). The connection ``truefoundry_default``
  points at the simulator. A running try that stops heartbeating is failed (and retried) after
  ``TASK_HEARTBEAT_TIMEOUT`` (20 s), not Airflow's 300 s.

Helpers on the stack (``airflow_stack.py``):

- runs: ``trigger_run(dag_id, job_id) -> run_id``, ``wait_for_runs(dag_id, run_ids, timeout)
  -> {run_id: state}``, ``run_states(dag_id)``;
- tasks: ``task_instances``/``task_states(dag_id, run_id)``, ``xcom(dag_id, run_id, task_id)``,
  ``task_log(dag_id, run_id, task_id, try_number)``, ``events_of(...)`` (event log),
  ``trigger_log_files(...)`` (the trigger's own log, by triggerer job id);
- triggerers: ``triggerer_jobs`` ({process name: TriggererJob id}), ``triggers()`` (trigger rows,
  kwargs decrypted, with their task), ``holders(dag_id, run_ids)`` ({run_id: triggerer job id});
- processes: ``kill(name, sig, group=True, wait=...)``, ``restart(name)`` (waits for a
  triggerer's job or a worker's "ready"), ``start_process(name)``, ``session_pids(name)`` and
  ``signal_session(name, sig)`` (every process of a worker: pool, supervisors, task processes),
  ``process_log(name)``, ``log_tails()``, ``check_alive()``;
- a task's processes: ``task_process(dag_id, run_id, task_id, try_number=None)`` ->
  (supervisor pid, task runner pid, worker session), ``task_runner_pid(...)``, ``worker_of(...)``
  (``worker-1``/``worker-2``);
- database and secrets: ``sql(query, *params)``, ``postgres.dump()``, ``files_holding(secret)``;
- ``wait_until(check, timeout, what)`` (module function) for anything else.

Tests share the stack, so each uses job ids (or training files) of its own and leaves every
process running (restart what you kill or stop). At the end of the session the fixture stops
everything and fails the session (an error at the last test's teardown) if a process of the
stack, the database cluster or the Redis server outlives it, or if the API key is found in any
process log, task log or the database dump.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
from airflow_stack import AirflowStack, free_port, stack_environment
from postgres import PostgresCluster
from redis_broker import RedisServer
from statsd_listener import StatsdListener

from airflow_provider_tfy.testing import GatewaySimulator


@pytest.fixture(scope="session")
def airflow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    """A started, ready stack talking to a gateway simulator; stopped and checked at the end."""
    started = time.monotonic()
    base = tmp_path_factory.mktemp("airflow-stack")
    # A key no Airflow component would print by chance: if it shows up anywhere, it leaked.
    api_key = f"tfy-systest-{secrets.token_hex(16)}"
    # A fixed port, so that a test can stop the simulator and start it again where it was.
    simulator = GatewaySimulator(api_key=api_key, port=free_port()).start()
    postgres = PostgresCluster(free_port())
    broker = RedisServer(free_port())
    metrics = StatsdListener().start()
    stack: AirflowStack | None = None
    problems: list[str] = []
    try:
        postgres.start()
        broker.start()
        port = free_port()
        stack = AirflowStack(
            base=base,
            env=stack_environment(base, port, simulator, postgres.url, broker.url, metrics.port),
            port=port,
            simulator=simulator,
            api_key=api_key,
            postgres=postgres,
            broker=broker,
            metrics=metrics,
        )
        stack.prepare()
        stack.start()
        print(f"\nstack ready in {time.monotonic() - started:.1f} s: {stack.timings}")
        yield stack
    finally:
        if stack is not None:
            leftovers = stack.stop()
            if leftovers:
                problems.append(f"processes of the stack survived teardown (now killed): {leftovers}")
            leaking = stack.files_holding(api_key)
            if leaking:
                problems.append(f"the API key is in these files: {leaking}")
        if postgres.process is not None and stack is not None and api_key in postgres.dump():
            problems.append("the API key is in the metadata database")
        broker_leftovers = broker.stop()
        if broker_leftovers:
            problems.append(f"Redis processes survived teardown (now killed): {broker_leftovers}")
        if broker.base.exists():
            problems.append(f"the Redis folder {broker.base} is still there")
        cluster_leftovers = postgres.stop()
        if cluster_leftovers:
            problems.append(f"PostgreSQL processes survived teardown (now killed): {cluster_leftovers}")
        if postgres.base.exists():
            problems.append(f"the cluster folder {postgres.base} is still there")
        simulator.stop()
        metrics.stop()
        print(f"\nsystem stack session: {time.monotonic() - started:.1f} s")
    if problems:
        pytest.fail("\n".join(problems))
