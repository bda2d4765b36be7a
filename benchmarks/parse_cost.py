"""Scenario 4: what importing the sensor module adds to a DAG file's parse.

Each repetition is a fresh interpreter that times ``import airflow.sdk`` and then, in the same
process, ``import airflow_provider_tfy.sensors.fine_tuning``: the second import's time is
exactly what the provider adds on top of Airflow. Medians over the repetitions; one discarded
run first, which fills the bytecode cache (kept under ``artifacts/``) as any installed package
has one. The modules that the sensor import loads are listed, to show that the HTTP clients, the
hook and the trigger are not among them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from benchmarks.common import ROOT, Metric, median

SCENARIO = "4. DAG-parse cost"
SENSOR_MODULE = "airflow_provider_tfy.sensors.fine_tuning"
# Loaded only when a task runs; any of these at parse time would be a regression.
HEAVY = (
    "requests",
    "tenacity",
    "aiohttp",
    "urllib3",
    "airflow_provider_tfy.hooks.truefoundry",
    "airflow_provider_tfy.triggers.fine_tuning",
    "airflow_provider_tfy.protocol",
)

PROBE = f"""
import json, sys, time
w0, c0 = time.perf_counter(), time.process_time()
import airflow.sdk
w1, c1 = time.perf_counter(), time.process_time()
before = set(sys.modules)
import {SENSOR_MODULE}
w2, c2 = time.perf_counter(), time.process_time()
added = sorted(set(sys.modules) - before)
print(json.dumps({{
    "sdk_wall": w1 - w0, "sdk_cpu": c1 - c0, "sensor_wall": w2 - w1, "sensor_cpu": c2 - c1,
    "added_modules": added, "heavy_added": [m for m in {HEAVY!r} if m in added],
}}))
"""


def probe(env: Mapping[str, str]) -> dict[str, Any]:
    """One fresh interpreter's timings."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=dict(env), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"import probe failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(env: Mapping[str, str], params: dict[str, Any]) -> dict[str, Any]:
    """``params``: reps, warmup (bool), target_ms."""
    reps = int(params.get("reps", 9))
    target_ms = float(params.get("target_ms", 30.0))
    if params.get("warmup", True):
        probe(env)
    samples = [probe(env) for _ in range(reps)]
    ms = 1000.0
    sensor_wall = median([s["sensor_wall"] * ms for s in samples])
    sdk_wall = median([s["sdk_wall"] * ms for s in samples])
    sensor_cpu = median([s["sensor_cpu"] * ms for s in samples])
    sdk_cpu = median([s["sdk_cpu"] * ms for s in samples])
    heavy = sorted({m for s in samples for m in s["heavy_added"]})
    added = samples[-1]["added_modules"]
    assert sensor_wall is not None
    assert sdk_wall is not None
    metrics = [
        Metric(
            SCENARIO,
            "import sensor module after airflow.sdk, wall (median)",
            sensor_wall,
            sdk_wall,
            sensor_wall / sdk_wall if sdk_wall else None,
            f"<= {target_ms:.0f} ms",
            sensor_wall <= target_ms,
            "ms",
            "import airflow.sdk",
            f"{reps} fresh interpreters",
        ),
        Metric(
            SCENARIO,
            "import sensor module after airflow.sdk, CPU (median)",
            sensor_cpu,
            sdk_cpu,
            sensor_cpu / sdk_cpu if sensor_cpu is not None and sdk_cpu else None,
            unit="ms",
            baseline_name="import airflow.sdk",
            note="info: less disturbed by a busy machine",
        ),
        Metric(
            SCENARIO,
            "heavy modules loaded at parse (HTTP clients, hook, trigger)",
            len(heavy),
            0,
            None,
            "== 0",
            not heavy,
            "modules",
            "none",
            ", ".join(heavy) or f"modules added: {', '.join(added)}",
        ),
    ]
    return {"metrics": [m.to_dict() for m in metrics], "raw": {"samples": samples}}
