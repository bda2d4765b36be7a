"""Run every benchmark, print a table and write JSON: ``python -m benchmarks.run [--smoke]``.

Scenarios (see each module's docstring for the method):

0. the simulator's own ceiling (:mod:`benchmarks.ceiling`);
1. per-poll cost against a bare keep-alive GET (:mod:`benchmarks.per_poll`);
2. requests, connections and connection reads of a 30-poll poke wait (:mod:`benchmarks.poke_wait`);
3. deferred-wait density against the ``to_thread`` pattern (:mod:`benchmarks.density`);
4. the sensor module's import cost at DAG parse (:mod:`benchmarks.parse_cost`);
5. uploading a 512 MB file against a bare ``requests`` streaming upload (:mod:`benchmarks.upload`).

Scenarios 0 to 3 and 5 run in one fresh worker process (:mod:`benchmarks.worker`) with the gateway
simulator in another; scenario 4 starts fresh interpreters. Everything gets a throwaway
``AIRFLOW_HOME`` and a clean ``AIRFLOW_*`` environment. ``--smoke`` runs tiny sizes in seconds,
to keep the code working; its numbers mean nothing. The exit code is 0 when every scenario ran,
whether or not it met its target: timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import parse_cost
from benchmarks.common import ARTIFACTS, ROOT, airflow_env

SCENARIOS = ("ceiling", "per_poll", "poke_wait", "density", "parse_cost", "upload")

FULL: dict[str, dict[str, Any]] = {
    "density": {"sizes": [1000, 5000], "interval": 5.0, "latency": 0.2, "slack": 3.0},
    "ceiling": {"seconds": 3.0, "connections": 64, "latency_connections": 500, "latency": 0.2},
    "per_poll": {"rounds": 30, "calls": 50, "target": 1.1},
    "poke_wait": {"polls": 30},
    "parse_cost": {"reps": 9, "warmup": True, "target_ms": 30.0},
    "upload": {
        "size_mb": 512,
        "rounds": 5,
        "validate_rounds": 3,
        "ratio_target": 0.9,
        "memory_target_mb": 32,
    },
}
SMOKE: dict[str, dict[str, Any]] = {
    "density": {"sizes": [20], "interval": 0.2, "latency": 0.01, "slack": 1.0},
    "ceiling": {"seconds": 0.3, "connections": 4, "latency_connections": 20, "latency": 0.05},
    "per_poll": {"rounds": 2, "calls": 5, "target": 1.1},
    "poke_wait": {"polls": 30},
    "parse_cost": {"reps": 1, "warmup": False, "target_ms": 30.0},
    "upload": {"size_mb": 2, "rounds": 1, "validate_rounds": 1, "ratio_target": 0.9, "memory_target_mb": 32},
}
# Density first: its sides run in fork()s of the worker, which must not have started threads yet.
WORKER_ORDER = ("density", "ceiling", "per_poll", "poke_wait", "upload")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu_model = platform.processor() or platform.machine()
    memory_gb = None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu_model = next(
                (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                cpu_model,
            )
        with open("/proc/meminfo") as meminfo:
            kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
            memory_gb = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    versions: dict[str, str | None] = {}
    for dist in ("apache-airflow", "airflow-provider-tfy", "aiohttp", "requests", "tenacity"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def run_worker(env: dict[str, str], tasks: list[dict[str, Any]], log_path: Path) -> list[dict[str, Any]]:
    """Run the worker; its stderr (simulator and provider warnings) goes to ``log_path``."""
    out = log_path.with_suffix(".tmp.json")
    out.unlink(missing_ok=True)
    with log_path.open("w") as log:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", json.dumps(tasks), str(out)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
    if not out.exists():
        tail = log_path.read_text()[-3000:]
        return [
            {"scenario": t["scenario"], "error": f"worker exited {done.returncode}:\n{tail}"} for t in tasks
        ]
    results: list[dict[str, Any]] = json.loads(out.read_text())
    out.unlink()
    return results


def fmt(value: Any, lower_bound: bool = False) -> str:
    """A compact number for the table."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 100):
        text = f"{int(value):,}"
    elif isinstance(value, float):
        magnitude = abs(value)
        text = (
            f"{value:,.0f}" if magnitude >= 100 else f"{value:.3g}" if magnitude >= 0.01 else f"{value:.2g}"
        )
    else:
        text = str(value)
    return f">={text}" if lower_bound else text


def table(metrics: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    header = ["scenario", "metric", "ours", "baseline", "ratio", "target", "met?"]
    rows = [header, ["---"] * len(header)]
    for m in metrics:
        unit = f" [{m['unit']}]" if m.get("unit") else ""
        baseline = fmt(m.get("baseline"), m.get("baseline_lower_bound", False))
        if m.get("baseline_name") and m.get("baseline") is not None:
            baseline = f"{baseline} ({m['baseline_name']})"
        met = {True: "yes", False: "NO", None: ""}[m.get("met")]
        rows.append(
            [
                m["scenario"],
                m["metric"] + unit,
                fmt(m.get("ours"), m.get("ours_lower_bound", False)),
                baseline,
                fmt(m.get("ratio")),
                m.get("target", ""),
                met,
            ]
        )
    return "\n".join("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 when every scenario ran, 1 if any failed to run."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds; the numbers mean nothing")
    parser.add_argument(
        "--json",
        type=Path,
        default=ARTIFACTS / "results.json",
        help="where to write the results (default: %(default)s)",
    )
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, help="run only these scenarios")
    args = parser.parse_args(argv)

    config = SMOKE if args.smoke else FULL
    chosen = [s for s in SCENARIOS if not args.only or s in args.only]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    info = machine()
    print(
        f"Benchmarks ({'smoke' if args.smoke else 'full'}) on {info['cpus']} x {info['cpu_model']}, "
        f"{info['memory_gb']} GB RAM, Python {info['python']}, load average {info['load_average_at_start']}",
        flush=True,
    )
    home = Path(tempfile.mkdtemp(prefix="tfy-bench-airflow-home-"))
    results: list[dict[str, Any]] = []
    try:
        env = airflow_env(home)
        in_worker = [s for s in WORKER_ORDER if s in chosen]
        tasks: list[dict[str, Any]] = [{"scenario": s, "params": config[s]} for s in in_worker]
        if tasks:
            print(f"Running {', '.join(in_worker)} in a worker ...", flush=True)
            log = args.json.with_name(f"{args.json.stem}.worker.log")
            results.extend(run_worker(env, tasks, log))
        if "parse_cost" in chosen:
            print("Running parse_cost in fresh interpreters ...", flush=True)
            t0 = time.perf_counter()
            try:
                result = parse_cost.run(env, config["parse_cost"])
            except Exception as err:
                result = {"error": f"{type(err).__name__}: {err}"}
            result.update(scenario="parse_cost", seconds=time.perf_counter() - t0)
            results.append(result)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    metrics = [
        m for r in sorted(results, key=lambda r: SCENARIOS.index(r["scenario"])) for m in r.get("metrics", [])
    ]
    errors = {r["scenario"]: r["error"] for r in results if "error" in r}
    judged = [m["met"] for m in metrics if m.get("met") is not None]
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report = {
        "mode": "smoke" if args.smoke else "full",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": info,
        "config": {s: config[s] for s in chosen},
        "scenarios": {r["scenario"]: {k: v for k, v in r.items() if k != "metrics"} for r in results},
        "metrics": metrics,
        "targets_met": sum(judged),
        "targets_judged": len(judged),
        "errors": errors,
    }
    args.json.write_text(json.dumps(report, indent=2, default=str))

    print()
    print(table(metrics))
    print()
    print(
        f"{sum(judged)} of {len(judged)} targets met; {report['duration_s']} s; load average "
        f"{info['load_average_at_start']} -> {info['load_average_at_end']}; JSON: {args.json}"
    )
    for scenario, error in errors.items():
        print(f"\n{scenario} FAILED TO RUN:\n{error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
