"""Helpers for the integration tests: a real gateway simulator, real connections, real Airflow runs.

Nothing here mocks HTTP. Connections are real Airflow connections read from the environment
(``AIRFLOW_CONN_<ID>``); every test uses its own distinctive API key so that a leak is easy to spot.
DAG runs use ``dag.test()`` against the session's migrated SQLite DB (``airflow_db`` from
``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tfy.testing import GatewaySimulator

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAG_FILE = ROOT / "example_dags" / "example_truefoundry_fine_tuning.py"
CONN_ID = "truefoundry_default"
# Fast but real: one retry inside a call, a short backoff.
FAST_HOOK_PARAMS: dict[str, Any] = {"max_retries": 1, "retry_delay": 0.05}
POKE_INTERVAL = 0.2
# Generous: a run that hangs fails on this rather than on pytest's timeout.
EXAMPLE_TIMEOUT = 60.0
# How the sensor waits, as sensor keyword arguments; the example DAG defines one DAG per mode.
MODES: dict[str, dict[str, Any]] = {
    "poke": {"mode": "poke"},
    "reschedule": {"mode": "reschedule"},
    "deferrable": {"deferrable": True},
}
EXAMPLE_DAG_ATTRS = {"poke": "poke_dag", "reschedule": "reschedule_dag", "deferrable": "deferrable_dag"}


# ------------------------------------------------------------------------------------------
# Keys, gateways, connections
# ------------------------------------------------------------------------------------------


def new_api_key() -> str:
    """A distinctive key: any leak of it into a message or a log is unmistakable."""
    return f"tfy-SECRET-{uuid.uuid4().hex}"


@pytest.fixture
def api_key() -> str:
    return new_api_key()


@pytest.fixture
def gateway(api_key: str) -> Iterator[GatewaySimulator]:
    """A started simulator private to one test, accepting ``api_key``."""
    with GatewaySimulator(api_key=api_key) as simulator:
        yield simulator


def connection_json(host: str, password: str | None, extra: dict[str, Any] | None = None) -> str:
    """The JSON form of a truefoundry connection, as ``AIRFLOW_CONN_<ID>`` takes it."""
    conn: dict[str, Any] = {"conn_type": "truefoundry", "host": host}
    if password is not None:
        conn["password"] = password
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


@pytest.fixture
def set_connection(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Define a real Airflow connection through the environment (undone after the test).

    ``set_connection(sim)`` points ``truefoundry_default`` at the simulator with its key;
    ``host``, ``password`` and ``extra`` override the parts.
    """

    def _set(
        sim: GatewaySimulator | None = None,
        *,
        conn_id: str = CONN_ID,
        host: str | None = None,
        password: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        host = host if host is not None else (sim.url if sim else None)
        password = password if password is not None else (sim.api_key if sim else None)
        assert host, "give a simulator or a host"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(host, password, extra))

    return _set


@pytest.fixture
def connected_gateway(gateway: GatewaySimulator, set_connection: Callable[..., None]) -> GatewaySimulator:
    """The simulator, with ``truefoundry_default`` pointing at it."""
    set_connection(gateway)
    return gateway


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_secret_free(secret: str, *texts: object) -> None:
    """Fail if ``secret`` occurs in any of ``texts`` (str() and repr() of each are searched)."""
    for text in texts:
        for rendered in (str(text), repr(text)):
            assert secret not in rendered, f"the API key leaked into: {rendered[:500]}"


def log_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every stdlib log record of the test, formatted (args applied), at any level."""
    return [record.getMessage() for record in caplog.records]


def structlog_lines(text: str, level: str | None = None) -> list[str]:
    """Lines of Airflow's console log output (structlog), optionally only one level's."""
    lines = [line for line in text.splitlines() if line.strip()]
    if level is None:
        return lines
    return [line for line in lines if f"[{level.lower()}" in line]


# ------------------------------------------------------------------------------------------
# Triggers
# ------------------------------------------------------------------------------------------


async def collect_events(trigger: Any) -> list[Any]:
    """Every event ``trigger.run()`` yields, until the generator ends."""
    return [event async for event in trigger.run()]


def run_trigger(trigger: Any, timeout: float = 30.0) -> list[Any]:
    """Run a trigger to its end on a fresh event loop (no pytest-asyncio in this project)."""
    return asyncio.run(asyncio.wait_for(collect_events(trigger), timeout))


# ------------------------------------------------------------------------------------------
# DAGs and dag.test()
# ------------------------------------------------------------------------------------------


@pytest.fixture
def example_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example DAG file's knobs, also seen when ``dag.test()`` re-parses the DAG folder."""
    monkeypatch.setenv("TFY_EXAMPLE_POKE_INTERVAL", str(POKE_INTERVAL))
    monkeypatch.setenv("TFY_EXAMPLE_TIMEOUT", str(EXAMPLE_TIMEOUT))


@pytest.fixture(scope="session")
def example_module(airflow_db: Path) -> Any:
    """The example DAG file, imported once with a short poke interval (it reads env at import)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TFY_EXAMPLE_POKE_INTERVAL", str(POKE_INTERVAL))
        patch.setenv("TFY_EXAMPLE_TIMEOUT", str(EXAMPLE_TIMEOUT))
        spec = importlib.util.spec_from_file_location("tfy_integration_example_dags", EXAMPLE_DAG_FILE)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def example_dag(module: Any, mode: str) -> Any:
    """The example pipeline for one waiting mode."""
    dag = getattr(module, EXAMPLE_DAG_ATTRS[mode])
    sensor = dag.get_task("wait_for_fine_tuning")
    assert sensor.poke_interval == POKE_INTERVAL  # the env knob took effect
    return dag


def register_dag(dag: Any) -> None:
    """Serialize a DAG built in a test into the metadata DB, as the DAG processor would.

    ``dag.test()`` only creates runs for DAGs it finds serialized; DAGs defined in a test are not
    in the DAG folder, so they are written the way the DAG processor writes parsed DAGs.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


def unique_dag_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def build_sensor_dag(
    prefix: str,
    *,
    job_id: str = "{{ params.job_id }}",
    params: dict[str, Any] | None = None,
    upstream_job_id: str | None = None,
    consumer: bool = True,
    **sensor_kwargs: Any,
) -> Any:
    """A small pipeline like the example's, with any sensor settings, registered in the DB.

    ``upstream_job_id``: add a ``create_job`` task returning that id before the sensor (for
    templating ``job_id`` from XCom). ``consumer``: add ``register_model`` after the sensor.
    """
    from airflow.sdk import DAG, task

    from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor

    sensor_kwargs.setdefault("poke_interval", POKE_INTERVAL)
    sensor_kwargs.setdefault("timeout", EXAMPLE_TIMEOUT)
    sensor_kwargs.setdefault("hook_params", dict(FAST_HOOK_PARAMS))
    with DAG(
        dag_id=unique_dag_id(prefix),
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        params=params or {"job_id": "unset"},
    ) as dag:
        sensor = TrueFoundryFineTuningJobSensor(
            task_id="wait_for_fine_tuning", job_id=job_id, truefoundry_conn_id=CONN_ID, **sensor_kwargs
        )
        if upstream_job_id is not None:

            @task
            def create_job() -> str:
                return upstream_job_id

            create_job() >> sensor
        if consumer:

            @task
            def register_model(job: dict[str, Any]) -> str:
                print(f"Registering fine-tuned model {job['fine_tuned_model']}")
                return str(job["fine_tuned_model"])

            register_model(sensor.output)
    register_dag(dag)
    return dag


def task_instances(run: Any) -> dict[str, Any]:
    """The run's task instances by task id, fresh from the DB."""
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = run.get_task_instances(session=session)
        for ti in tis:
            session.expunge(ti)
    return {ti.task_id: ti for ti in tis}


def task_states(run: Any) -> dict[str, str | None]:
    return {task_id: (str(ti.state) if ti.state else None) for task_id, ti in task_instances(run).items()}


def xcom_value(run: Any, task_id: str, key: str = "return_value") -> Any:
    """A task's XCom as stored in the metadata DB (raises if there is none)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key=key)
        ).first()
    if row is None:
        raise LookupError(f"no XCom {key!r} for {task_id!r} in run {run.run_id}")
    return XComModel.deserialize_value(row[0])


def has_xcom(run: Any, task_id: str, key: str = "return_value") -> bool:
    try:
        xcom_value(run, task_id, key)
    except LookupError:
        return False
    return True


def all_xcoms_text(run: Any) -> str:
    """Every XCom row of the run, as stored, in one string (for leak checks)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(XComModel.task_id, XComModel.key, XComModel.value).where(
                XComModel.run_id == run.run_id, XComModel.dag_id == run.dag_id
            )
        ).all()
    return json.dumps([[str(part) for part in row] for row in rows])


def rendered_fields(run: Any) -> dict[str, dict[str, Any]]:
    """The rendered template fields Airflow stored for each task of the run."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(RTIF).where(RTIF.dag_id == run.dag_id, RTIF.run_id == run.run_id)).all()
        return {row.task_id: dict(row.rendered_fields) for row in rows}


def run_dag(dag: Any, capfd: pytest.CaptureFixture[str], **test_kwargs: Any) -> tuple[Any, str]:
    """``dag.test()`` and everything it printed (Airflow's task logs go to the console).

    ``dag.test()`` does not raise when a task fails: callers assert on the returned run.
    """
    capfd.readouterr()  # start from a clean capture
    run = dag.test(**test_kwargs)
    captured = capfd.readouterr()
    return run, captured.out + captured.err
