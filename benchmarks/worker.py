"""Run benchmark scenarios in a fresh process: ``python -m benchmarks.worker TASKS_JSON OUT_PATH``.

``TASKS_JSON`` is a list of ``{"scenario": ..., "params": {...}}``. The worker starts its own
simulator host (another process), points the Airflow connection at it through the environment
*before* Airflow is imported, runs the scenarios in order and writes their results as JSON to
``OUT_PATH``. The orchestrator (:mod:`benchmarks.run`) gives each worker a clean
environment and a throwaway ``AIRFLOW_HOME``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.common import API_KEY, SimHost, raise_nofile

SCENARIOS = {
    "per_poll": "benchmarks.per_poll",
    "poke_wait": "benchmarks.poke_wait",
    "density": "benchmarks.density",
    "ceiling": "benchmarks.ceiling",
    "upload": "benchmarks.upload",
}


def main(argv: list[str]) -> int:
    """Entry point; exit code 0 on success, 1 if the scenario raised."""
    tasks: list[dict[str, Any]] = json.loads(argv[0])
    out = Path(argv[1])
    raise_nofile(65536)
    results: list[dict[str, Any]] = []
    with SimHost(os.environ, API_KEY) as sim:
        conn = {"conn_type": "truefoundry", "host": sim.url, "password": sim.api_key}
        os.environ["AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT"] = json.dumps(conn)
        for task in tasks:
            started = time.perf_counter()
            try:
                module = importlib.import_module(SCENARIOS[task["scenario"]])
                result = module.run(sim, task.get("params", {}))
            except Exception:
                result = {"error": traceback.format_exc()}
            result["scenario"] = task["scenario"]
            result["seconds"] = time.perf_counter() - started
            results.append(result)
            print(
                f"[worker] {task['scenario']} done in {result['seconds']:.1f} s", file=sys.stderr, flush=True
            )
    out.write_text(json.dumps(results))
    return 1 if any("error" in result for result in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
