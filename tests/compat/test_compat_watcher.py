"""The event watcher on every line: its module imports, and it refuses before Airflow 3.3.

The example DAG folder must parse everywhere: the watcher example defines its DAG only on 3.3+.
"""

from __future__ import annotations

import importlib.util

import pytest
from compat_helpers import AIRFLOW_VERSION, ROOT
from packaging.version import Version

from airflow_provider_tfy.exceptions import TrueFoundryConfigError
from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobEventTrigger

WATCHER_EXAMPLE = ROOT / "example_dags" / "example_truefoundry_model_watcher.py"
AIRFLOW_33 = Version("3.3") <= AIRFLOW_VERSION


def test_the_watcher_example_parses_and_has_its_dag_only_on_3_3() -> None:
    spec = importlib.util.spec_from_file_location("tfy_compat_watcher_example", WATCHER_EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert hasattr(module, "watcher_dag") is AIRFLOW_33


@pytest.mark.skipif(AIRFLOW_33, reason="Airflow 3.3+ runs the watcher")
def test_before_3_3_building_the_watcher_names_the_version_it_needs() -> None:
    with pytest.raises(TrueFoundryConfigError, match=r"needs Airflow 3\.3 or later"):
        TrueFoundryFineTuningJobEventTrigger(job_metadata={"team": "nlp"})
