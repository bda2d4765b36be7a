"""The fault matrix: every fault the gateway can produce, in poke, reschedule and deferrable mode.

Each row scripts the simulator, runs a two-task DAG (the sensor, then a task that receives its
XCom) with ``dag.test()``, and asserts the gate's end state, an upper bound on the requests the
gateway saw for the job, and, on success, that the XCom is the complete job the gateway last
served. The same rows render the docs' table (docs/reliability.md) (:func:`fault_matrix_markdown`).

Expected outcomes follow the package's policy (``protocol.py``): 429, 5xx, connection errors,
timeouts and a 200 whose body is not JSON are retried within a call and then waited through by
the sensor; JSON of the wrong shape fails at once; an unknown status counts as in progress; a
``Retry-After`` beyond the 60 s cap is not waited for within a call.

Modes: every row runs in poke, reschedule and deferrable mode. ``dag.test()`` runs a rescheduled
sensor again only after sleeping a whole second in its scheduling loop, so reschedule mode costs
about a second per poke.

In deferrable mode the first poke happens in the worker, so faults are scripted after one normal
answer (``Fault.delay(0)``): they then reach the trigger, not only the hook's first call.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jsonschema
import pytest
from airflow.providers.common.compat.sdk import DAG, AirflowSensorTimeout, task
from spec_schema import load_job_schema

from airflow_provider_tfy.exceptions import (
    FineTuningJobCancelled,
    FineTuningJobFailed,
    FineTuningJobNotFound,
    TrueFoundryAPIError,
    TrueFoundryAuthError,
    TrueFoundryResponseError,
)
from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor
from airflow_provider_tfy.testing import Fault, GatewaySimulator, ScriptedJob

from ._support import ATTEMPTS_PER_CALL, CONN_ID, HOOK_PARAMS, check_docs_block, markdown_table, run_dag

POKE_INTERVAL = 0.1
# Rows that end on their own get a timeout they never reach; the timeout rows a short one.
LONG_TIMEOUT = 60.0
SHORT_TIMEOUT = 3.0
# A sensor that times out must end soon after its timeout, not after a long Retry-After.
TIMEOUT_SLACK = 15.0
STATUSES = ("queued", "running", "succeeded")
MODES = ("poke", "reschedule", "deferrable")

SUCCESS, FAILED, TIMEOUT = "success", "failed", "timeout"


@dataclass
class Ctx:
    """What a row's setup may touch: the simulator, cleanups, and work to do when the task starts."""

    sim: GatewaySimulator
    stack: ExitStack
    on_start: list[Callable[[], None]] = field(default_factory=list)
    # From when a 429 was served, the wall-clock time before which Retry-After forbids a request.
    not_before: Callable[[float], float] | None = None


@dataclass(frozen=True)
class Scenario:
    """One row of the matrix."""

    name: str
    scenario: str
    setup: Callable[[Ctx], ScriptedJob]
    outcome: str
    max_requests: int
    error: type[BaseException] | None = None
    timeout: float = LONG_TIMEOUT
    reschedule: bool = True

    @property
    def outcome_text(self) -> str:
        if self.outcome == SUCCESS:
            return "success; XCom is the complete job"
        if self.outcome == TIMEOUT:
            return "sensor timeout (`AirflowSensorTimeout`)"
        assert self.error is not None
        return f"failed (`{self.error.__name__}`)"


# --------------------------------------------------------------------------------------------
# Setups
# --------------------------------------------------------------------------------------------


def job(*faults: Fault, statuses: tuple[str, ...] = STATUSES, **kwargs: Any) -> Callable[[Ctx], ScriptedJob]:
    """A job whose first answer is normal and whose next answers are ``faults``, then normal again."""

    def setup(ctx: Ctx) -> ScriptedJob:
        queued = [Fault.delay(0), *faults] if faults else []
        return ctx.sim.add_job(statuses=statuses, faults=queued, **kwargs)

    return setup


def body(**fields: Any) -> Fault:
    """A 200 answer with exactly this JSON body."""
    return Fault.malformed(body=json.dumps(fields))


def retry_after_seconds(seconds: int) -> Callable[[Ctx], ScriptedJob]:
    def setup(ctx: Ctx) -> ScriptedJob:
        ctx.not_before = lambda served_at: served_at + seconds
        return job(Fault.rate_limit(seconds))(ctx)

    return setup


def retry_after_date(ahead: float) -> Callable[[Ctx], ScriptedJob]:
    def setup(ctx: Ctx) -> ScriptedJob:
        value = email.utils.formatdate(time.time() + ahead, usegmt=True)
        when = email.utils.parsedate_to_datetime(value).timestamp()
        ctx.not_before = lambda served_at: when
        return job(Fault.rate_limit(value))(ctx)

    return setup


def outage(failures: int | None, fault: Fault | None = None) -> Callable[[Ctx], ScriptedJob]:
    """Every request fails (503 by default): for ``failures`` requests, or until the test ends."""

    def setup(ctx: Ctx) -> ScriptedJob:
        if failures is None:
            ctx.sim.outage(fault=fault)
        else:
            calls = itertools.count(1)
            ctx.sim.outage(until=lambda: next(calls) > failures, fault=fault)
        ctx.stack.callback(ctx.sim.end_outage)
        return ctx.sim.add_job(statuses=STATUSES)

    return setup


def refused_for(seconds: float) -> Callable[[Ctx], ScriptedJob]:
    """Nothing listens on the gateway's port from the task's start until ``seconds`` later."""

    def setup(ctx: Ctx) -> ScriptedJob:
        scripted = ctx.sim.add_job(statuses=STATUSES)
        ctx.sim.stop()
        timer = threading.Timer(seconds, ctx.sim.start)
        started = threading.Event()

        def start_timer() -> None:
            if not started.is_set():
                started.set()
                timer.start()

        ctx.on_start.append(start_timer)

        def cleanup() -> None:
            timer.cancel()
            if started.is_set():
                timer.join()

        ctx.stack.callback(cleanup)
        return scripted

    return setup


def burst(status: int, count: int = 4) -> Scenario:
    return Scenario(
        f"burst_{status}",
        f"Burst of {count} HTTP {status} (more than one call's {ATTEMPTS_PER_CALL} attempts)",
        job(*[Fault.server_error(status)] * count),
        SUCCESS,
        len(STATUSES) + count,
    )


_HTML_PAGE = "<html><body><h1>Please sign in to the corporate proxy</h1></body></html>"
_FOREVER_TIMEOUT_POKES = math.floor(SHORT_TIMEOUT / POKE_INTERVAL) + 2

SCENARIOS: list[Scenario] = [
    Scenario("healthy", "Healthy job: queued, running, succeeded", job(), SUCCESS, 3, reschedule=True),
    Scenario(
        "job_failed",
        "Job ends `failed`",
        job(statuses=("queued", "running", "failed")),
        FAILED,
        3,
        FineTuningJobFailed,
        reschedule=True,
    ),
    Scenario(
        "job_cancelled",
        "Job ends `cancelled`",
        job(statuses=("queued", "cancelled")),
        FAILED,
        2,
        FineTuningJobCancelled,
    ),
    Scenario(
        "429_retry_after_seconds",
        "429 with `Retry-After: 1` (seconds); the next request waits for it",
        retry_after_seconds(1),
        SUCCESS,
        4,
        reschedule=True,
    ),
    Scenario(
        "429_retry_after_date",
        "429 with `Retry-After` as an HTTP date about 2 s ahead; the next request waits for it",
        retry_after_date(2.0),
        SUCCESS,
        4,
    ),
    Scenario(
        "429_no_retry_after",
        "429 twice without `Retry-After` (exponential backoff)",
        job(Fault.rate_limit(), Fault.rate_limit()),
        SUCCESS,
        5,
    ),
    Scenario(
        "429_retry_after_over_cap",
        "429 with `Retry-After: 120` (over the 60 s cap) on every request; "
        f"sensor timeout {SHORT_TIMEOUT:g} s",
        outage(None, Fault.rate_limit(120)),
        TIMEOUT,
        _FOREVER_TIMEOUT_POKES,
        timeout=SHORT_TIMEOUT,
        reschedule=True,
    ),
    burst(500),
    burst(502),
    burst(503),
    burst(504),
    Scenario(
        "connection_refused",
        "Connection refused for the task's first second (gateway down, then back)",
        refused_for(1.0),
        SUCCESS,
        3,
        reschedule=True,
    ),
    Scenario(
        "connection_reset",
        "Connection reset (TCP RST, no answer) twice",
        job(Fault.reset(), Fault.reset()),
        SUCCESS,
        5,
        reschedule=True,
    ),
    Scenario(
        "slower_than_read_timeout",
        f"Gateway answers after {2 * HOOK_PARAMS['timeout']:g} s, read timeout {HOOK_PARAMS['timeout']:g} s",
        job(Fault.delay(2 * HOOK_PARAMS["timeout"])),
        SUCCESS,
        4,
        reschedule=True,
    ),
    Scenario(
        "truncated_body",
        "Truncated body (Content-Length promises more, connection closes) twice",
        job(Fault.truncated(), Fault.truncated()),
        SUCCESS,
        5,
        reschedule=True,
    ),
    Scenario(
        "html_error_page",
        "HTML error page from a load balancer (502, `text/html`) twice",
        job(Fault.html_error(502), Fault.html_error(502)),
        SUCCESS,
        5,
    ),
    Scenario(
        "html_page_200",
        "HTML page with HTTP 200 (a captive proxy)",
        job(Fault.malformed(body=_HTML_PAGE, content_type="text/html")),
        SUCCESS,
        4,
    ),
    Scenario(
        "malformed_json",
        "Malformed JSON with HTTP 200",
        job(Fault.malformed()),
        SUCCESS,
        4,
        reschedule=True,
    ),
    Scenario(
        "missing_required_field",
        "Job without `status`",
        job(body(object="fine_tuning.job", id="ftjob-x", model="m")),
        FAILED,
        2,
        TrueFoundryResponseError,
        reschedule=True,
    ),
    Scenario(
        "missing_optional_fields",
        "In-progress answer with only `object`, `id` and `status`",
        job(body(object="fine_tuning.job", id="ftjob-x", status="running")),
        SUCCESS,
        4,
    ),
    Scenario(
        "extra_fields",
        "Extra fields the spec does not know (kept in the XCom)",
        job(extra_fields={"user_provided_suffix": "nightly", "x_gateway_trace": {"region": "eu"}}),
        SUCCESS,
        3,
    ),
    Scenario(
        "wrong_types",
        'Wrong type: `"created_at": "yesterday"`',
        job(body(object="fine_tuning.job", id="ftjob-x", status="running", created_at="yesterday")),
        FAILED,
        2,
        TrueFoundryResponseError,
    ),
    Scenario(
        "json_array_body",
        "Wrong type: the body is a JSON array",
        job(Fault.malformed(body="[]")),
        FAILED,
        2,
        TrueFoundryResponseError,
    ),
    Scenario(
        "unknown_status",
        "Unknown status (`pausing_for_maintenance`) before running (counts as in progress)",
        job(statuses=("queued", "pausing_for_maintenance", "running", "succeeded")),
        SUCCESS,
        4,
        reschedule=True,
    ),
    Scenario(
        "status_backwards",
        "Status goes backwards: running, queued, running, succeeded",
        job(statuses=("running", "queued", "running", "succeeded")),
        SUCCESS,
        4,
    ),
    Scenario(
        "bad_request",
        "HTTP 400 (not retried)",
        job(Fault.status(400)),
        FAILED,
        2,
        TrueFoundryAPIError,
    ),
    Scenario(
        "key_revoked",
        "HTTP 401 while waiting (key revoked)",
        job(Fault.status(401)),
        FAILED,
        2,
        TrueFoundryAuthError,
    ),
    Scenario(
        "job_vanished",
        "HTTP 404 while waiting (job deleted)",
        job(Fault.status(404)),
        FAILED,
        2,
        FineTuningJobNotFound,
        reschedule=True,
    ),
    Scenario(
        "outage_shorter_than_timeout",
        f"Outage (503) for 7 requests: longer than the hook's {ATTEMPTS_PER_CALL} attempts, "
        "shorter than the sensor's timeout",
        outage(7),
        SUCCESS,
        7 + len(STATUSES),
        reschedule=True,
    ),
    Scenario(
        "outage_longer_than_timeout",
        f"Outage (503) longer than the sensor's timeout ({SHORT_TIMEOUT:g} s)",
        outage(None),
        TIMEOUT,
        ATTEMPTS_PER_CALL * _FOREVER_TIMEOUT_POKES,
        timeout=SHORT_TIMEOUT,
        reschedule=True,
    ),
]


def fault_matrix_markdown() -> str:
    """The fault-matrix table of docs/reliability.md, generated from :data:`SCENARIOS`."""
    params = ", ".join(f"{name}={value:g}" for name, value in HOOK_PARAMS.items())
    intro = (
        f"Sensor with `poke_interval={POKE_INTERVAL:g}` and `hook_params` `{params}`; requests are "
        "those the gateway saw for the job, asserted in `tests/reliability/test_fault_matrix.py`."
    )
    rows = [
        [
            row.scenario,
            row.outcome_text,
            f"≤ {row.max_requests}",
            ", ".join(mode for mode in MODES if mode != "reschedule" or row.reschedule),
        ]
        for row in SCENARIOS
    ]
    return intro + "\n\n" + markdown_table(["Scenario", "Outcome", "Requests", "Modes"], rows)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _params() -> Iterator[Any]:
    for row in SCENARIOS:
        for mode in MODES:
            if mode == "reschedule" and not row.reschedule:
                continue
            marks: list[Any] = []
            yield pytest.param(row, mode, id=f"{row.name}-{mode}", marks=marks)


def _build_dag(dag_id: str, job_id: str, mode: str, timeout: float, ctx: Ctx, seen: dict[str, Any]) -> DAG:
    def record_failure(context: Any) -> None:
        seen["error"] = context.get("exception")

    def task_started(context: Any) -> None:
        seen.setdefault("started", time.monotonic())
        for callback in ctx.on_start:
            callback()

    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        sensor = TrueFoundryFineTuningJobSensor(
            task_id="wait",
            job_id=job_id,
            truefoundry_conn_id=CONN_ID,
            poke_interval=POKE_INTERVAL,
            timeout=timeout,
            hook_params=HOOK_PARAMS,
            mode="reschedule" if mode == "reschedule" else "poke",
            deferrable=mode == "deferrable",
            retries=0,
            on_failure_callback=record_failure,
            on_execute_callback=task_started,
        )

        @task(task_id="downstream")
        def downstream(job: dict[str, Any]) -> None:
            seen["xcom"] = job

        downstream(sensor.output)
    return dag


@pytest.mark.parametrize(("row", "mode"), list(_params()))
def test_fault_matrix(
    row: Scenario, mode: str, airflow_db: Any, gateway: GatewaySimulator, gateway_conn: str
) -> None:
    seen: dict[str, Any] = {}
    with ExitStack() as stack:
        ctx = Ctx(sim=gateway, stack=stack)
        scripted = row.setup(ctx)
        dag = _build_dag(f"reliability_matrix_{row.name}_{mode}", scripted.id, mode, row.timeout, ctx, seen)
        run = run_dag(dag)
        ended = time.monotonic()
        requests = gateway.request_count(scripted.id)
        records = [record for record in gateway.requests if record.job_id == scripted.id]
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}

    # Bounded: the gate asked, and never more than the row allows.
    assert 1 <= requests <= row.max_requests, f"{requests} requests, bound {row.max_requests}"
    if ctx.not_before is not None:
        limited = next(i for i, record in enumerate(records) if record.status == 429)
        served_at = records[limited].time
        assert len(records) > limited + 1
        assert records[limited + 1].time >= ctx.not_before(served_at) - 0.05, "Retry-After not honoured"

    if row.outcome == SUCCESS:
        assert (str(run.state), states) == ("success", {"wait": "success", "downstream": "success"})
        expected = gateway.get_job(scripted.id).peek()
        assert expected["status"] == "succeeded"
        # Nothing lost: the XCom is the job exactly as the gateway last served it, spec-valid.
        assert seen["xcom"] == expected
        schema = load_job_schema()
        assert set(schema["properties"]) <= set(seen["xcom"])
        jsonschema.validate(seen["xcom"], schema)
        return

    assert (str(run.state), states) == ("failed", {"wait": "failed", "downstream": "upstream_failed"})
    error = seen.get("error")
    assert error is not None
    assert str(error)
    assert gateway.api_key not in str(error)
    if row.outcome == TIMEOUT:
        assert isinstance(error, AirflowSensorTimeout), repr(error)
        elapsed = ended - seen["started"]
        assert elapsed < row.timeout + TIMEOUT_SLACK, f"timed out only after {elapsed:.1f} s"
    else:
        assert not isinstance(error, AirflowSensorTimeout), repr(error)
        assert row.error is not None
        assert isinstance(error, row.error), repr(error)


@pytest.mark.parametrize(
    "mode",
    [
        "poke",
        "reschedule",
        "deferrable",
    ],
)
def test_a_long_retry_after_is_honoured_between_pokes(
    mode: str, airflow_db: Any, gateway: GatewaySimulator, gateway_conn: str
) -> None:
    """Told to come back in 120 s, a gate with a 3 s timeout asks at its start and at the deadline."""
    seen: dict[str, Any] = {}
    with ExitStack() as stack:
        ctx = Ctx(sim=gateway, stack=stack)
        scripted = outage(None, Fault.rate_limit(120))(ctx)
        dag = _build_dag(f"reliability_long_retry_after_{mode}", scripted.id, mode, SHORT_TIMEOUT, ctx, seen)
        run = run_dag(dag)
        requests = gateway.request_count(scripted.id)
    assert str(run.state) == "failed"
    assert isinstance(seen.get("error"), AirflowSensorTimeout)
    assert requests <= 3, f"{requests} requests within a 120 s Retry-After"


def test_fault_matrix_table_in_docs() -> None:
    table = fault_matrix_markdown()
    print(f"\n<!-- fault-matrix:start -->\n{table}\n<!-- fault-matrix:end -->")
    check_docs_block("fault-matrix", table)


def test_scenario_names_are_unique() -> None:
    names = [row.name for row in SCENARIOS]
    assert len(names) == len(set(names))
