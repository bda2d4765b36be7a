"""Every Airflow import of the provider and the example DAG goes through the compat provider.

``airflow.providers.common.compat`` resolves each name to wherever the running version keeps it,
so one import works from Airflow 2.11 to 3.3 without deprecation warnings; the few behaviour
differences it leaves are in ``airflow_provider_tfy.version_compat``. A new direct
``airflow.*`` import must be added below with the reason it is safe on every version.
"""

from __future__ import annotations

import ast

from compat_helpers import EXAMPLE_DAG_FILE, PACKAGE_DIR

COMPAT = "airflow.providers.common.compat"
DIRECT_IMPORTS_ALLOWED = {
    # The compat provider has no BaseTrigger/TriggerEvent/StartTriggerArgs: the module is the same,
    # and not deprecated, on 2.11 to 3.3 (the trigger runs in the triggerer, not the task SDK; the
    # sensor imports it only for start_from_trigger).
    "airflow.triggers.base": (
        "airflow_provider_tfy/triggers/fine_tuning.py",
        "airflow_provider_tfy/sensors/fine_tuning.py",
    ),
    # The optional OpenLineage provider's own class, imported only when that provider is installed
    # and asks the task for its lineage (it has no compat-layer alias).
    "airflow.providers.openlineage.extractors": ("airflow_provider_tfy/lineage.py",),
    # How on_kill asks Airflow how this try ended: each imported only on its own line (3.0+: the
    # task SDK; 2.x: the metadata DB), inside the function, when a kill happens.
    "airflow.sdk.execution_time.task_runner": ("airflow_provider_tfy/operators/_interruption.py",),
    "airflow.models.taskinstance": ("airflow_provider_tfy/operators/_interruption.py",),
}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of nodes under ``if TYPE_CHECKING:``: never imported at run time, on any version."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    return skipped


def _airflow_imports(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    found = []
    tree = ast.parse(source, filename)
    type_checking = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name) for name in names if name == "airflow" or name.startswith("airflow.")]
    return found


def test_airflow_is_imported_only_through_the_compat_provider() -> None:
    files = [*sorted(PACKAGE_DIR.rglob("*.py")), EXAMPLE_DAG_FILE]
    offending = []
    for path in files:
        where = path.relative_to(PACKAGE_DIR.parent) if path.is_relative_to(PACKAGE_DIR) else path.name
        for lineno, module in _airflow_imports(path.read_text(), str(path)):
            if module == COMPAT or module.startswith(COMPAT + "."):
                continue
            if str(where) in DIRECT_IMPORTS_ALLOWED.get(module, ()):
                continue
            offending.append(f"{where}:{lineno}: {module}")

    assert offending == []
    assert len(files) > 10  # the scan saw the package


def test_the_scan_skips_only_type_checking_imports() -> None:
    source = """
from typing import TYPE_CHECKING
import airflow.models
if TYPE_CHECKING:
    from airflow.sdk import Context
def f():
    from airflow.sdk import ObjectStoragePath
"""
    assert _airflow_imports(source) == [(3, "airflow.models"), (7, "airflow.sdk")]
