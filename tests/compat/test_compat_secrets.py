"""The API key appears in no output of a DAG run, on every Airflow line.

``dag.test()`` runs the tasks, the deferred wait included, in this process: whatever the
provider or Airflow prints or logs on its behalf reaches this process's stdout, stderr or
logging, so all three are searched for the key.

Airflow 3.0.x leaks the key on its own: under ``dag.test()`` its in-process supervisor logs
every request a task sends it at debug, whatever the logging level, and ``mask_secret`` sends
``MaskSecret(value=<the secret>)`` for every connection password it reads, so any provider's key
shows up there (``Sending request msg=MaskSecret(value=...)``). Only that line, only on 3.0.x, is
told apart; on 3.0.x the test also checks that the leak it tells apart is really Airflow's.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from compat_helpers import AIRFLOW_30, task_states

from airflow_provider_tfy.testing import GatewaySimulator

# Airflow 3.0's InProcessSupervisorComms.send: `log.debug("Sending request", msg=msg)`.
AIRFLOW_30_SUPERVISOR_LEAK = re.compile(r"Sending request.*\bmsg=MaskSecret\(value=")

MODES = {
    "poke": "poke_dag",
    "reschedule": "reschedule_dag",
    "deferrable": "deferrable_dag",
}


def is_airflows_own_leak(line: str) -> bool:
    """Whether ``line`` is Airflow 3.0.x's supervisor logging a MaskSecret request."""
    return AIRFLOW_30 and AIRFLOW_30_SUPERVISOR_LEAK.search(line) is not None


@pytest.fixture
def secret_key() -> str:
    return f"tfy-compat-secret-{secrets.token_hex(16)}"


@pytest.fixture
def gateway_with_secret_key(secret_key: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewaySimulator]:
    """A simulator with a key of this test's own, and ``truefoundry_default`` pointing at it."""
    with GatewaySimulator(api_key=secret_key) as sim:
        conn = {"conn_type": "truefoundry", "host": sim.url, "password": secret_key}
        monkeypatch.setenv("AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT", json.dumps(conn))
        yield sim


@pytest.mark.parametrize("mode", list(MODES))
def test_dag_run_prints_and_logs_the_key_nowhere(
    mode: str,
    example_dags: ModuleType,
    airflow_db: Path,
    gateway_with_secret_key: GatewaySimulator,
    secret_key: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = gateway_with_secret_key
    job = sim.add_job(statuses=("queued", "running", "succeeded"))

    run = getattr(example_dags, MODES[mode]).test(run_conf={"job_id": job.id})

    assert sim.request_count(job.id) >= 1  # the key was really used
    out, err = capfd.readouterr()
    outputs = {
        "stdout": out,
        "stderr": err,
        "the log records": "\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records),
        "the formatted log": caplog.text,
        **{
            f"the task log {path.relative_to(airflow_db)}": path.read_text(errors="replace")
            for path in sorted((airflow_db / "logs").rglob("*"))
            if path.is_file()
        },
    }
    leaks = [
        (where, line) for where, text in outputs.items() for line in text.splitlines() if secret_key in line
    ]

    assert [(where, line[:300]) for where, line in leaks if not is_airflows_own_leak(line)] == []
    if AIRFLOW_30:
        # Control: the one exemption matches what Airflow 3.0 really prints, so it is not dead.
        assert leaks, "Airflow 3.0's supervisor no longer logs MaskSecret: drop the exemption"
    # The run as a whole, checked after the output so a leak is reported even when the run fails.
    # Airflow 3.0.x's dag.test() fails any reschedule-mode sensor at its second poke (its own
    # bug: see compat_helpers.airflow_30_dag_test_reschedule_bug); the output is still checked.
    expected = "failed" if AIRFLOW_30 and mode == "reschedule" else "success"
    assert run.state == expected, task_states(run)


def test_the_exemption_is_narrow() -> None:
    leak = "[debug   ] Sending request   msg=MaskSecret(value='kkkk', name=None, type='MaskSecret')"
    assert is_airflows_own_leak(leak) is AIRFLOW_30
    # Any other line with the key, on 3.0 too, is a leak.
    assert not is_airflows_own_leak("Sending request msg=GetConnection(conn_id='x') password=kkkk")
    assert not is_airflows_own_leak("MaskSecret(value='kkkk')")
    assert not is_airflows_own_leak("Got response msg=ConnectionResult(password='kkkk')")
