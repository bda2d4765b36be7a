"""Importing the provider and the example DAG causes no deprecation warning of ours.

Runs in a fresh interpreter, so every module's import-time code really runs (in this process the
suite has long imported them) and Airflow's own start-up warnings are out of the way before ours
are counted. A warning is ours when a frame of the provider package or of the example DAG file
led to it, or its text names the package: a deprecated path reached through a compat layer
warns from the layer's file, so matching on the file a warning names would miss it. Warnings are
recorded rather than raised (``warnings.simplefilter("error", ...)`` would stop at the first one
and turn Airflow-internal ones into failures of ours), and the test fails on any recorded one.
On Airflow 3.3+ nothing is exempt; below it, the few warnings listed in
``compat_helpers.AIRFLOW_OWN_WARNINGS`` are Airflow's own and are let through.
"""

from __future__ import annotations

from compat_helpers import EXAMPLE_DAG_FILE, run_fresh_python

_IMPORT_EVERYTHING = """
import importlib, importlib.util, pkgutil
from compat_helpers import AIRFLOW_3, EXAMPLE_DAG_FILE, collect_provider_warnings

imported = []
with collect_provider_warnings() as found:
    import airflow_provider_tfy

    imported.append(airflow_provider_tfy.__name__)
    for info in pkgutil.walk_packages(airflow_provider_tfy.__path__, "airflow_provider_tfy."):
        importlib.import_module(info.name)
        imported.append(info.name)
    spec = importlib.util.spec_from_file_location("tfy_example_dags", EXAMPLE_DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    imported.append(str(EXAMPLE_DAG_FILE))
    # The DAGs were built at import. Now what a UI does: discover the hook and load its
    # Connections-form metadata (Airflow 3.2+ warns here about a hook that still defines the form
    # in Python without declaring it in the provider info).
    if AIRFLOW_3:
        from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

        HookMetaService.hook_meta_data()
    else:
        from airflow.providers_manager import ProvidersManager

        ProvidersManager().connection_form_widgets
        ProvidersManager().field_behaviours
result({"imported": imported, "warnings": found})
"""


def test_importing_the_provider_and_example_dag_warns_nothing_of_ours() -> None:
    report = run_fresh_python(_IMPORT_EVERYTHING)

    assert report["warnings"] == []
    assert "airflow_provider_tfy.hooks.truefoundry" in report["imported"]
    assert "airflow_provider_tfy.sensors.fine_tuning" in report["imported"]
    assert "airflow_provider_tfy.triggers.fine_tuning" in report["imported"]
    assert str(EXAMPLE_DAG_FILE) in report["imported"]


def test_the_detector_sees_warnings_our_code_causes() -> None:
    """Control: the detector is not blind to the ways a warning of ours shows up."""
    import warnings

    from compat_helpers import PACKAGE_DIR, collect_provider_warnings

    def compat_layer() -> None:  # warns on behalf of its caller, as Airflow's shims do
        warnings.warn("old path", DeprecationWarning, stacklevel=2)

    fake_module = str(PACKAGE_DIR / "_not_a_real_module.py")
    with collect_provider_warnings() as found:
        warnings.warn("a control warning that is not ours", DeprecationWarning, stacklevel=1)
        exec(compile("compat_layer()", fake_module, "exec"), {"compat_layer": compat_layer})
        exec(compile("import warnings; warnings.warn('direct', FutureWarning)", fake_module, "exec"))
        warnings.warn("airflow_provider_tfy.hooks uses something old", DeprecationWarning, stacklevel=1)

    assert len(found) == 3, found
    assert all("not ours" not in f for f in found), found
