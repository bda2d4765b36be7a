"""Helpers of the cross-version smoke suite (``tests/compat``), shared by its test modules.

Where Airflow itself differs between versions (reading XCom, the CLI's output), the difference is
handled here, in the tests, never by weakening an assertion.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
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
airflow_30_dag_test_reschedule_bug = pytest.mark.xfail(
    AIRFLOW_30,
    strict=True,
    reason="Airflow 3.0.x dag.test(): TaskRescheduleStartDate.start_date arrives as a str (fixed in 3.1)",
)


def sensor_modes(*modes: str) -> list[Any]:
    """``modes`` as pytest params, reschedule mode marked with Airflow 3.0.x's own dag.test() bug."""
    mark = airflow_30_dag_test_reschedule_bug
    return [pytest.param(m, marks=mark) if m == "reschedule" else m for m in modes]


_module_counter = itertools.count()


def airflow_cli(*args: str, timeout: float = 180) -> str:
    """Run the running environment's ``airflow`` CLI and return its stdout (fail on non-zero)."""
    # Imported here: fresh interpreters import this module with only tests/compat on sys.path.
    from airflow_cli import run_airflow

    return run_airflow(*args, timeout=timeout)


def airflow_cli_json(*args: str) -> Any:
    """Run an ``airflow ... -o json`` command and parse its output.

    Some versions print a stray line (a first-run notice, a warning) before the JSON document.
    """
    out = airflow_cli(*args, "--output", "json")
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
