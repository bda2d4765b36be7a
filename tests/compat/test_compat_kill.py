"""``on_kill`` asks this Airflow line how the try ended: a plain SIGTERM leaves the job running,
a SIGTERM after the try was marked failed (as the REST API does) cancels it once.

The SIGTERM is sent to the ``dag.test()`` process while the operator waits, as the supervisor
(3.x) or the local task job (2.x) forwards it to the task.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from compat_helpers import AIRFLOW_3, EXAMPLE_DAG_FILE

CREATE = "fine_tune"


def _pipeline_dag(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The example pipeline (in the DAGs folder, so every line's ``dag.test()`` finds it), waiting
    in the worker for at most a few seconds."""
    monkeypatch.setenv("TFY_EXAMPLE_POKE_INTERVAL", "0.2")
    monkeypatch.setenv("TFY_EXAMPLE_TIMEOUT", "3")
    path = EXAMPLE_DAG_FILE.with_name("example_truefoundry_pipeline.py")
    spec = importlib.util.spec_from_file_location("tfy_compat_kill_pipeline", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.pipeline_dag
    task = dag.get_task(CREATE)
    task.deferrable, task.retries, task.retry_delay = False, 0, timedelta(0)
    task.outlets = []  # 3.0's dag.test() leaves the asset inactive, failing the task before it starts
    return dag


def _run_and_kill(sim: Any, dag: Any, mark_failed: bool) -> None:
    sim.set_create_script(statuses=("running",))

    def kill() -> None:
        deadline = time.monotonic() + 60
        while not (sim.created_jobs and sim.request_count(sim.created_jobs[0].id) >= 1):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        if mark_failed:
            from airflow.models.taskinstance import TaskInstance
            from airflow.utils.session import create_session

            with create_session() as session:
                running = session.query(TaskInstance).filter_by(dag_id=dag.dag_id, state="running")
                (ti,) = running.filter_by(task_id=CREATE).all()
                ti.set_state("failed", session=session)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    try:
        dag.test()
    finally:
        killer.join(10)
        signal.signal(signal.SIGTERM, previous)


# Airflow 2.11's dag.test() runs the task inside one uncommitted DB session, so the DB never holds
# the try as running (other sessions read "scheduled"); its LocalTaskJob commits it.
@pytest.mark.skipif(not AIRFLOW_3, reason="Airflow 2.11's dag.test() never commits the running try")
@pytest.mark.parametrize(("mark_failed", "cancels"), [(False, 0), (True, 1)])
def test_on_kill_cancels_only_after_a_persons_mark(
    mark_failed: bool, cancels: int, airflow_db: Any, truefoundry_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = truefoundry_conn()

    _run_and_kill(sim, _pipeline_dag(monkeypatch), mark_failed)

    (job,) = sim.created_jobs
    assert sim.cancel_requests(job.id) == cancels
