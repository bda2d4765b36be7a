"""Where the Airflow versions we support differ and ``airflow.providers.common.compat`` does not help."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.version_compat import (
    AIRFLOW_V_3_0_PLUS,
    AIRFLOW_V_3_1_PLUS,
    AIRFLOW_V_3_3_PLUS,
)
from airflow.providers.common.compat.version_compat import (
    get_base_airflow_version_tuple as get_base_airflow_version_tuple,
)

#: How ``start_from_trigger`` works: "rendered" (3.3+: the triggerer renders the trigger kwargs),
#: "literal" (2.10-3.0: nothing rendered), or None: 3.1-3.2's scheduler has it commented out
#: (apache/airflow#54646) and would silently run the task in a worker instead.
START_FROM_TRIGGER = "rendered" if AIRFLOW_V_3_3_PLUS else None if AIRFLOW_V_3_1_PLUS else "literal"


def run_parent_execute(parent: Any, context: Any) -> Any:
    """Return ``parent.execute(context)``, for ``parent = super()`` inside an operator's ``execute``.

    Airflow 2.10-2.11's ExecutorSafeguard takes that call for a stray one (apache/airflow#41470), so
    there the undecorated ``execute`` is called: the guard already checked the outer call.
    """
    if AIRFLOW_V_3_0_PLUS:
        return parent.execute(context)
    execute = parent.execute
    unguarded = getattr(execute, "__wrapped__", None)
    return execute(context) if unguarded is None else unguarded(execute.__self__, context)
