"""The installed distribution: metadata, entry points, and the Airflow versions it declares."""

from __future__ import annotations

import importlib.metadata
import json
import os

import pytest
from compat_helpers import AIRFLOW_VERSION, PACKAGE_DIR, ROOT
from packaging.requirements import Requirement
from packaging.version import Version

import airflow_provider_tfy

PACKAGE = "airflow-provider-tfy"
# The oldest Airflow that CI runs this suite on (scripts/compat.sh): the declared floor may not
# be lower than it, nor exclude any version CI tests.
LOWEST_TESTED_AIRFLOW = Version("2.11")


def _airflow_requirement() -> Requirement:
    requirements = [Requirement(r) for r in importlib.metadata.requires(PACKAGE) or []]
    (airflow,) = [r for r in requirements if r.name == "apache-airflow" and r.marker is None]
    return airflow


def test_declared_airflow_versions_include_this_one() -> None:
    declared = _airflow_requirement().specifier
    assert declared.contains(AIRFLOW_VERSION, prereleases=True), (
        f"{PACKAGE} declares apache-airflow{declared}, which excludes the Airflow {AIRFLOW_VERSION} "
        "this suite runs on: pyproject.toml should declare apache-airflow>=2.11."
    )


def test_declared_airflow_floor_is_not_lower_than_ci_proves() -> None:
    declared = _airflow_requirement().specifier
    below = Version(f"{LOWEST_TESTED_AIRFLOW.major}.{LOWEST_TESTED_AIRFLOW.minor - 1}.99")
    assert not declared.contains(below, prereleases=True), (
        f"{PACKAGE} declares apache-airflow{declared}, which admits {below}; CI tests nothing below "
        f"{LOWEST_TESTED_AIRFLOW}."
    )


def test_installed_version_and_entry_points() -> None:
    assert importlib.metadata.version(PACKAGE) == airflow_provider_tfy.__version__
    dist = importlib.metadata.distribution(PACKAGE)
    entry_points = {(ep.group, ep.name): ep for ep in dist.entry_points}

    provider = entry_points[("apache_airflow_provider", "provider_info")]
    assert provider.value == "airflow_provider_tfy:get_provider_info"
    assert provider.load()()["package-name"] == PACKAGE
    assert entry_points[("pytest11", "truefoundry")].value == "airflow_provider_tfy.testing.pytest_plugin"


@pytest.mark.skipif(
    os.environ.get("TFY_COMPAT_EXPECT_WHEEL") != "1", reason="only where scripts/compat.sh installed a wheel"
)
def test_provider_comes_from_the_built_wheel_not_the_source_tree() -> None:
    assert not PACKAGE_DIR.is_relative_to(ROOT), f"imported from the source tree: {PACKAGE_DIR}"
    direct_url = importlib.metadata.distribution(PACKAGE).read_text("direct_url.json")
    if direct_url:
        assert not json.loads(direct_url).get("dir_info", {}).get("editable", False)
