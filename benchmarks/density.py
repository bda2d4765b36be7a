"""Scenario 3: deferred-wait density, N concurrent waits in one event loop.

Every wait polls its own simulator job (``queued``, ``running``, ``succeeded``: three polls) with
a 5 s poll interval while the simulator (another process) adds 200 ms to every answer. Starts
are spread evenly over one poll interval, as the waits of a busy triggerer are, so the load is
the steady ``N / interval`` requests per second rather than one thundering herd.

Sides, each run in a ``fork()`` of this worker, so each starts from the same warm state and
owns its RSS high-water mark:

* ``ours``: :class:`TrueFoundryFineTuningJobTrigger` instances, their ``run()`` iterated as the
  triggerer does (shared aiohttp pool per event loop).
* ``to_thread``: the anchor providers' pattern, a trigger-like coroutine that calls the sync
  hook's ``get_fine_tuning_job`` through ``asyncio.to_thread`` each poll, with the event loop's
  default thread pool (``min(32, cpus + 4)`` threads).
* ``to_thread_sized``: the same with a pool of N threads, so that pool size is not its limit.

Sides alternate their order between sizes. A side is stopped ``slack`` seconds after the time an
ideal poller would need; waits not finished by then count as not completed, and the time their
pending poll had already waited counts as a (lower-bound) lag.

Poll lag is measured in the waiting coroutine: for each poll, the time its answer arrived minus
the time an ideal poller's answer would have (the previous answer, or the wait's start, plus the
poll interval after the first poll, plus the simulator's latency). It therefore holds every delay
the provider adds: late timers, waiting for a pooled connection or a pool thread, CPU queueing.
For ``ours`` the answer time is taken by wrapping the trigger module's ``send`` (a benchmark-only
monkeypatch); for the baselines, right after ``to_thread`` returns.

The start burst (``burst``, per size): N triggers start together in one loop, from warm, as when
a triggerer takes over a dead peer's triggers or starts with a full table. Two ways: as the
triggerer creates them (``TriggerRunner.create_triggers`` on every Airflow line we support: one
at a time, yielding to the loop in between; judged), and all N in one loop iteration (harsher
than any triggerer; reported). Beside ours, the floor (``burst_core``): N of Airflow's own
``DateTimeTrigger``, started the same way in the same heap, which shows what any trigger pays
for N waits in one triggerer, full collections of Airflow's heap included. A watchdog like the triggerer's own
(:class:`LoopWatchdog`) reports the longest loop stall until every wait had its first answer plus
one interval, that stall with the full garbage collections inside each beat taken out, the
collections themselves (and one of the idle heap, before any trigger), the loop thread's CPU in
the longest beat, and the poll lag of every later poll; ``profile`` adds a stack sampler on the
loop thread (where a stall's time goes; it samples only while the loop thread lets go of the
GIL, so it over-counts system calls). Environment switches for digging further, both of which
perturb the numbers: ``TFY_BENCH_DEBUG=1`` counts the objects each wait keeps and prints the lag
by second and the worst beats; ``TFY_BENCH_GC_FREEZE=1`` freezes the heap before the start
(``gc.freeze()``), to see what the collections cost without Airflow's own objects.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.common import (
    Metric,
    SimHost,
    cpu_seconds,
    peak_rss_bytes,
    percentile,
    ratio,
    release_memory,
    reset_peak_rss,
    rss_bytes,
    runqueue_wait_seconds,
)

SCENARIO = "3. deferred-wait density"
SIDES = ("ours", "to_thread", "to_thread_sized")
# How the burst's triggers are created: as the triggerer does (judged), and all in one iteration.
BURST_STARTS = ("triggerer", "one_iteration")
BASELINE_NAMES = {"to_thread": "to_thread, default pool", "to_thread_sized": "to_thread, pool of N"}


def in_child(work: Callable[[], dict[str, Any]], limit: float) -> dict[str, Any]:
    """Run ``work`` in a fork of this process and return its JSON-able result.

    The child is killed if it has not answered within ``limit`` seconds.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's code
        code = 0
        try:
            os.close(read_fd)
            payload = json.dumps(work())
        except BaseException:
            payload = json.dumps({"error": traceback.format_exc()})
            code = 1
        with os.fdopen(write_fd, "w") as pipe:
            pipe.write(payload)
        os._exit(code)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + limit
    with os.fdopen(read_fd, "rb") as pipe:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([pipe], [], [], remaining)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"error": f"killed: no result within {limit:.0f} s"}
            chunk = os.read(pipe.fileno(), 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    os.waitpid(pid, 0)
    data = b"".join(chunks)
    result: dict[str, Any] = json.loads(data) if data else {"error": "child died without a result"}
    return result


class RssSampler:
    """Samples RSS and thread count every ``period`` seconds in a background thread."""

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self.peak_rss = rss_bytes()
        self.peak_threads = threading.active_count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.peak_rss = max(self.peak_rss, rss_bytes())
            self.peak_threads = max(self.peak_threads, threading.active_count() - 1)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, rss_bytes())


def run_side(side: str, job_ids: list[str], interval: float, latency: float, box: float) -> dict[str, Any]:
    """One side, in the forked child: start the waits, run the loop until done or ``box`` s.

    Call :func:`warm_up` first.
    """
    from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
    from airflow_provider_tfy.models import JobOutcome
    from airflow_provider_tfy.triggers import fine_tuning, transport

    n = len(job_ids)
    answers: dict[str, list[float]] = {job_id: [] for job_id in job_ids}
    starts: dict[str, float] = {}
    outcomes: dict[str, str] = {}

    original_send = transport.send

    async def timed_send(client: Any, request: Any) -> Any:
        answer = await original_send(client, request)
        answers[request.url.rsplit("/", 1)[1]].append(time.monotonic())
        return answer

    transport.send = timed_send

    async def wait_ours(job_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        starts[job_id] = time.monotonic()
        trigger = fine_tuning.TrueFoundryFineTuningJobTrigger(
            job_id=job_id, poll_interval=interval, deadline=time.time() + 3600
        )
        async for event in trigger.run():
            outcomes[job_id] = event.payload["status"]
            return

    async def wait_to_thread(job_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        starts[job_id] = time.monotonic()
        hook = TrueFoundryHook()
        while True:
            job = await asyncio.to_thread(hook.get_fine_tuning_job, job_id)
            answers[job_id].append(time.monotonic())
            if job.outcome is not JobOutcome.IN_PROGRESS:
                outcomes[job_id] = str(job.outcome)
                return
            await asyncio.sleep(interval)

    waiter = wait_ours if side == "ours" else wait_to_thread
    timing: dict[str, float] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if side == "to_thread_sized":
            loop.set_default_executor(ThreadPoolExecutor(max_workers=n))
        tasks = [
            asyncio.create_task(waiter(job_id, index * interval / n)) for index, job_id in enumerate(job_ids)
        ]
        timing["wall0"], timing["cpu0"] = time.monotonic(), cpu_seconds()
        timing["queued0"] = runqueue_wait_seconds() or 0.0
        await asyncio.wait(tasks, timeout=box)
        timing["wall1"], timing["cpu1"] = time.monotonic(), cpu_seconds()
        timing["queued1"] = runqueue_wait_seconds() or 0.0
        # Unfinished waits are left as they are: the child exits right after measuring, and
        # cancelling thousands of requests would only add clean-up work to no purpose.

    release_memory()
    peak_reset = reset_peak_rss()
    rss0 = rss_bytes()
    loop = asyncio.new_event_loop()
    with RssSampler() as sampler:
        loop.run_until_complete(main())
    peak = peak_rss_bytes() if peak_reset else sampler.peak_rss
    # No loop clean-up: a pool may still hold queued calls; the child exits right after.

    cutoff = timing["wall1"]
    lags: list[float] = []
    censored = 0
    for job_id in job_ids:
        start = starts.get(job_id)
        if start is None:
            continue
        previous = start
        for index, answered in enumerate(answers[job_id]):
            lags.append(answered - previous - (interval if index else 0.0) - latency)
            previous = answered
        if job_id not in outcomes:
            pending_lag = cutoff - previous - (interval if answers[job_id] else 0.0) - latency
            if pending_lag > 0:
                lags.append(pending_lag)
                censored += 1
    answered_polls = sum(len(times) for times in answers.values())
    cpu = timing["cpu1"] - timing["cpu0"]
    return {
        "side": side,
        "n": n,
        "completed": sum(1 for outcome in outcomes.values() if outcome == "succeeded"),
        "answered_polls": answered_polls,
        "lag_p50_ms": _ms(percentile(lags, 50)),
        "lag_p90_ms": _ms(percentile(lags, 90)),
        "lag_p99_ms": _ms(percentile(lags, 99)),
        "lag_max_ms": _ms(max(lags) if lags else None),
        "censored_polls": censored,
        "rss0_mb": rss0 / 2**20,
        "peak_rss_mb": peak / 2**20,
        "sampled_peak_rss_mb": sampler.peak_rss / 2**20,
        "peak_reset_supported": peak_reset,
        "rss_per_wait_kb": (peak - rss0) / n / 1024,
        "cpu_s": cpu,
        "cpu_ms_per_poll": cpu / answered_polls * 1000 if answered_polls else None,
        "wall_s": cutoff - timing["wall0"],
        # Time the event-loop thread was ready to run but other processes had the CPUs.
        "loop_cpu_wait_s": timing["queued1"] - timing["queued0"],
        "box_s": box,
        "peak_threads": sampler.peak_threads,
        "default_pool_threads": min(32, (os.cpu_count() or 1) + 4),
    }


class LoopWatchdog:
    """The triggerer's own block detector, finer: how late a short sleep on the loop wakes up.

    Airflow's triggerer sleeps 0.1 s in a loop and warns ("async thread was blocked") when one
    sleep took longer than ``[triggerer] blocked_main_thread_warning_threshold`` (0.2 s). This
    sleeps ``period`` and records every overshoot, so the largest is the longest stretch the loop
    could not run anything else. With ``profile``, a sampler thread snapshots the loop thread's
    stack (``sys._current_frames()``) every millisecond while the loop is late, which shows
    where a stall's time goes.
    """

    def __init__(self, period: float = 0.01, profile: bool = False) -> None:
        self.period = period
        self.stalls: list[tuple[float, float, float]] = []  # (when, beat start, seconds late)
        # (when, CPU seconds the loop thread used in that beat): the stall's own cost, which a
        # busy machine (other processes holding the cores) cannot inflate.
        self.cpu: list[tuple[float, float]] = []
        self.profile = profile
        self.samples: dict[str, int] = {}
        self.frames: dict[str, int] = {}
        self._beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()

    async def watch(self) -> None:
        self._loop_thread = threading.get_ident()
        if self.profile:
            threading.Thread(target=self._sample, daemon=True).start()
        while not self._stop.is_set():
            before, cpu_before = time.monotonic(), time.thread_time()
            self._beat = before
            await asyncio.sleep(self.period)
            now = time.monotonic()
            self._beat = now
            self.stalls.append((now, before, now - before - self.period))
            self.cpu.append((now, time.thread_time() - cpu_before))

    def stop(self) -> None:
        self._stop.set()

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            if time.monotonic() - self._beat < 0.02:  # the loop is keeping up
                continue
            frame = sys._current_frames().get(self._loop_thread)
            stack = []
            while frame is not None:
                code = frame.f_code
                stack.append(f"{code.co_filename.rsplit('site-packages/', 1)[-1]}:{code.co_name}")
                frame = frame.f_back
            if stack:
                self.samples[stack[0]] = self.samples.get(stack[0], 0) + 1
                for entry in set(stack):
                    self.frames[entry] = self.frames.get(entry, 0) + 1

    def max_stall(
        self, since: float, until: float, *, cpu: bool = False, minus: Sequence[tuple[float, float]] = ()
    ) -> float | None:
        """The longest overshoot (or loop CPU, ``cpu``) of a beat ending in ``[since, until]``,
        less the parts of ``minus`` intervals (GC pauses) inside that beat."""
        if cpu:
            late = [seconds for when, seconds in self.cpu if since <= when <= until]
        else:
            late = [
                seconds - sum(max(0.0, min(end, when) - max(start, begin)) for start, end in minus)
                for when, begin, seconds in self.stalls
                if since <= when <= until
            ]
        return max(late) if late else None


def run_burst(
    job_ids: list[str],
    interval: float,
    latency: float,
    box: float,
    profile: bool,
    start: str = "triggerer",
    trigger: str = "ours",
) -> dict[str, Any]:
    """N of our triggers started together in one loop, as a triggerer does on a takeover.

    ``start``: ``"triggerer"`` creates them as every Airflow line's ``create_triggers`` does (one
    at a time, yielding to the loop before each and after loading the class); ``"one_iteration"``
    creates all N in one loop iteration, harsher than any triggerer. Reports the longest loop
    stall from the start until every wait has had its first answer plus one interval, the same
    with the full-GC pauses inside each beat taken out, those pauses, the poll lag of every later
    poll, and (``profile``) the sampled stacks. Call :func:`warm_up` first.

    ``trigger="core"`` starts Airflow's own ``DateTimeTrigger`` instead, one per wait, each due
    when our wait would end, in the same heap, loop and watchdog: the floor any trigger pays for
    N waits in one triggerer (its tasks, and the full collections of Airflow's heap). Its "first
    answer" is its first step in ``run()``.
    """
    from airflow_provider_tfy.triggers import fine_tuning, transport

    answers: dict[str, list[float]] = {job_id: [] for job_id in job_ids}
    outcomes: dict[str, str] = {}
    original_send = transport.send

    async def timed_send(client: Any, request: Any) -> Any:
        answer = await original_send(client, request)
        answers[request.url.rsplit("/", 1)[1]].append(time.monotonic())
        return answer

    transport.send = timed_send
    reads = [0]
    original_read = transport._read_connection

    async def counted_read(conn_id: str) -> Any:
        reads[0] += 1
        return await original_read(conn_id)

    transport._read_connection = counted_read
    watchdog = LoopWatchdog(profile=profile)
    # Collections of the whole heap (Airflow's included) show up as stalls too; they are timed
    # here so a beat's stall can be split into the collector's share and everything else.
    collections: list[tuple[int, float, float]] = []  # (generation, start, end), monotonic
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.monotonic()
        else:
            collections.append((int(info["generation"]), gc_started[0], time.monotonic()))

    gc.callbacks.append(on_gc)
    # What one full collection of this heap costs before any trigger starts: the triggerer's own
    # heap (Airflow imported) pays it whatever triggers it runs.
    gc.collect()
    before_gc = time.perf_counter()
    gc.collect()
    idle_full_gc = time.perf_counter() - before_gc
    idle_ids = {id(o) for o in gc.get_objects()} if os.environ.get("TFY_BENCH_DEBUG") else set()
    idle_objects = len(gc.get_objects())
    collections.clear()
    # The trigger's kwargs as the triggerer hands them over: from serialize(), deserialised.
    template = fine_tuning.TrueFoundryFineTuningJobTrigger(
        job_id="template", poll_interval=interval, deadline=time.time() + 3600
    )
    _, template_kwargs = template.serialize()

    async def run_trigger(trigger: Any) -> None:
        async for event in trigger.run():
            outcomes[trigger.job_id] = event.payload["status"]
            return

    def start_one(job_id: str) -> Coroutine[Any, Any, None]:
        """The trigger made (as the triggerer makes it, before its task) and its run."""
        made = fine_tuning.TrueFoundryFineTuningJobTrigger(**{**template_kwargs, "job_id": job_id})
        return run_trigger(made)

    if trigger == "core":
        from datetime import UTC, datetime, timedelta

        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        async def warm_core() -> None:
            async for _ in DateTimeTrigger(moment=datetime.now(UTC)).run():
                return

        asyncio.run(warm_core())

        # Due when one of our waits (three polls) would end, counted from the start.
        core_moment = datetime.now(UTC) + timedelta(seconds=0.2 + 3 * (interval + latency))

        async def run_core(job_id: str) -> None:
            answers[job_id].append(time.monotonic())  # its first step: the "first answer"
            async for _ in DateTimeTrigger(moment=core_moment).run():
                outcomes[job_id] = "succeeded"
                return

        start_one = run_core

    timing: dict[str, float] = {}

    async def main() -> None:
        watcher = asyncio.create_task(watchdog.watch())
        await asyncio.sleep(0.2)  # the watchdog's baseline
        collections.clear()  # release_memory()'s collection is not the start's
        timing["start"] = time.monotonic()
        timing["queued0"] = runqueue_wait_seconds() or 0.0
        tasks = []
        if start == "one_iteration":
            tasks = [asyncio.create_task(start_one(job_id)) for job_id in job_ids]
        else:
            for job_id in job_ids:  # TriggerRunner.create_triggers, on every Airflow line we support
                await asyncio.sleep(0)
                await asyncio.sleep(0)  # after loading the trigger class
                tasks.append(asyncio.create_task(start_one(job_id)))
        if os.environ.get("TFY_BENCH_DEBUG"):  # debugging aid: perturbs the stall numbers
            await asyncio.sleep(interval * 1.5)
            objects = gc.get_objects()
            timing["objects"] = len(objects)
            kinds: dict[str, int] = {}
            for o in objects:
                if id(o) not in idle_ids:
                    name = type(o).__qualname__
                    kinds[name] = kinds.get(name, 0) + 1
            print(sorted(kinds.items(), key=lambda kv: -kv[1])[:40], file=sys.stderr)
        await asyncio.wait(tasks, timeout=box)
        timing["end"] = time.monotonic()
        watchdog.stop()
        await watcher

    release_memory()
    if os.environ.get("TFY_BENCH_GC_FREEZE"):  # experiment: what is left when the heap is frozen
        gc.freeze()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        gc.callbacks.remove(on_gc)
        transport.send = original_send
        transport._read_connection = original_read
    begin = timing["start"]
    objects_per_wait = (timing["objects"] - idle_objects) / len(job_ids) if "objects" in timing else None
    firsts = [times[0] for times in answers.values() if times]
    all_first = max(firsts) if len(firsts) == len(job_ids) else timing["end"]
    # Lag of every poll after the first: the steady state the start must not disturb.
    lags = [b - a - interval - latency for times in answers.values() for a, b in itertools.pairwise(times)]
    window = (begin, min(all_first + interval, timing["end"]))
    full = [(start_, end) for generation, start_, end in collections if generation == 2]
    in_window = [end - start_ for start_, end in full if window[0] - 1 <= start_ <= window[1]]
    if trigger == "core":
        lags = []  # it does not poll
    result: dict[str, Any] = {
        "n": len(job_ids),
        "start": start,
        "trigger": trigger,
        "completed": sum(1 for outcome in outcomes.values() if outcome == "succeeded"),
        "connection_reads": reads[0],
        "max_stall_ms": _ms(watchdog.max_stall(*window)),
        "max_stall_without_gc_ms": _ms(watchdog.max_stall(*window, minus=full)),
        "max_stall_cpu_ms": _ms(watchdog.max_stall(*window, cpu=True)),
        "loop_cpu_wait_s": (runqueue_wait_seconds() or 0.0) - timing["queued0"],
        "stalls_over_100ms": sum(1 for when, _, late in watchdog.stalls if late > 0.1 and when >= begin),
        "first_answers_s": all_first - begin,
        "later_lag_p99_ms": _ms(percentile(lags, 99)),
        "later_lag_max_ms": _ms(max(lags) if lags else None),
        "full_gcs": len(in_window),
        "max_full_gc_ms": _ms(max(in_window, default=0.0)),
        "idle_full_gc_ms": _ms(idle_full_gc),
        "idle_objects": idle_objects,
        "objects_per_wait": objects_per_wait,
        "max_young_gc_ms": _ms(max((end - s for g, s, end in collections if g < 2), default=0.0)),
    }
    if os.environ.get("TFY_BENCH_DEBUG"):
        by_second: dict[int, list[float]] = {}
        for times in answers.values():
            for a, b in itertools.pairwise(times):
                by_second.setdefault(int(b - begin), []).append(b - a - interval - latency)
        print(
            "lag by second of answer (n, p50, p99, max):",
            {
                k: (len(v), round(percentile(v, 50), 3), round(percentile(v, 99), 3), round(max(v), 3))
                for k, v in sorted(by_second.items())
            },
            "full GCs at (s, ms):",
            [(round(s_ - begin, 2), round((e - s_) * 1000)) for s_, e in full],
            file=sys.stderr,
        )
        ends = sorted(end for _, end in full)
        worst = sorted(
            (
                (
                    late - sum(max(0.0, min(e, when) - max(s, b)) for s, e in full),
                    when - begin,
                    when - max([e for e in ends if e <= when], default=begin),
                )
                for when, b, late in watchdog.stalls
                if window[0] <= when <= window[1]
            ),
            reverse=True,
        )[:8]
        print("worst non-GC beats (stall, at, since last full GC end):", worst, file=sys.stderr)
    if profile:
        total = sum(watchdog.samples.values()) or 1
        result["profile_self"] = sorted(
            ((name, round(count / total, 3)) for name, count in watchdog.samples.items()), key=lambda x: -x[1]
        )[:25]
        result["profile_cumulative"] = sorted(
            ((name, round(count / total, 3)) for name, count in watchdog.frames.items()), key=lambda x: -x[1]
        )[:40]
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def warm_up(job_ids: list[str]) -> None:
    """Run one wait of each kind, so one-time costs (lazy imports, caches) stay out of the numbers.

    Runs in the forked child: a thread started in the parent (a pool worker) would not exist in
    the fork, and anything waiting on it there would hang.
    """
    from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
    from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger

    async def both() -> None:
        trigger = TrueFoundryFineTuningJobTrigger(
            job_id=job_ids[0], poll_interval=0.01, deadline=time.time() + 60
        )
        async for _ in trigger.run():
            break
        hook = TrueFoundryHook()
        await asyncio.to_thread(hook.get_fine_tuning_job, job_ids[1])
        hook.session.close()

    asyncio.run(both())


def run(sim: SimHost, params: dict[str, Any]) -> dict[str, Any]:
    """``params``: sizes, interval, latency, statuses, sides, slack, targets; ``burst`` (default
    on) also measures the start burst of each size (:func:`run_burst`), ``profile`` samples it."""
    # Import (which starts no thread) before forking, so every child starts with the modules loaded.
    import airflow_provider_tfy.hooks.truefoundry
    import airflow_provider_tfy.triggers.fine_tuning  # noqa: F401

    sizes = [int(n) for n in params.get("sizes", [1000, 5000])]
    interval = float(params.get("interval", 5.0))
    latency = float(params.get("latency", 0.2))
    statuses = list(params.get("statuses", ["queued", "running", "succeeded"]))
    sides = list(params.get("sides", SIDES))
    slack = float(params.get("slack", 5.0))
    polls = len(statuses)
    # An ideal poller: starts spread over one interval, then (polls - 1) intervals, plus latency.
    ideal = interval + (polls - 1) * interval + polls * latency
    box = ideal + slack
    sim.command("latency", seconds=latency)

    runs: list[dict[str, Any]] = []
    bursts: list[dict[str, Any]] = []
    for size_index, n in enumerate(sizes):
        order = sides if size_index % 2 == 0 else sides[::-1]
        for side in order:
            prefix = f"density-{n}-{side}-"
            sim.command("jobs", prefix=prefix, count=n, statuses=statuses)
            sim.command("jobs", prefix=f"warm-{prefix}", count=2, statuses=["succeeded"])
            sim.command("reset")
            before = sim.command("stats", prefix=prefix)
            job_ids = [f"{prefix}{i}" for i in range(n)]
            threads_at_fork = threading.active_count()
            if threads_at_fork > 1:
                print(f"[density] warning: {threads_at_fork} threads at fork", file=sys.stderr, flush=True)

            def work(side: str = side, job_ids: list[str] = job_ids, prefix: str = prefix) -> dict[str, Any]:
                warm_up([f"warm-{prefix}0", f"warm-{prefix}1"])
                return run_side(side, job_ids, interval, latency, box)

            result = in_child(work, limit=3 * box + 60)
            after = sim.command("stats", prefix=prefix)
            result.update(
                side=side,
                n=n,
                threads_at_fork=threads_at_fork,
                sim_requests=after["requests"],
                sim_connections=after["connections_opened"],
                sim_cpu_s=after["cpu_seconds"] - before["cpu_seconds"],
            )
            if result.get("wall_s"):
                result["sim_cpu_share"] = result["sim_cpu_s"] / result["wall_s"]
            runs.append(result)
            print(f"[density] {json.dumps(result)}", file=sys.stderr, flush=True)
        if params.get("burst", True):
            for start in params.get("burst_starts", BURST_STARTS):
                bursts.append(
                    _run_burst_side(
                        sim, n, interval, latency, statuses, box, bool(params.get("profile")), start
                    )
                )
            if params.get("burst_core", True):  # the floor: Airflow's own trigger, same start
                bursts.append(
                    _run_burst_side(sim, n, interval, latency, statuses, box, False, "triggerer", "core")
                )
    sim.command("latency", seconds=0.0)
    metrics = _metrics(runs, params) + _burst_metrics(bursts, params)
    raw = {"runs": runs, "bursts": bursts, "ideal_s": ideal, "box_s": box}
    return {"metrics": [m.to_dict() for m in metrics], "raw": raw}


def _run_burst_side(
    sim: SimHost,
    n: int,
    interval: float,
    latency: float,
    statuses: list[str],
    box: float,
    profile: bool,
    start: str,
    trigger: str = "ours",
) -> dict[str, Any]:
    """The start burst (:func:`run_burst`) for ``n`` waits, in a fork like the other sides."""
    prefix = f"burst-{trigger}-{start}-{n}-"
    sim.command("jobs", prefix=prefix, count=n, statuses=statuses)
    sim.command("jobs", prefix=f"warm-{prefix}", count=2, statuses=["succeeded"])
    job_ids = [f"{prefix}{i}" for i in range(n)]

    def work() -> dict[str, Any]:
        warm_up([f"warm-{prefix}0", f"warm-{prefix}1"])
        return run_burst(job_ids, interval, latency, box, profile, start, trigger)

    result = in_child(work, limit=3 * box + 60)
    result.update(n=n, start=start, trigger=trigger)
    print(f"[density] burst {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def _stall_row(
    name: str, target_ms: float | None, stall: float | None, note: str, target: str = ""
) -> Metric:
    """A loop-stall row, judged against ``target_ms`` (shown as ``target``) unless it is ``None``."""
    return Metric(
        SCENARIO,
        name,
        stall,
        target="" if target_ms is None else target or f"<= {target_ms:.0f} ms",
        met=None if target_ms is None else (stall is not None and stall <= target_ms),
        unit="ms",
        note=note,
    )


def _burst_metrics(bursts: list[dict[str, Any]], params: dict[str, Any]) -> list[Metric]:
    # The takeover targets: an absolute stall at the triggerer's default capacity; beyond it,
    # a ratio to Airflow's own DateTimeTrigger in the same run, since Python's full collections
    # of the triggerer's heap, which no trigger controls, dominate there.
    stall_target_ms = float(params.get("stall_target_ms", 100.0))
    absolute_sizes = {int(n) for n in params.get("stall_target_sizes", [1000])}
    floor_ratio = float(params.get("stall_floor_ratio", 1.5))
    ratio_sizes = {int(n) for n in params.get("stall_floor_ratio_sizes", [5000])}
    p99_target_ms = float(params.get("p99_lag_target_ms", 1000.0))
    metrics = []
    # What Airflow's own DateTimeTrigger showed at the same N: the floor for any trigger.
    floors = {
        burst["n"]: burst["max_stall_ms"]
        for burst in bursts
        if burst.get("trigger") == "core" and burst.get("max_stall_ms") is not None
    }
    for burst in bursts:
        n, start = burst["n"], burst.get("start", "triggerer")
        label = "triggerer's start" if start == "triggerer" else "all in one iteration"
        if "error" in burst:
            metrics.append(
                Metric(SCENARIO, f"N={n:,} start burst ({label}): ERROR", None, note=burst["error"][-300:])
            )
            continue
        if burst.get("trigger") == "core":
            label = "Airflow's DateTimeTrigger, triggerer's start"
            metrics += [
                Metric(
                    SCENARIO,
                    f"N={n:,} max loop stall at start, as the watchdog saw it ({label})",
                    burst["max_stall_ms"],
                    unit="ms",
                    note=(
                        f"info: the floor for any trigger; {burst['full_gcs']} full collections, the "
                        f"longest {burst['max_full_gc_ms']:.0f} ms; without them "
                        f"{burst['max_stall_without_gc_ms']:.0f} ms"
                    ),
                )
            ]
            continue
        # Judged: the triggerer's own way of starting them, the stall as its watchdog sees it.
        judged = start == "triggerer" and n in absolute_sizes | ratio_sizes
        target_ms: float | None = stall_target_ms if judged else None
        target = ""
        if judged and n in ratio_sizes:
            floor = floors.get(n)
            target_ms = None if floor is None else floor_ratio * floor
            target = f"<= {floor_ratio:g}x DateTimeTrigger" + (
                "" if floor is None else f" ({target_ms:.0f} ms)"
            )
        ratio = (
            f"; Airflow's DateTimeTrigger, same N: {floors[n]:.0f} ms, "
            f"ratio {burst['max_stall_ms'] / floors[n]:.2f}"
            if n in floors and floors[n] and burst["max_stall_ms"] is not None
            else ""
        )

        metrics += [
            _stall_row(
                f"N={n:,} max loop stall at start, full GCs taken out ({label})",
                None,
                burst["max_stall_without_gc_ms"],
                "info: the stall of the triggers' own work: each beat less the full-GC pauses inside it",
            ),
            _stall_row(
                f"N={n:,} max loop stall at start, as the watchdog saw it ({label})",
                target_ms,
                burst["max_stall_ms"],
                "full garbage collections included" + ratio,
                target,
            ),
            Metric(
                SCENARIO,
                f"N={n:,} full GCs in the window / longest pause ({label})",
                burst["max_full_gc_ms"],
                unit="ms",
                note=(
                    f"info: {burst['full_gcs']} full collections; one of the idle heap "
                    f"({burst['idle_objects']:,} objects, Airflow imported, no trigger) took "
                    f"{burst['idle_full_gc_ms']:.0f} ms"
                ),
            ),
            Metric(
                SCENARIO,
                f"N={n:,} loop CPU in the longest beat at start ({label})",
                burst["max_stall_cpu_ms"],
                unit="ms",
                note="info: the stall's own work, GC included; other processes cannot inflate it",
            ),
            Metric(
                SCENARIO,
                f"N={n:,} poll lag p99 after the first poll ({label})",
                burst["later_lag_p99_ms"],
                target=f"< {p99_target_ms:.0f} ms" if judged and n in absolute_sizes else "",
                met=(burst["later_lag_p99_ms"] or 0) < p99_target_ms
                if judged and n in absolute_sizes
                else None,
                unit="ms",
            ),
            Metric(
                SCENARIO,
                f"N={n:,} all first answers after ({label})",
                burst["first_answers_s"],
                unit="s",
                note="info: polls pass the loop's pacing gate a few per millisecond",
            ),
        ]
    return metrics


def _metrics(runs: list[dict[str, Any]], params: dict[str, Any]) -> list[Metric]:
    p99_target_ms = float(params.get("p99_lag_target_ms", 1000.0))
    rss_target_kb = float(params.get("rss_per_wait_target_kb", 100.0))
    target_n = int(params.get("target_n", 5000))
    by_key = {(run["n"], run["side"]): run for run in runs}
    metrics = [
        Metric(SCENARIO, f"N={run['n']:,} {run['side']}: ERROR", None, note=run["error"][-300:])
        for run in runs
        if "error" in run
    ]
    for n in sorted({run["n"] for run in runs}):
        ours = by_key.get((n, "ours"))
        if ours is None or "error" in ours:
            continue
        at_target = n == target_n
        for base_side in ("to_thread", "to_thread_sized"):
            base = by_key.get((n, base_side))
            if base is None or "error" in base:
                continue
            metrics.extend(_side_rows(n, ours, base, base_side, at_target, p99_target_ms, rss_target_kb))
        metrics.append(
            Metric(
                SCENARIO,
                f"N={n:,} unanswered polls at stop (ours)",
                ours["censored_polls"],
                unit="polls",
                note="info: their wait so far counts as lag (a lower bound)",
            )
        )
        metrics.append(
            Metric(
                SCENARIO,
                f"N={n:,} GETs per answered poll (ours)",
                ours["sim_requests"] / ours["answered_polls"] if ours["answered_polls"] else None,
                1,
                unit="req",
                baseline_name="floor",
                note="info: GETs the simulator answered / answers the waits received",
            )
        )
        metrics.append(
            Metric(
                SCENARIO,
                f"N={n:,} event-loop thread waiting for a CPU (ours)",
                ours.get("loop_cpu_wait_s"),
                unit="s",
                note="info: time other processes on the machine held both cores",
            )
        )
        metrics.append(
            Metric(
                SCENARIO,
                f"N={n:,} TCP connections opened (ours)",
                ours["sim_connections"],
                unit="conn",
                note="info: the shared pool caps them at 256",
            )
        )
        metrics.append(
            Metric(
                SCENARIO,
                f"N={n:,} simulator CPU during ours",
                ours.get("sim_cpu_share"),
                unit="cores",
                note="info: far below 1 means the simulator was not the limit",
            )
        )
    metrics.extend(_marginal_rss(by_key, sorted({run["n"] for run in runs})))
    return metrics


def _marginal_rss(by_key: dict[tuple[int, str], dict[str, Any]], sizes: list[int]) -> list[Metric]:
    """RSS added per extra wait between the smallest and largest N: one-time costs cancel out."""
    if len(sizes) < 2:
        return []
    low, high = sizes[0], sizes[-1]

    def slope(side: str) -> float | None:
        a, b = by_key.get((low, side)), by_key.get((high, side))
        if not a or not b or "error" in a or "error" in b:
            return None
        grown = (b["peak_rss_mb"] - b["rss0_mb"]) - (a["peak_rss_mb"] - a["rss0_mb"])
        return grown * 1024 / (high - low)

    ours = slope("ours")
    rows = []
    for side in ("to_thread", "to_thread_sized"):
        base = slope(side)
        if ours is None or base is None:
            continue
        rows.append(
            Metric(
                SCENARIO,
                f"marginal RSS per wait, N={low:,} to {high:,}",
                ours,
                base,
                ratio(ours, base),
                unit="KB",
                baseline_name=BASELINE_NAMES[side],
                note="info: one-time costs cancel out",
            )
        )
    return rows


def _side_rows(
    n: int,
    ours: dict[str, Any],
    base: dict[str, Any],
    base_side: str,
    at_target: bool,
    p99_target_ms: float,
    rss_target_kb: float,
) -> list[Metric]:
    name = BASELINE_NAMES[base_side]
    first = base_side == "to_thread"  # targets are judged once, against the anchor pattern
    judged = at_target and first

    def row(
        metric: str, key: str, unit: str, target: str = "", met: bool | None = None, note: str = ""
    ) -> Metric:
        lag = key.startswith("lag")
        return Metric(
            SCENARIO,
            f"N={n:,} {metric}",
            ours[key],
            base[key],
            ratio(ours[key], base[key]),
            target,
            met,
            unit,
            name,
            note,
            ours_lower_bound=lag and ours.get("censored_polls", 0) > 0,
            baseline_lower_bound=lag and base.get("censored_polls", 0) > 0,
        )

    p99 = ours["lag_p99_ms"]
    return [
        row(
            "waits completed",
            "completed",
            "waits",
            f"== {n}" if first else "",
            ours["completed"] == n if first else None,
            f"stopped {ours['box_s']:.1f} s after the first start" if first else "",
        ),
        row("poll lag p50", "lag_p50_ms", "ms"),
        row(
            "poll lag p99",
            "lag_p99_ms",
            "ms",
            f"< {p99_target_ms:.0f} ms" if judged else "",
            (p99 is not None and p99 < p99_target_ms and ours["censored_polls"] == 0) if judged else None,
        ),
        row(
            "peak RSS per wait",
            "rss_per_wait_kb",
            "KB",
            f"< {rss_target_kb:.0f} KB" if judged else "",
            ours["rss_per_wait_kb"] < rss_target_kb if judged else None,
        ),
        row("CPU seconds", "cpu_s", "s"),
        row("CPU per answered poll", "cpu_ms_per_poll", "ms"),
        row("peak threads", "peak_threads", "threads"),
    ]
