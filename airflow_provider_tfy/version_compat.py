"""Where the Airflow versions we support differ and ``airflow.providers.common.compat`` does not help."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.version_compat import (
    AIRFLOW_V_3_0_PLUS,
    AIRFLOW_V_3_1_PLUS,
    AIRFLOW_V_3_3_PLUS,
    get_base_airflow_version_tuple,
)

__all__ = [
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "START_FROM_TRIGGER",
    "get_base_airflow_version_tuple",
    "run_parent_execute",
]

#: How a task's ``start_from_trigger`` works here: "rendered" (3.3+: the triggerer renders the
#: templated trigger kwargs), "literal" (2.10-3.0: the task starts there, but nothing is rendered),
#: or None: 3.1-3.2's scheduler has it commented out (apache/airflow#54646) and would silently run
#: the task in a worker instead. The asset state store the event watcher needs also came in 3.3.
START_FROM_TRIGGER = "rendered" if AIRFLOW_V_3_3_PLUS else None if AIRFLOW_V_3_1_PLUS else "literal"


def run_parent_execute(parent: Any, context: Any) -> Any:
    """Return ``parent.execute(context)``, for ``parent = super()`` inside an operator's ``execute``.

    Airflow 2.10-2.11's ExecutorSafeguard takes the parent's ``execute`` for a stray call
    (apache/airflow#41470: a log line, and a failure with ``allow_nested_operators=False``), so
    there the parent's undecorated ``execute`` is called; the guard already checked the outer call.
    """
    if AIRFLOW_V_3_0_PLUS:
        return parent.execute(context)
    execute = parent.execute
    unguarded = getattr(execute, "__wrapped__", None)
    return execute(context) if unguarded is None else unguarded(execute.__self__, context)
