"""Helpers of the cross-version smoke suite (``tests/compat``), shared by its test modules.

Where Airflow itself differs between versions (reading XCom, the CLI's output), the difference is
handled here, in the tests, never by weakening an assertion.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAG_FILE = ROOT / "example_dags" / "example_truefoundry_fine_tuning.py"
PACKAGE_DIR = Path(importlib.util.find_spec("airflow_provider_tfy").origin).parent  # type: ignore[arg-type,union-attr]

AIRFLOW_VERSION = Version(Version(importlib.metadata.version("apache-airflow")).base_version)
AIRFLOW_3 = Version("3.0") <= AIRFLOW_VERSION

AIRFLOW_30 = Version("3.0") <= AIRFLOW_VERSION < Version("3.1")

only_airflow_2 = pytest.mark.skipif(AIRFLOW_3, reason="Airflow 2's Flask UI only")
only_airflow_3 = pytest.mark.skipif(not AIRFLOW_3, reason="Airflow 3's FastAPI UI only")

# Airflow 3.0.x's ``dag.test()`` fails any reschedule-mode sensor whose wait goes on after a
# reschedule (a poke after it returns False): its in-process supervisor hands the task the first
# reschedule date as a string
# (``TaskRescheduleStartDate.model_construct`` skips validation; 3.1 validates), and
# BaseSensorOperator.execute fails on ``utcnow() - start_date`` with a TypeError. (A scheduled
# task decodes the supervisor's answer with validation: a different path, not run here.)
# test_compat_dags.py proves it on a sensor of Airflow's own; strict, so the mark goes once
# Airflow 3.0.x no longer fails.
AIRFLOW_30_RESCHEDULE_BUG = (
    "Airflow 3.0.x dag.test(): TaskRescheduleStartDate.start_date arrives as a str (fixed in 3.1)"
)
airflow_30_dag_test_reschedule_bug = pytest.mark.xfail(
    AIRFLOW_30, strict=True, reason=AIRFLOW_30_RESCHEDULE_BUG
)


_module_counter = itertools.count()


def airflow_cli(*args: str, timeout: float = 180) -> str:
    """Run the running environment's ``airflow`` CLI and return its stdout (fail on non-zero)."""
    # Imported here: fresh interpreters import this module with only tests/compat on sys.path.
    from airflow_cli import run_airflow

    return run_airflow(*args, timeout=timeout)


# The listing commands the suite reads, run together by :func:`_listings` (widgets: Airflow 2 only).
LISTINGS = (("providers", "list"), ("providers", "hooks"), ("plugins",)) + (
    () if AIRFLOW_3 else (("providers", "widgets"),)
)

_LISTINGS_CODE = """
import contextlib, io
from airflow.cli import cli_parser

outputs = {}
for argv in LISTINGS:
    # What `airflow <argv> --output json` runs, after its own parse: the command's function.
    args = cli_parser.get_parser().parse_args([*argv, "--output", "json"])
    with contextlib.redirect_stdout(io.StringIO()) as out:
        args.func(args)
    outputs[" ".join(argv)] = out.getvalue()
result(outputs)
"""


@functools.cache
def _listings() -> dict[str, str]:
    """The output of every command in :data:`LISTINGS`, from one fresh interpreter.

    Each ``airflow`` process spends seconds importing Airflow before it lists anything; one
    interpreter running the CLI's own parser and command functions for all of them costs one
    start-up instead of four, on every Airflow line.
    """
    return run_fresh_python(f"LISTINGS = {LISTINGS!r}\n" + _LISTINGS_CODE)


def airflow_cli_json(*args: str) -> Any:
    """The parsed output of ``airflow ARGS --output json``.

    Some versions print a stray line (a first-run notice, a warning) before the JSON document.
    """
    out = _listings()[" ".join(args)] if args in LISTINGS else airflow_cli(*args, "--output", "json")
    try:
        return json.loads(out)
    except ValueError:
        start = min((i for i in (out.find("["), out.find("{")) if i >= 0), default=-1)
        if start < 0:
            pytest.fail(f"airflow {' '.join(args)} printed no JSON:\n{out[-3000:]}")
        return json.loads(out[start:])


def plain(value: Any) -> Any:
    """An Airflow state enum as its plain string (they are ``str`` enums on every version)."""
    return getattr(value, "value", value)


def load_example_dags(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import a fresh copy of the example DAG file, polling fast and giving up after a minute.

    A fresh module per test, so a test may change a task (e.g. its retries) without touching
    the others.
    """
    monkeypatch.setenv("TFY_EXAMPLE_POKE_INTERVAL", "0.2")
    monkeypatch.setenv("TFY_EXAMPLE_TIMEOUT", "60")
    name = f"tfy_compat_example_dags_{next(_module_counter)}"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE_DAG_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def task_states(run: Any) -> dict[str, tuple[str | None, int]]:
    """``{task_id: (state, try_number)}`` of a finished ``dag.test()`` run."""
    return {ti.task_id: (plain(ti.state), ti.try_number) for ti in run.get_task_instances()}


def xcom_return_value(run: Any, task_id: str) -> Any:
    """A task's return value in a ``dag.test()`` run, read the way the running version stores it."""
    if AIRFLOW_3:
        # Airflow 3 keeps JSON in ``XComModel``; the SDK's XCom API only works inside a task.
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            query = XComModel.get_many(
                run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key="return_value"
            )
            row = session.scalars(query).first()
            return None if row is None else XComModel.deserialize_value(row)
    from airflow.models.xcom import XCom

    return XCom.get_one(run_id=run.run_id, dag_id=run.dag_id, task_id=task_id, key="return_value")


_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)

# Deprecation warnings that older Airflow versions raise for reasons of their own while our code
# runs: our code is on the stack, but the deprecated call is Airflow's, and the same happens to
# any DAG or provider. (first version without it, text it contains, why it is not ours.) From
# Airflow 3.3 on there are none: there, every warning our code causes fails the suite.
AIRFLOW_OWN_WARNINGS = (
    (
        Version("3.0"),
        "Timer and timing metrics publish in seconds were deprecated",
        "Airflow 2's [metrics] timer_unit_consistency notice, given when its stats module first loads",
    ),
    (
        Version("3.1"),
        "Using Connection.get_connection_from_secrets from `airflow.models` is deprecated",
        "3.0 has no task-SDK BaseHook: every hook's get_connection is airflow.hooks.base's, which "
        "reads the connection through the deprecated models method",
    ),
    (
        Version("3.3"),
        "`airflow.operators.branch.BaseBranchOperator` attribute is deprecated",
        "on 3.0-3.1 importing airflow.sdk's `task` loads the standard provider's Python operators, "
        "whose BaseBranchOperator import the compat layer resolves through the deprecated core path",
    ),
    (
        Version("3.3"),
        "Using Connection.from_json from `airflow.models` is deprecated",
        "3.1's environment-variable secrets backend parses AIRFLOW_CONN_* JSON with the deprecated method",
    ),
)


@contextlib.contextmanager
def collect_provider_warnings() -> Iterator[list[str]]:
    """Collect the deprecation warnings that our own code causes while the ``with`` body runs.

    A warning counts as ours when one of the frames that led to it is in the provider package or
    the example DAG file, or when its text names the package: a deprecated Airflow path imported
    through a compat layer warns from the layer's file, not ours, so the file a warning names is
    not enough. Warnings Airflow raises for its own reasons (no frame of ours) pass through to
    the usual handling.
    """
    found: list[str] = []
    with warnings.catch_warnings():
        for category in _CATEGORIES:
            warnings.simplefilter("always", category)
        previous = warnings.showwarning

        def showwarning(message: Any, category: type[Warning], filename: str, lineno: int, *a: Any) -> None:
            if (
                issubclass(category, _CATEGORIES)
                and _caused_by_us(str(message))
                and not _airflows_own(message)
            ):
                found.append(f"{category.__name__} at {filename}:{lineno}: {message}")
            else:
                previous(message, category, filename, lineno, *a)

        warnings.showwarning = showwarning
        yield found


def _airflows_own(message: Any) -> bool:
    text = str(message)
    return any(fixed > AIRFLOW_VERSION and part in text for fixed, part, _ in AIRFLOW_OWN_WARNINGS)


def _caused_by_us(message: str) -> bool:
    if "airflow_provider_tfy" in message:
        return True
    ours = (str(PACKAGE_DIR) + os.sep, str(EXAMPLE_DAG_FILE))
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.startswith(ours):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


_FRESH_PRELUDE = """
import json
import airflow  # Airflow's own import-time warnings are not ours


def result(value):
    print("RESULT " + json.dumps(value, default=str))

"""


def run_fresh_python(code: str, timeout: float = 240) -> Any:
    """Run ``code`` in a fresh interpreter of this environment and return what it passed to ``result()``.

    For what must not see this process's state: modules already imported, or Airflow's
    providers manager already initialised (it initialises once per process, in whatever way the
    first caller asked). ``tests/compat`` is importable there, and the environment is this one's.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), env.get("PYTHONPATH")) if p)
    completed = subprocess.run(
        [sys.executable, "-c", _FRESH_PRELUDE + code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or len(lines) != 1:
        pytest.fail(f"the fresh interpreter exited {completed.returncode}:\n{completed.stderr[-5000:]}")
    return json.loads(lines[0].removeprefix("RESULT "))


# Airflow 3.0's InProcessSupervisorComms.send: `log.debug("Sending request", msg=msg)`.
AIRFLOW_30_SUPERVISOR_LEAK = re.compile(r"Sending request.*\bmsg=MaskSecret\(value=")


def is_airflows_own_leak(line: str) -> bool:
    """Whether ``line`` is Airflow 3.0.x's supervisor logging a MaskSecret request.

    Airflow 3.0.x leaks every connection password on its own: under ``dag.test()`` its
    in-process supervisor logs every request a task sends it at debug, whatever the logging
    level, and ``mask_secret`` sends ``MaskSecret(value=<the secret>)`` for every password it
    reads, so any provider's key shows up there. Only that line, only on 3.0.x, is told apart.
    """
    return AIRFLOW_30 and AIRFLOW_30_SUPERVISOR_LEAK.search(line) is not None


def assert_key_in_no_output(
    key: str, airflow_home: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The key is in no stdout, stderr, log record or task log of the test so far.

    ``dag.test()`` runs the tasks, the deferred wait included, in this process: whatever the
    provider or Airflow prints or logs on its behalf reaches this process's stdout, stderr or
    logging (``caplog`` set to DEBUG by the caller), or the task logs under ``airflow_home``.
    On 3.0.x it also checks that the leak it tells apart is really Airflow's.
    """
    out, err = capfd.readouterr()
    outputs = {
        "stdout": out,
        "stderr": err,
        "the log records": "\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records),
        "the formatted log": caplog.text,
        **{
            f"the task log {path.relative_to(airflow_home)}": path.read_text(errors="replace")
            for path in sorted((airflow_home / "logs").rglob("*"))
            if path.is_file()
        },
    }
    leaks = [(where, line) for where, text in outputs.items() for line in text.splitlines() if key in line]
    assert [(where, line[:300]) for where, line in leaks if not is_airflows_own_leak(line)] == []
    if AIRFLOW_30:
        # Control: the one exemption matches what Airflow 3.0 really prints, so it is not dead.
        assert leaks, "Airflow 3.0's supervisor no longer logs MaskSecret: drop the exemption"
