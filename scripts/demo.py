"""The demo: the example DAG gates on two fine-tuning jobs served by the gateway simulator.

Runs in a throwaway Airflow home (SQLite, migrated here) with ``dag.test()``: one job succeeds
and hands its model name downstream, one fails with the gateway's reason. Exits 0 when both end
as expected.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from airflow_provider_tfy.testing import GatewaySimulator

ROOT = Path(__file__).resolve().parent.parent
DAG_FILE = ROOT / "example_dags" / "example_truefoundry_fine_tuning.py"
CASES = (
    ("ftjob-demo-succeeded", ("queued", "running", "running", "succeeded"), "success"),
    ("ftjob-demo-failed", ("queued", "running", "failed"), "failed"),
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
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT=json.dumps(conn),
        TFY_EXAMPLE_POKE_INTERVAL="0.5",
        TFY_EXAMPLE_TIMEOUT="120",
    )
    return env


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="tfy-demo-airflow-home-"))
    try:
        with GatewaySimulator() as sim:
            for job_id, statuses, _ in CASES:
                sim.add_job(
                    job_id,
                    statuses=statuses,
                    error={"code": "invalid_training_file", "message": "Line 3 is not valid JSON."},
                    trained_tokens=120_000,
                )
            env = airflow_env(home, sim)
            print(f"Gateway simulator at {sim.url}; Airflow home {home}")
            migrate = subprocess.run(
                [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                env=env,
                capture_output=True,
                text=True,
            )
            if migrate.returncode != 0:
                print(migrate.stdout, migrate.stderr, sep="\n")
                print("airflow db migrate failed; see above.")
                return 1
            os.environ.clear()
            os.environ.update(env)
            return run_cases(sim)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run_cases(sim: GatewaySimulator) -> int:
    # Airflow reads its configuration at import: import it only once the environment is set.
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_truefoundry_fine_tuning", DAG_FILE)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    rows, all_ok = [], True
    for job_id, _, expected in CASES:
        started = time.monotonic()
        run = module.poke_dag.test(run_conf={"job_id": job_id})
        elapsed = time.monotonic() - started
        model = "-"
        if run.state == "success":
            model = pipeline_output(run)
        ok = run.state == expected
        all_ok &= ok
        rows.append((job_id, str(run.state), model, sim.request_count(job_id), f"{elapsed:.1f}s", ok))

    print()
    print(f"{'job':<22} {'run state':<10} {'model':<52} {'polls':>5} {'time':>6}  expected?")
    for job_id, state, model, polls, took, ok in rows:
        print(f"{job_id:<22} {state:<10} {model:<52} {polls:>5} {took:>6}  {'yes' if ok else 'NO'}")
    print()
    print("Demo passed." if all_ok else "Demo FAILED: a run did not end as expected.")
    return 0 if all_ok else 1


def pipeline_output(run: object) -> str:
    """What the downstream task received: the model name it returned, read from XCom."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                run_id=run.run_id,  # type: ignore[attr-defined]
                dag_ids=run.dag_id,  # type: ignore[attr-defined]
                task_ids="register_model",
                key="return_value",
            )
        ).first()
    return str(XComModel.deserialize_value(row[0])) if row else "-"


if __name__ == "__main__":
    sys.exit(main())
