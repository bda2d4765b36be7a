"""Run the ``airflow`` command of the running environment, failing the test with its output."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

AIRFLOW_BIN = Path(sys.executable).parent / "airflow"


def run_airflow(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> str:
    """Run ``airflow ARGS`` to completion and return its stdout; fail the test if it fails."""
    result = subprocess.run(
        [str(AIRFLOW_BIN), *args],
        env=dict(os.environ if env is None else env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        pytest.fail(
            f"airflow {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout
