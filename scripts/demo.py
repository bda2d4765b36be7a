"""The demo: the whole pipeline (upload → fine-tune exactly once → register) on the gateway simulator.

Runs ``example_dags/example_truefoundry_pipeline.py`` with ``dag.test()`` in a throwaway Airflow
home (SQLite, migrated here), three times:

- the gateway's answer to the create is lost (the job IS created, then answered 500): the
  operator looks the job up by its key and reattaches, so the gateway holds one job;
- the wait is interrupted (the gateway answers 400 to a status check): the task retries and
  reattaches to the job it started, still one job;
- the job fails at the gateway: the task fails with the gateway's reason, in one line.

The terminal shows only the summary; Airflow's logs, tracebacks and library warnings go to a log
file whose path is printed. Exits 0 when every run ends as expected.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from airflow_provider_tfy.testing import Fault, GatewaySimulator

ROOT = Path(__file__).resolve().parent.parent
DAG_FILE = ROOT / "example_dags" / "example_truefoundry_pipeline.py"
CREATE_TASK = "fine_tune"
JOB_ERROR = {
    "code": "invalid_training_file",
    "message": "Line 3 is not valid JSON.",
    "param": "training_file",
}


@dataclass
class Case:
    """One run of the pipeline and how the simulated gateway behaves during it."""

    name: str
    expected: str
    reattaches: bool = False
    create_faults: tuple[Fault, ...] = ()
    script: dict[str, Any] = field(default_factory=dict)


CASES = (
    Case(
        "create answer lost",
        "success",
        reattaches=True,
        create_faults=(Fault.applied(then=Fault.server_error(500)),),
    ),
    Case(
        "wait interrupted",
        "success",
        reattaches=True,
        script={
            "statuses": ("running", "running", "succeeded"),
            "faults": [Fault.delay(0), Fault.status(400)],
        },
    ),
    Case("job fails", "failed", script={"statuses": ("queued", "running", "failed"), "error": JOB_ERROR}),
)


def airflow_env(home: Path, sim: GatewaySimulator) -> dict[str, str]:
    """A clean environment for a throwaway Airflow home pointed at the simulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    conn = {"conn_type": "truefoundry", "host": sim.url, "password": sim.api_key}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAG_FILE.parent),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT=json.dumps(conn),
        TFY_EXAMPLE_POKE_INTERVAL="0.3",
        TFY_EXAMPLE_TIMEOUT="120",
        TFY_EXAMPLE_RETRY_DELAY="0",
        PYTHONWARNINGS="default",  # every warning once, into the log file
    )
    return env


def main() -> int:
    log_path = Path(tempfile.mkstemp(prefix="tfy-demo-", suffix=".log")[1])
    # The terminal keeps only the summary: everything else written to fd 1 and 2 (Airflow's
    # task logs, tracebacks of the expected failure, warnings) goes to the log file.
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    home = Path(tempfile.mkdtemp(prefix="tfy-demo-airflow-home-"))
    try:
        with GatewaySimulator() as sim:
            env = airflow_env(home, sim)
            say(terminal, f"Gateway simulator at {sim.url}; Airflow home {home}")
            say(terminal, f"Airflow's logs and tracebacks: {log_path}")
            migrate = subprocess.run(
                [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                env=env,
                stdout=log_fd,
                stderr=log_fd,
            )
            if migrate.returncode != 0:
                say(terminal, f"airflow db migrate failed; see {log_path}")
                return 1
            os.environ.clear()
            os.environ.update(env)
            return run_cases(sim, terminal, log_path)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def say(terminal: TextIO, text: str = "") -> None:
    print(text, file=terminal, flush=True)


def run_cases(sim: GatewaySimulator, terminal: TextIO, log_path: Path) -> int:
    # Airflow reads its configuration at import: import it only once the environment is set.
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_truefoundry_pipeline", DAG_FILE)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.pipeline_dag
    failures: list[str] = []

    def record_failure(context: dict[str, Any]) -> None:
        failures.append(f"{type(context['exception']).__name__}: {context['exception']}")

    dag.get_task(CREATE_TASK).on_failure_callback = [record_failure]

    say(terminal)
    say(
        terminal,
        f"{'run':<20} {'result':<8} {'jobs created':>12} {'tries':>5}  {'reattached':<10} "
        f"{'requests':>8} {'time':>6}  model",
    )
    all_ok = True
    for case in CASES:
        sim.reset_counters()
        sim.set_create_script(**case.script)
        for fault in case.create_faults:
            sim.add_endpoint_fault("create", fault)
        jobs_before, failures_before = len(sim.created_jobs), len(failures)
        log_start = log_path.stat().st_size
        started = time.monotonic()
        run = dag.test()
        elapsed = time.monotonic() - started
        with log_path.open(encoding="utf-8", errors="replace") as log:
            log.seek(log_start)
            reattached = "Reattached to fine-tuning job" in log.read()
        created = len(sim.created_jobs) - jobs_before
        ok = run.state == case.expected and created == 1 and reattached is case.reattaches
        all_ok &= ok
        model = xcom(run, "register_model") if run.state == "success" else "-"
        line = (
            f"{case.name:<20} {run.state!s:<8} {created:>12} {tries(run):>5}  "
            f"{'yes' if reattached else 'no':<10} {len(sim.requests):>8} {elapsed:>5.1f}s  {model}"
        )
        say(terminal, line + ("" if ok else "   <- NOT AS EXPECTED"))
        for reason in failures[failures_before:]:
            say(terminal, f"{'':<20} reason: {reason}")
    say(terminal)
    say(
        terminal, "Demo passed: one job per task and inputs, whatever was lost." if all_ok else "Demo FAILED."
    )
    say(terminal, f"Full logs: {log_path}")
    return 0 if all_ok else 1


def tries(run: Any) -> int:
    """How many tries the create task took."""
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = run.get_task_instance(CREATE_TASK, session=session)
        return int(ti.try_number) if ti else 0


def xcom(run: Any, task_id: str) -> str:
    """What a task returned, read from XCom."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key="return_value")
        ).first()
    return str(XComModel.deserialize_value(row[0])) if row else "-"


if __name__ == "__main__":
    sys.exit(main())
