"""A tiny run of every benchmark, so that they keep working. Timings are never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = {"ceiling", "per_poll", "poke_wait", "density", "parse_cost", "upload"}


def test_benchmarks_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    # The benchmark makes its own throwaway Airflow home; it must not inherit the test session's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    report = json.loads(out.read_text())
    assert report["mode"] == "smoke"
    assert report["errors"] == {}
    assert set(report["scenarios"]) == SCENARIOS
    prefixes = {m["scenario"].split(".")[0] for m in report["metrics"]}
    assert prefixes == {"0", "1", "2", "3", "4", "5"}
    for metric in report["metrics"]:
        assert {"scenario", "metric", "ours", "baseline", "ratio", "target", "met"} <= metric.keys()
    # The table is printed with every scenario in it.
    for number in "012345":
        assert f"| {number}. " in done.stdout
