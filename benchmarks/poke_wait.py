"""Scenario 2: HTTP requests, TCP connections and connection reads of one 30-poll poke-mode wait.

The real sensor runs ``execute()`` in poke mode (the SDK's own loop) against a job that is
still running for 29 polls and has succeeded at the 30th. The simulator counts GETs and the TCP
connections it accepted; the Airflow connection reads are counted by wrapping the hook's
``get_connection``.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import Metric, SimHost, Stopwatch

SCENARIO = "2. requests per wait"
PREFIX = "poke-wait-"


def run(sim: SimHost, params: dict[str, Any]) -> dict[str, Any]:
    """Run one poke-mode wait of ``params["polls"]`` polls (default 30)."""
    from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
    from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor

    polls = int(params.get("polls", 30))
    sim.command("latency", seconds=0.0)
    # Polls 1..polls-1 see "running", poll number `polls` sees "succeeded".
    statuses = ["running", "succeeded"] if polls > 1 else ["succeeded"]
    sim.command("jobs", prefix=PREFIX, count=1, statuses=statuses, polls_per_status=max(polls - 1, 1))

    reads = 0
    original = TrueFoundryHook.get_connection

    def counting_get_connection(cls: type, conn_id: str) -> Any:
        nonlocal reads
        reads += 1
        return original(conn_id)

    TrueFoundryHook.get_connection = classmethod(counting_get_connection)  # type: ignore[method-assign,assignment]
    try:
        sensor = TrueFoundryFineTuningJobSensor(
            task_id="wait_for_fine_tuning",
            job_id=f"{PREFIX}0",
            mode="poke",
            poke_interval=0.001,
            timeout=120,
            deferrable=False,
        )
        sim.command("reset")
        watch = Stopwatch().start()
        xcom = sensor.execute(context={})
        watch.stop()
    finally:
        TrueFoundryHook.get_connection = original  # type: ignore[method-assign]
    stats = sim.command("stats", prefix=PREFIX)
    succeeded = isinstance(xcom, dict) and xcom.get("status") == "succeeded"

    floor = "poke-mode floor"
    metrics = [
        Metric(
            SCENARIO,
            f"GETs in a {polls}-poll poke wait",
            stats["requests"],
            polls,
            None,
            f"== {polls}",
            stats["requests"] == polls and succeeded,
            "req",
            floor,
        ),
        Metric(
            SCENARIO,
            "TCP connections opened",
            stats["connections_opened"],
            1,
            None,
            "== 1",
            stats["connections_opened"] == 1,
            "conn",
            floor,
        ),
        Metric(SCENARIO, "Airflow connection reads", reads, 1, None, "== 1", reads == 1, "reads", floor),
    ]
    raw = {"xcom_status": xcom.get("status") if isinstance(xcom, dict) else None, "cpu_s": watch.cpu}
    return {"metrics": [m.to_dict() for m in metrics], "raw": raw}
