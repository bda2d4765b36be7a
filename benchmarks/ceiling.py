"""The simulator's own ceiling, to show it is not what the density benchmark measures.

Many keep-alive connections from a minimal asyncio HTTP/1.1 client (cheaper per request than
any real client, so the load generator is not the limit) hammer one job:

* without added latency: requests per second achieved, and the simulator's CPU per request,
  whose inverse is what one simulator core can serve;
* with 200 ms added latency and many connections: achieved throughput against the
  ``connections / latency`` that a server which never serialises its delays would reach.

The simulator serves with aiohttp's low-level server, access log off: its per-request CPU is
aiohttp's own floor plus the simulator's routing, job rendering and request record.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

from benchmarks.common import Metric, SimHost

SCENARIO = "0. simulator ceiling"
PREFIX = "ceiling-"


async def _hammer(url: str, api_key: str, connections: int, seconds: float) -> tuple[int, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"GET {parts.path}/fine_tuning/jobs/{PREFIX}0 HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {api_key}\r\n\r\n"
    ).encode()
    done = 0
    loop = asyncio.get_running_loop()

    async def one(deadline: float) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while loop.time() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()

    start = loop.time()
    await asyncio.gather(*(one(start + seconds) for _ in range(connections)))
    return done, loop.time() - start


def measure(sim: SimHost, connections: int, seconds: float, latency: float) -> dict[str, float]:
    """Hammer for ``seconds``; requests per second and simulator CPU per request."""
    sim.command("latency", seconds=latency)
    before = sim.command("stats", prefix=PREFIX)["cpu_seconds"]
    wall0 = time.perf_counter()
    done, elapsed = asyncio.run(_hammer(sim.url, sim.api_key, connections, seconds))
    wall = time.perf_counter() - wall0
    server_cpu = sim.command("stats", prefix=PREFIX)["cpu_seconds"] - before
    return {
        "requests": done,
        "seconds": elapsed,
        "wall": wall,
        "rps": done / elapsed,
        "server_cpu_s": server_cpu,
        "server_cpu_per_request_us": server_cpu / done * 1e6 if done else float("nan"),
    }


def run(sim: SimHost, params: dict[str, Any]) -> dict[str, Any]:
    """``params``: seconds, connections (no latency), latency_connections, latency, demand_rps."""
    seconds = float(params.get("seconds", 3.0))
    latency = float(params.get("latency", 0.2))
    demand = float(params.get("demand_rps", 1000.0))
    sim.command("jobs", prefix=PREFIX, count=1, statuses=["running"])
    fast = measure(sim, int(params.get("connections", 64)), seconds, 0.0)
    slow_connections = int(params.get("latency_connections", 500))
    slow = measure(sim, slow_connections, seconds + latency, latency)
    sim.command("latency", seconds=0.0)

    per_core = 1e6 / fast["server_cpu_per_request_us"]
    ideal = slow_connections / latency
    metrics = [
        Metric(
            SCENARIO,
            "capacity of one simulator core (1 / CPU per request)",
            per_core,
            demand,
            per_core / demand,
            ">= 3x the density demand",
            per_core >= 3 * demand,
            "req/s",
            "demand at 5,000 waits",
        ),
        Metric(SCENARIO, "achieved, no latency, 64 keep-alive conns", fast["rps"], unit="req/s", note="info"),
        Metric(
            SCENARIO,
            f"achieved with {latency * 1000:.0f} ms latency, {slow_connections} conns",
            slow["rps"],
            ideal,
            slow["rps"] / ideal,
            "",
            None,
            "req/s",
            "connections / latency",
            "info: near 1 means latency is not serialised",
        ),
    ]
    return {"metrics": [m.to_dict() for m in metrics], "raw": {"no_latency": fast, "latency": slow}}
