import asyncio, gc, logging, time
import pytest
from airflow_provider_tfy.testing import GatewaySimulator
from .test_trigger import make_trigger, collect_events, _ticker

@pytest.mark.parametrize("variant", ["plain", "gcfreeze", "gcoff", "plain2"])
def test_probe(api_key, set_connection, variant):
    gc_times = []
    def cb(phase, info):
        if phase == "start": cb.t = time.perf_counter()
        else: gc_times.append((info["generation"], time.perf_counter() - cb.t))
    with GatewaySimulator(api_key=api_key, latency=0.2) as sim:
        set_connection(sim)
        warm_up = sim.add_job(statuses=("succeeded",))
        jobs = [sim.add_job(statuses=("queued", "running", "succeeded")) for _ in range(20)]
        async def scenario():
            await collect_events(make_trigger(warm_up.id))
            if variant == "gcfreeze":
                gc.collect(); gc.freeze()
            if variant == "gcoff":
                gc.disable()
            gc.callbacks.append(cb)
            stop, gaps = asyncio.Event(), []
            ticker = asyncio.ensure_future(_ticker(stop, gaps))
            await asyncio.sleep(0.05)
            await asyncio.gather(*(collect_events(make_trigger(job.id)) for job in jobs))
            stop.set(); await ticker
            gc.callbacks.remove(cb)
            gc.enable(); gc.unfreeze()
            return gaps
        gaps = asyncio.run(scenario())
    with open("/tmp/probe.txt", "a") as f:
        print(variant, "MAX", round(max(gaps), 3), "gc", [(g, round(t, 3)) for g, t in gc_times if t > 0.005], file=f)
