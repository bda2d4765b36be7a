"""Scenario 1: the cost of one poll, ``get_fine_tuning_job`` against one bare keep-alive GET.

Both sides ask the same simulator URL over their own keep-alive connection, in alternating
blocks (ours first in even rounds, the bare GET first in odd ones); each round gives a ratio and
the median ratio is reported. The simulator runs in another process, so only client work and
the round trip are timed. Wall time is the target's measure; the client's CPU per poll is shown
too, since it is what the provider itself adds and is less disturbed by a busy machine.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import Metric, SimHost, median

SCENARIO = "1. per-poll cost"
JOB_ID = "per-poll-0"


def run(sim: SimHost, params: dict[str, Any]) -> dict[str, Any]:
    """Time both sides; ``params``: rounds, calls (per side per round), target."""
    import requests

    from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook

    rounds, calls = int(params["rounds"]), int(params["calls"])
    sim.command("latency", seconds=0.0)
    sim.command("jobs", prefix="per-poll-", count=1, statuses=["running"])
    sim.command("reset")

    hook = TrueFoundryHook()
    session = requests.Session()
    url = f"{sim.url}/fine_tuning/jobs/{JOB_ID}"
    headers = {"Authorization": f"Bearer {sim.api_key}"}

    def ours() -> None:
        hook.get_fine_tuning_job(JOB_ID)

    def bare() -> None:
        response = session.get(url, headers=headers)
        response.content  # noqa: B018 - read the body, as the hook does

    def block(call: Any) -> tuple[float, float]:
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        for _ in range(calls):
            call()
        return (time.perf_counter() - wall0) / calls, (time.thread_time() - cpu0) / calls

    for _ in range(max(calls // 4, 5)):  # warm up: connections open, caches filled
        ours()
        bare()
    warmup_requests = sim.command("stats", prefix="per-poll-")["requests"]

    ours_wall: list[float] = []
    bare_wall: list[float] = []
    ours_cpu: list[float] = []
    bare_cpu: list[float] = []
    wall_ratios: list[float] = []
    cpu_ratios: list[float] = []
    for index in range(rounds):
        if index % 2 == 0:
            ow, oc = block(ours)
            bw, bc = block(bare)
        else:
            bw, bc = block(bare)
            ow, oc = block(ours)
        ours_wall.append(ow)
        bare_wall.append(bw)
        ours_cpu.append(oc)
        bare_cpu.append(bc)
        wall_ratios.append(ow / bw)
        cpu_ratios.append(oc / bc if bc else float("nan"))

    stats = sim.command("stats", prefix="per-poll-")
    requests_per_call = (stats["requests"] - warmup_requests) / (2 * rounds * calls)
    session.close()
    hook.session.close()

    target = float(params.get("target", 1.1))
    wall_ratio = median(wall_ratios)
    o_wall, b_wall = median(ours_wall), median(bare_wall)
    o_cpu, b_cpu = median(ours_cpu), median(bare_cpu)
    us = 1e6
    baseline_name = "bare requests GET"
    metrics = [
        Metric(
            SCENARIO,
            "wall time per poll (median of per-round ratios)",
            o_wall * us if o_wall is not None else None,
            b_wall * us if b_wall is not None else None,
            wall_ratio,
            f"ratio <= {target}",
            wall_ratio is not None and wall_ratio <= target,
            "us",
            baseline_name,
        ),
        Metric(
            SCENARIO,
            "client CPU per poll",
            o_cpu * us if o_cpu is not None else None,
            b_cpu * us if b_cpu is not None else None,
            median([r for r in cpu_ratios if r == r]),
            "",
            None,
            "us",
            baseline_name,
            "info: the provider's own work; wall time also holds the simulator's",
        ),
        Metric(
            SCENARIO,
            "HTTP requests per get_fine_tuning_job (both sides)",
            round(requests_per_call, 3),
            1.0,
            round(requests_per_call, 3),
            "== 1",
            abs(requests_per_call - 1.0) < 1e-9,
            "req",
            "floor",
        ),
    ]
    raw = {
        "rounds": rounds,
        "calls_per_round": calls,
        "ours_wall_s": ours_wall,
        "bare_wall_s": bare_wall,
        "ours_cpu_s": ours_cpu,
        "bare_cpu_s": bare_cpu,
        "wall_ratios": wall_ratios,
        "connections_opened": stats["connections_opened"],
    }
    return {"metrics": [m.to_dict() for m in metrics], "raw": raw}
