"""The gateway simulator in its own process, scripted over stdin/stdout (JSON lines).

The benchmarks run the simulator here so that its CPU is never counted as the provider's, and
script it in bulk (thousands of jobs in one command, which the HTTP admin surface would take
thousands of requests to do). Commands, one JSON object per line on stdin, each answered by one
JSON line on stdout:

* ``{"op": "jobs", "prefix": "p-", "count": 5000, "statuses": [...], "polls_per_status": 1}``
  adds jobs ``p-0`` ... ``p-4999``.
* ``{"op": "latency", "seconds": 0.2}`` sets the latency added to every gateway response.
* ``{"op": "stats", "prefix": "p-"}``: GETs of that prefix's jobs so far, TCP connections
  accepted, and this process's CPU seconds.
* ``{"op": "reset"}`` zeroes request and connection counters; ``{"op": "quit"}`` stops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from benchmarks.common import API_KEY, cpu_seconds, raise_nofile


def main() -> int:
    """Serve until stdin closes or ``quit`` arrives."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simhost")
    parser.add_argument("--api-key", default=API_KEY)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    raise_nofile(65536)

    from airflow_provider_tfy.testing import GatewaySimulator

    # Few records: the benchmarks read counters, and a long record history is memory for nothing.
    sim = GatewaySimulator(api_key=args.api_key, latency=args.latency, max_records=1000).start()
    prefixes: dict[str, list[str]] = {}
    reply({"url": sim.url, "pid": os.getpid()})
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                command = json.loads(line)
                op = command.pop("op")
                if op == "quit":
                    reply({"ok": True})
                    break
                reply(handle(sim, prefixes, op, command))
            except Exception as err:
                reply({"error": f"{type(err).__name__}: {err}"})
    finally:
        sim.stop()
    return 0


def handle(sim: Any, prefixes: dict[str, list[str]], op: str, command: dict[str, Any]) -> dict[str, Any]:
    """Carry out one command."""
    if op == "jobs":
        prefix = command["prefix"]
        ids = [f"{prefix}{i}" for i in range(int(command["count"]))]
        for job_id in ids:
            sim.set_job(
                job_id,
                statuses=tuple(command["statuses"]),
                polls_per_status=int(command.get("polls_per_status", 1)),
            )
        prefixes[prefix] = ids
        return {"added": len(ids)}
    if op == "latency":
        sim.latency = float(command["seconds"])
        return {"latency": sim.latency}
    if op == "stats":
        ids = prefixes.get(command.get("prefix", ""), [])
        return {
            "requests": sum(sim.request_count(job_id) for job_id in ids),
            "connections_opened": sim.connections_opened,
            "cpu_seconds": cpu_seconds(),
        }
    if op == "reset":
        sim.reset_counters()
        return {"ok": True}
    raise ValueError(f"unknown op {op!r}")


def reply(answer: dict[str, Any]) -> None:
    """Write one JSON line to stdout."""
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
