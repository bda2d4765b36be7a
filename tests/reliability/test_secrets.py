"""The API key never leaks, and the gateway's error bodies are cut short.

Where a key could surface: a real task's log on disk, exception messages, trigger events, XCom,
rendered template fields, trigger kwargs, anything else in the metadata DB, and the simulator's
own log. Each test uses a key of its own, so whatever it finds is its own leak.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import DAG, TaskDeferred

from airflow_provider_tfy import protocol
from airflow_provider_tfy.exceptions import (
    FineTuningJobFailed,
    FineTuningJobNotFound,
    TrueFoundryAPIError,
    TrueFoundryAuthError,
    TrueFoundryError,
    TrueFoundryResponseError,
)
from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
from airflow_provider_tfy.operators._wait import job_result
from airflow_provider_tfy.protocol.answers import BODY_EXCERPT_CHARS
from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor
from airflow_provider_tfy.testing import Fault, GatewaySimulator
from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger

from ._support import (
    ATTEMPTS_PER_CALL,
    CONN_ENV,
    CONN_ID,
    HOOK_PARAMS,
    KEY_PREFIX,
    connection_json,
    first_event,
    run_dag,
)

HERE = Path(__file__).resolve().parent
# "A few hundred characters": the excerpt itself, and a whole message around it.
MAX_EXCERPT = BODY_EXCERPT_CHARS
MAX_MESSAGE = 800
ONE_MB = 1024 * 1024


def _echo(key: str) -> bytes:
    return json.dumps({"error": {"message": f"bad key {key} for this tenant", "type": "auth"}}).encode()


def _hook() -> TrueFoundryHook:
    return TrueFoundryHook(CONN_ID, **HOOK_PARAMS)


def _hook_error(job_id: str) -> BaseException:
    with pytest.raises(TrueFoundryError) as caught:
        _hook().get_fine_tuning_job(job_id)
    return caught.value


def _trigger_event(job_id: str) -> dict[str, Any]:
    trigger = TrueFoundryFineTuningJobTrigger(
        job_id=job_id,
        truefoundry_conn_id=CONN_ID,
        poll_interval=0.05,
        deadline=time.time() + 10,
        hook_params=HOOK_PARAMS,
    )
    return first_event(trigger)


def _db_dump(path: Path) -> str:
    """Every row of the SQLite metadata DB as SQL text (BLOBs appear as hex)."""
    with closing(sqlite3.connect(path)) as db:
        return "\n".join(db.iterdump())


def _fragments(key: str, size: int = 12) -> set[str]:
    """Every ``size``-character piece of the key's random part: a prefix leaks too."""
    secret = key.removeprefix(KEY_PREFIX)
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def _assert_absent(key: str, text: str, where: str) -> None:
    assert key not in text, f"the API key appears in {where}"
    assert key.encode().hex().upper() not in text.upper(), f"the API key appears hex-encoded in {where}"
    leaked = sorted(fragment for fragment in _fragments(key) if fragment in text)
    assert not leaked, f"part of the API key appears in {where}: {leaked[0]!r}"


def _own_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Log records of the provider's own loggers (hook, trigger, protocol), not third parties'."""
    return [record for record in caplog.records if "airflow_provider_tfy" in record.name]


# --------------------------------------------------------------------------------------------
# Exceptions and trigger events
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What one answer must give: the hook's exception, and the trigger's first event.

    ``event`` is ``("succeeded", None, None)`` where the answer is transient: the trigger waits
    through it (logging each failure) and then sees the job succeed; otherwise it is the error
    event's ``(status, kind, status_code)``.
    """

    error: type[TrueFoundryError]
    retryable: bool
    event: tuple[str, str | None, int | None]


def _error_event(kind: str, status_code: int | None) -> tuple[str, str | None, int | None]:
    return ("error", kind, status_code)


WAITS_THROUGH = ("succeeded", None, None)

ECHOES = {
    "400_json_message": Expected(TrueFoundryAPIError, False, _error_event("api", 400)),
    "401_json_message": Expected(TrueFoundryAuthError, False, _error_event("auth", 401)),
    "403_json_message": Expected(TrueFoundryAuthError, False, _error_event("auth", 403)),
    "404_json_message": Expected(FineTuningJobNotFound, False, _error_event("not_found", 404)),
    "409_text_body": Expected(TrueFoundryAPIError, False, _error_event("api", 409)),
    "429_json_message": Expected(TrueFoundryAPIError, True, WAITS_THROUGH),
    "503_json_message": Expected(TrueFoundryAPIError, True, WAITS_THROUGH),
    "502_html_page": Expected(TrueFoundryAPIError, True, WAITS_THROUGH),
    "200_not_json": Expected(TrueFoundryResponseError, True, WAITS_THROUGH),
    "302_location": Expected(TrueFoundryAPIError, False, _error_event("api", 302)),
}


def _echo_fault(name: str, key: str) -> Fault:
    status = int(name[:3])
    if name == "302_location":
        return Fault.status(302, body=b"", headers={"Location": f"https://evil.example/steal?k={key}"})
    if name == "502_html_page":
        return Fault.status(502, body=f"<html><body>upstream rejected {key}</body></html>".encode())
    if name in ("409_text_body", "200_not_json"):
        return Fault.status(status, body=f"conflict for key={key}; try later".encode())
    return Fault.status(status, body=_echo(key))


@pytest.mark.parametrize("name", list(ECHOES))
def test_an_error_body_echoing_the_key_never_reaches_an_exception_event_or_log(
    name: str, gateway: GatewaySimulator, gateway_conn: str, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    expected = ECHOES[name]
    caplog.set_level(logging.DEBUG)
    # The fault repeats for retries, so every attempt of the hook and of the trigger sees the echo.
    for _ in range(2 * (HOOK_PARAMS["max_retries"] + 1)):
        gateway.add_fault("ftjob-echo", _echo_fault(name, api_key))
    gateway.add_job("ftjob-echo", statuses=("succeeded",))
    error = _hook_error("ftjob-echo")
    assert type(error) is expected.error, repr(error)
    assert error.retryable is expected.retryable
    assert "***" in str(error)
    _assert_absent(api_key, str(error), "the hook's exception")
    _assert_absent(api_key, repr(error.args), "the hook's exception args")
    _assert_absent(api_key, getattr(error, "body_excerpt", ""), "the exception's body excerpt")
    hook_records = _own_records(caplog)
    # The hook's attempts: every one, if the answer is transient; one otherwise.
    assert gateway.request_count("ftjob-echo") == (ATTEMPTS_PER_CALL if expected.retryable else 1)

    caplog.clear()
    event = _trigger_event("ftjob-echo")
    assert (event["status"], event.get("kind"), event.get("status_code")) == expected.event, event
    if expected.event == WAITS_THROUGH:
        # It waited through the hook's leftover faults (as many as the hook had), then saw the job.
        assert gateway.request_count("ftjob-echo") == 2 * ATTEMPTS_PER_CALL + 1
    else:
        assert "***" in event["message"]
        assert gateway.request_count("ftjob-echo") == 2
    _assert_absent(api_key, json.dumps(event), "the trigger's event")
    trigger_records = _own_records(caplog)
    if expected.retryable:
        # Retried failures are logged with the gateway's message in them: those logs are checked.
        assert hook_records, "the hook logged none of its retries"
        assert trigger_records, "the trigger logged none of the failures it waited through"
        assert all(
            "***" in record.getMessage()
            for record in hook_records + trigger_records
            if record.levelno == logging.WARNING
        )
    for record in hook_records + trigger_records:
        _assert_absent(api_key, record.getMessage(), f"a log record of {record.name}")


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"object": "KEY"}, id="object"),
        pytest.param({"status": ["KEY"]}, id="status"),
        pytest.param({"created_at": "KEY"}, id="created_at"),
    ],
)
def test_a_wrong_shaped_job_echoing_the_key_never_reaches_the_exception(
    fields: dict[str, Any], gateway: GatewaySimulator, gateway_conn: str, api_key: str
) -> None:
    body = {"object": "fine_tuning.job", "id": "ftjob-x", "status": "running"}
    body.update({name: [api_key] if value == ["KEY"] else api_key for name, value in fields.items()})
    gateway.add_job("ftjob-shape", statuses=("running",), faults=[Fault.malformed(body=json.dumps(body))])
    error = _hook_error("ftjob-shape")
    assert isinstance(error, TrueFoundryResponseError)
    _assert_absent(api_key, str(error), "the exception for a wrong-shaped job")


def test_a_failed_jobs_error_message_echoing_the_key_never_reaches_the_exception(
    gateway: GatewaySimulator, gateway_conn: str, api_key: str
) -> None:
    error = {"code": "provider_auth", "message": f"provider rejected key {api_key}"}
    scripted = gateway.add_job(statuses=("failed",), error=error)
    job = _hook().get_fine_tuning_job(scripted.id)
    with pytest.raises(FineTuningJobFailed) as caught:
        job_result(job)
    assert "provider rejected key" in str(caught.value)
    _assert_absent(api_key, str(caught.value), "FineTuningJobFailed")


# --------------------------------------------------------------------------------------------
# Length: error bodies are cut to a few hundred characters
# --------------------------------------------------------------------------------------------


def _huge(name: str) -> Fault:
    if name == "json_message":
        return Fault.status(400, body={"error": {"message": "m" * ONE_MB}})
    if name == "text_body":
        return Fault.status(400, body=b"t" * ONE_MB)
    if name == "html_502":
        return Fault.status(502, body=b"<html>" + b"h" * ONE_MB + b"</html>")
    if name == "not_json_200":
        return Fault.status(200, body=b"{" + b"j" * ONE_MB)
    if name == "location_10kb":
        return Fault.status(307, headers={"Location": "https://elsewhere.example/" + "l" * 10_000})
    raise AssertionError(name)


# The trigger's first event per answer: an error, or (transient answers) the job, once the faults
# left over from the hook's three attempts are used up.
HUGE = {
    "json_message": "error",
    "text_body": "error",
    "html_502": "succeeded",
    "not_json_200": "succeeded",
    "location_10kb": "error",
}


@pytest.mark.parametrize("name", list(HUGE))
def test_huge_error_bodies_are_cut_before_messages_and_logs(
    name: str, gateway: GatewaySimulator, gateway_conn: str, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(6):
        gateway.add_fault("ftjob-huge", _huge(name))
    gateway.add_job("ftjob-huge", statuses=("succeeded",))
    caplog.set_level(logging.DEBUG)

    error = _hook_error("ftjob-huge")
    assert len(str(error)) <= MAX_MESSAGE, len(str(error))
    assert len(getattr(error, "body_excerpt", "")) <= MAX_EXCERPT
    own = _own_records(caplog)
    for record in own:
        assert len(record.getMessage()) <= MAX_MESSAGE + 200, record.getMessage()[:200]

    caplog.clear()
    gateway.reset_counters()
    event = _trigger_event("ftjob-huge")
    assert event["status"] == HUGE[name], event
    if HUGE[name] == "error":
        assert len(event["message"]) <= MAX_MESSAGE, len(event["message"])
    else:
        # It waited through the transient answers: those were logged, and cut short too.
        assert gateway.request_count("ftjob-huge") == ATTEMPTS_PER_CALL + 1
    own = _own_records(caplog)
    assert own or HUGE[name] == "error", "the trigger logged none of the failures it waited through"
    for record in own:
        assert len(record.getMessage()) <= MAX_MESSAGE + 200, record.getMessage()[:200]


def test_a_failed_jobs_huge_error_message_is_cut(gateway: GatewaySimulator, gateway_conn: str) -> None:
    scripted = gateway.add_job(statuses=("failed",), error={"code": "bad_data", "message": "e" * ONE_MB})
    job = _hook().get_fine_tuning_job(scripted.id)
    with pytest.raises(FineTuningJobFailed) as caught:
        job_result(job)
    assert "bad_data" in str(caught.value)
    assert len(str(caught.value)) <= MAX_MESSAGE, len(str(caught.value))


def test_a_huge_wrong_field_value_is_cut_in_the_message(gateway: GatewaySimulator, gateway_conn: str) -> None:
    body = {"object": "o" * ONE_MB, "id": "ftjob-x", "status": "running"}
    gateway.add_job("ftjob-big", statuses=("running",), faults=[Fault.malformed(body=json.dumps(body))])
    error = _hook_error("ftjob-big")
    assert len(str(error)) <= MAX_MESSAGE, len(str(error))


# --------------------------------------------------------------------------------------------
# Masking, trigger kwargs, the metadata DB, the simulator's log
# --------------------------------------------------------------------------------------------


def test_the_hook_registers_the_key_with_airflows_secret_masker(
    gateway: GatewaySimulator, gateway_conn: str, api_key: str
) -> None:
    from airflow.providers.common.compat.sdk import mask_secret as real_mask_secret

    with mock.patch("airflow_provider_tfy.hooks.truefoundry.mask_secret", wraps=real_mask_secret) as spy:
        config = _hook().config
    spy.assert_any_call(api_key)
    assert config.api_key == api_key
    # And the config itself is safe to log or show in a traceback.
    _assert_absent(api_key, repr(config), "repr(GatewayConfig)")
    request = protocol.Gateway(config).retrieve("ftjob-1")
    _assert_absent(api_key, repr(request), "repr(Request)")


def test_trigger_kwargs_hold_no_key(gateway: GatewaySimulator, gateway_conn: str, api_key: str) -> None:
    scripted = gateway.add_job(statuses=("queued", "succeeded"))
    sensor = TrueFoundryFineTuningJobSensor(
        task_id="wait",
        job_id=scripted.id,
        truefoundry_conn_id=gateway_conn,
        provider_name="openai-main",
        metadata={"team": "ml"},
        poke_interval=0.1,
        timeout=30,
        hook_params=HOOK_PARAMS,
        deferrable=True,
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath.endswith("TrueFoundryFineTuningJobTrigger")
    assert kwargs["job_id"] == scripted.id  # the kwargs are the real ones...
    _assert_absent(api_key, json.dumps(kwargs), "the trigger's kwargs")  # ... and hold no key
    assert not {"password", "api_key", "headers", "authorization"} & {name.lower() for name in kwargs}


def _sensors_dag(dag_id: str, jobs: dict[str, str], mode: str, conn_id: str) -> DAG:
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        for task_id, job_id in jobs.items():
            TrueFoundryFineTuningJobSensor(
                task_id=task_id,
                job_id="{{ params.prefix }}" + job_id,
                params={"prefix": ""},
                truefoundry_conn_id=conn_id,
                provider_name="openai-main",
                poke_interval=0.1,
                timeout=30,
                hook_params=HOOK_PARAMS,
                mode="reschedule" if mode == "reschedule" else "poke",
                deferrable=mode == "deferrable",
                retries=0,
            )
    return dag


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_the_metadata_db_never_holds_the_key(
    mode: str, airflow_db: Path, gateway: GatewaySimulator, gateway_conn: str, api_key: str
) -> None:
    """XCom, rendered template fields, trigger kwargs, events: nothing in the DB holds the key."""
    ok = gateway.add_job(statuses=("queued", "succeeded"))
    failed = gateway.add_job(statuses=("queued", "failed"))
    echo = gateway.add_job(faults=[Fault.delay(0), Fault.status(400, body=_echo(api_key))])
    jobs = {"succeeds": ok.id, "fails": failed.id, "echoes_key": echo.id}
    dag = _sensors_dag(f"reliability_secrets_db_{mode}", jobs, mode, gateway_conn)
    run = run_dag(dag)

    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"succeeds": "success", "fails": "failed", "echoes_key": "failed"}
    assert all(record.has_valid_auth for record in gateway.requests)  # the key really was used
    dump = _db_dump(airflow_db / "airflow.db")
    # The dump is the right one and holds what it should: the XCom and the rendered job ids.
    assert ok.fine_tuned_model in dump
    assert f"reliability_secrets_db_{mode}" in dump
    assert echo.id in dump
    _assert_absent(api_key, dump, "the metadata DB")


def test_the_simulators_log_and_records_never_hold_the_key(
    gateway: GatewaySimulator, gateway_conn: str, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="airflow_provider_tfy.testing")
    scripted = gateway.add_job(statuses=("succeeded",), faults=[Fault.server_error(503)])
    _hook().get_fine_tuning_job(scripted.id)
    assert _trigger_event(scripted.id)["status"] == "succeeded"

    records = gateway.requests
    assert len(records) >= 3
    assert all(record.has_valid_auth for record in records)
    for record in records:
        assert record.headers["authorization"] == "<redacted>"
        _assert_absent(api_key, repr(record), "a simulator request record")
    logged = [r for r in caplog.records if r.name.startswith("airflow_provider_tfy.testing")]
    assert logged, "the simulator logged nothing at DEBUG"
    for record in logged:
        _assert_absent(api_key, record.getMessage(), "the simulator's log")


# --------------------------------------------------------------------------------------------
# A real task's log, on disk, through Airflow's own masking
# --------------------------------------------------------------------------------------------

_DAG_FILE = """
from __future__ import annotations

import logging
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor

CONN_ID = {conn_id!r}
HOOK_PARAMS = {hook_params!r}


@task(task_id="key_in_log")
def key_in_log():
    key = TrueFoundryHook(CONN_ID).config.api_key
    print(f"printed key: {{key}}")
    logging.getLogger(__name__).warning("logged key: %s", key)


with DAG(dag_id="reliability_secrets_log", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    for task_id in ("echo_400", "failed_echo"):
        TrueFoundryFineTuningJobSensor(
            task_id=task_id,
            job_id="ftjob-" + task_id,
            truefoundry_conn_id=CONN_ID,
            poke_interval=0.1,
            timeout=30,
            hook_params=HOOK_PARAMS,
            retries=0,
        )
    key_in_log()
"""


def _copy_db(source: Path, target: Path) -> None:
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


@pytest.mark.timeout(240)
def test_a_real_tasks_log_on_disk_never_shows_the_key(
    airflow_db: Path, gateway: GatewaySimulator, api_key: str, tmp_path: Path
) -> None:
    gateway.add_job("ftjob-echo_400", faults=[Fault.status(400, body=_echo(api_key))])
    gateway.add_job(
        "ftjob-failed_echo",
        statuses=("failed",),
        error={"code": "provider_auth", "message": f"provider rejected key {api_key}"},
    )
    home, dags = tmp_path / "home", tmp_path / "dags"
    home.mkdir()
    dags.mkdir()
    _copy_db(airflow_db / "airflow.db", home / "airflow.db")
    (dags / "secrets_log_dag.py").write_text(
        textwrap.dedent(_DAG_FILE).format(conn_id=CONN_ID, hook_params=HOOK_PARAMS), encoding="utf-8"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        **{CONN_ENV: connection_json(gateway.url, api_key)},
    )
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "_task_log_driver.py"),
            "reliability_secrets_log",
            "echo_400",
            "failed_echo",
            "key_in_log",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"task_id"')]
    tasks = {task["task_id"]: task for task in map(json.loads, lines)}
    assert {task_id: task["state"] for task_id, task in tasks.items()} == {
        "echo_400": "failed",
        "failed_echo": "failed",
        "key_in_log": "success",
    }
    _assert_absent(api_key, result.stdout + result.stderr, "the worker's output")

    logs = {task_id: home / "logs" / task["log"] for task_id, task in tasks.items()}
    every_file = [path for path in (home / "logs").rglob("*") if path.is_file()]
    assert set(logs.values()) <= set(every_file)
    for path in every_file:
        _assert_absent(api_key, path.read_text(encoding="utf-8", errors="replace"), f"log file {path.name}")
    # The logs are real, and Airflow's masking is what stands between them and the key.
    echo_log = logs["echo_400"].read_text(encoding="utf-8")
    assert "HTTP 400" in echo_log
    assert "bad key *** for this tenant" in echo_log
    assert "provider rejected key ***" in logs["failed_echo"].read_text(encoding="utf-8")
    key_log = logs["key_in_log"].read_text(encoding="utf-8")
    assert "printed key: ***" in key_log
    assert "logged key: ***" in key_log

    _assert_absent(api_key, _db_dump(home / "airflow.db"), "the worker's metadata DB")


def test_a_400_is_an_api_error_and_not_retried(gateway: GatewaySimulator, gateway_conn: str) -> None:
    # The echo tests above rely on a 400 ending the call at once; pin that here.
    gateway.add_job("ftjob-400", faults=[Fault.status(400)])
    error = _hook_error("ftjob-400")
    assert isinstance(error, TrueFoundryAPIError)
    assert error.status_code == 400
    assert gateway.request_count("ftjob-400") == 1
