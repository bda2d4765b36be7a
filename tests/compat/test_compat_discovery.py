"""Provider discovery: the ``apache_airflow_provider`` entry point, as each version reads it."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from compat_helpers import AIRFLOW_3, airflow_cli_json

import airflow_provider_tfy
from airflow_provider_tfy.provider_info import CONN_TYPE, HOOK_CLASS, HOOK_NAME

PACKAGE = "airflow-provider-tfy"


def test_airflow_providers_list_shows_the_provider() -> None:
    providers = {p["package_name"]: p for p in airflow_cli_json("providers", "list")}

    assert PACKAGE in providers, sorted(providers)
    assert providers[PACKAGE]["version"] == importlib.metadata.version(PACKAGE)
    assert providers[PACKAGE]["version"] == airflow_provider_tfy.__version__


def test_airflow_providers_hooks_lists_the_connection_type() -> None:
    hooks = {h["connection_type"]: h for h in airflow_cli_json("providers", "hooks")}

    assert hooks[CONN_TYPE]["class"] == HOOK_CLASS
    assert hooks[CONN_TYPE]["package_name"] == PACKAGE


def _hooks_manager() -> Any:
    """The manager that resolves hooks: the task SDK's from Airflow 3.2 (core's ``hooks`` is
    deprecated there), the core ``ProvidersManager`` before."""
    try:
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:
        from airflow.providers_manager import ProvidersManager

        return ProvidersManager()
    return ProvidersManagerTaskRuntime()


def test_providers_manager_knows_the_hook_and_the_connection_type() -> None:
    manager = _hooks_manager()

    assert PACKAGE in manager.providers
    assert manager.providers[PACKAGE].data["package-name"] == PACKAGE
    # Reading ``hooks`` imports the hook class: a failing import would drop the entry.
    hook = manager.hooks[CONN_TYPE]
    assert hook is not None
    assert hook.hook_class_name == HOOK_CLASS
    assert hook.connection_type == CONN_TYPE
    assert hook.hook_name == HOOK_NAME
    assert hook.connection_testable  # the UI's Test button calls TrueFoundryHook.test_connection


def test_providers_manager_lists_the_trigger() -> None:
    from airflow.providers_manager import ProvidersManager

    ours = [t for t in ProvidersManager().trigger if t.package_name == PACKAGE]

    assert [t.trigger_class_name for t in ours] == ["airflow_provider_tfy.triggers.fine_tuning"]


def test_airflow_plugins_lists_the_plugin() -> None:
    # Loaded from the package's ``airflow.plugins`` entry point by every version; only Airflow 3's
    # API server has middlewares to install (Airflow 2 ignores the attribute).
    plugins = {p["name"]: p for p in airflow_cli_json("plugins")}

    plugin = plugins["truefoundry"]
    assert "airflow_provider_tfy.plugins:TrueFoundryPlugin" in plugin["source"]
    if AIRFLOW_3:
        middlewares = [m["middleware"] for m in plugin["fastapi_root_middlewares"]]
        assert middlewares == ["airflow_provider_tfy.plugins.TestConnectionPortFix"]
