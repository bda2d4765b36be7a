"""Shared test set-up: a throwaway Airflow home, configured before anything imports Airflow.

Airflow reads its configuration when first imported, so the environment is set here, at
collection time. The metadata DB is migrated once per session, only for tests that ask for it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from airflow_cli import run_airflow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = ROOT / "example_dags"
SPEC = Path(__file__).resolve().parent / "spec" / "retrieve-fine-tuning-job.openapi.yaml"

_HOME = Path(tempfile.mkdtemp(prefix="tfy-tests-airflow-home-"))
for _name in [name for name in os.environ if name.startswith("AIRFLOW")]:
    del os.environ[_name]
os.environ.update(
    AIRFLOW_HOME=str(_HOME),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__DAGS_FOLDER=str(EXAMPLE_DAGS),
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{_HOME}/airflow.db",
    AIRFLOW__CORE__UNIT_TEST_MODE="False",
)


# Suites whose tests share one expensive set-up, kept on one pytest-xdist worker: the system
# suite's stack (session-scoped) and the browser tests (an API server and Chromium).
SHARED_SETUP_SUITES = ("system", "ui")


@pytest.hookimpl(optionalhook=True)  # the other Airflow lines' environments have no xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (``scripts/test.sh`` runs ``-n 2``), spread the tests one by one, except
    that each of :data:`SHARED_SETUP_SUITES` goes to one worker as a whole.

    Not ``--dist loadgroup`` with ``xdist_group`` marks: on pytest 9.2 that silently stops
    grouping (pytest-dev/pytest-xdist#1386), and two workers would each start a stack.
    """
    from xdist.scheduler import LoadScopeScheduling

    class SharedSetupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            parts = nodeid.split("/", 2)
            if len(parts) > 2 and parts[0] == "tests" and parts[1] in SHARED_SETUP_SUITES:
                return parts[1]
            return nodeid

    return SharedSetupScheduling(config, log)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's throwaway AIRFLOW_HOME."""
    return _HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """A migrated metadata DB (SQLite) in the throwaway home, for ``dag.test()``."""
    run_airflow("db", "migrate", timeout=300)
    return airflow_home
