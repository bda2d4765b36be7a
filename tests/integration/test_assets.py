"""Asset events: a succeeded job puts its id, model name and trained tokens into the event's extra.

``dag.test()`` of a sensor with ``outlets`` against the simulator, in poke, reschedule and
deferrable modes; the asset events are read back from the metadata DB, where a DAG scheduled on
the asset would find them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from airflow_provider_tfy.testing import GatewaySimulator

from .conftest import (
    CONN_ID,
    EXAMPLE_TIMEOUT,
    FAST_HOOK_PARAMS,
    MODES,
    POKE_INTERVAL,
    register_dag,
    unique_dag_id,
)

pytestmark = pytest.mark.usefixtures("airflow_db")


def asset_events(uri: str) -> list[Any]:
    """The asset events recorded for ``uri``, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri)
            .order_by(AssetEvent.id)
        )
        events = list(session.scalars(query))
        session.expunge_all()
    return events


def sensors_dag(prefix: str, outlets: dict[str, list[Any]], jobs: dict[str, str]) -> Any:
    """One DAG, one sensor per entry (task id = key), each waiting its own way with its outlets.

    Keys are waiting modes (``poke``, ``reschedule``, ``deferrable``) or any name for poke mode.
    Several sensors in one DAG keep this to one ``dag.test()`` per test.
    """
    from airflow.sdk import DAG

    from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor

    with DAG(dag_id=unique_dag_id(prefix), schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        for name, task_outlets in outlets.items():
            TrueFoundryFineTuningJobSensor(
                task_id=name,
                job_id=jobs[name],
                truefoundry_conn_id=CONN_ID,
                poke_interval=POKE_INTERVAL,
                timeout=EXAMPLE_TIMEOUT,
                hook_params=dict(FAST_HOOK_PARAMS),
                outlets=task_outlets,
                **MODES.get(name, MODES["poke"]),
            )
    register_dag(dag)
    return dag


def test_a_succeeded_job_puts_the_model_into_the_asset_event_in_every_mode(
    connected_gateway: GatewaySimulator,
) -> None:
    from airflow.sdk import Asset, AssetAlias

    uri = f"truefoundry://models/{unique_dag_id('assets')}"
    jobs = {
        mode: connected_gateway.add_job(
            statuses=("running", "succeeded"),
            trained_tokens=4321,
            fine_tuned_model=f"ft:gpt-4o-mini:acme:{mode}",
        ).id
        for mode in MODES
    }
    outlets: dict[str, list[Any]] = {mode: [Asset(f"{uri}-{mode}")] for mode in MODES}
    # Two assets get the same extra; an alias needs an asset to attach, so it is left alone.
    outlets["poke"] += [Asset(f"{uri}-poke-copy"), AssetAlias(unique_dag_id("alias"))]

    run = sensors_dag("assets", outlets, jobs).test()

    assert str(run.state) == "success"
    for mode, job_id in jobs.items():
        expected = {
            "job_id": job_id,
            "fine_tuned_model": f"ft:gpt-4o-mini:acme:{mode}",
            "trained_tokens": 4321,
        }
        for each in (f"{uri}-{mode}", *([f"{uri}-poke-copy"] if mode == "poke" else [])):
            events = asset_events(each)
            assert len(events) == 1, f"{mode}: {len(events)} events for {each}"
            assert events[0].extra == expected, mode


def test_a_job_that_did_not_succeed_emits_no_asset_event(connected_gateway: GatewaySimulator) -> None:
    from airflow.sdk import Asset

    uri = f"truefoundry://models/{unique_dag_id('unsucceeded')}"
    outcomes = ("failed", "cancelled")
    jobs = {outcome: connected_gateway.add_job(statuses=("running", outcome)).id for outcome in outcomes}

    run = sensors_dag("assets_unsucceeded", {o: [Asset(f"{uri}-{o}")] for o in outcomes}, jobs).test()

    assert str(run.state) == "failed"
    for outcome in outcomes:
        assert asset_events(f"{uri}-{outcome}") == [], outcome


def test_the_create_operator_puts_the_model_into_the_asset_event(connected_gateway: GatewaySimulator) -> None:
    """Waiting in the worker and deferred; the pipeline's consumer reads exactly this extra."""
    from airflow.sdk import DAG, Asset

    from airflow_provider_tfy.operators.fine_tuning import TrueFoundryCreateFineTuningJobOperator

    connected_gateway.set_create_script(statuses=("running", "succeeded"), trained_tokens=99)
    uri = f"truefoundry://models/{unique_dag_id('create')}"
    waits = {"sync": False, "deferrable": True}
    with DAG(dag_id=unique_dag_id("assets_create"), schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        for name, deferrable in waits.items():
            TrueFoundryCreateFineTuningJobOperator(
                task_id=name,
                model="gpt-4o-mini-2024-07-18",
                training_file=f"file-train-{name}",
                provider_name="openai-main",
                truefoundry_conn_id=CONN_ID,
                hook_params=dict(FAST_HOOK_PARAMS),
                poll_interval=POKE_INTERVAL,
                wait_timeout=EXAMPLE_TIMEOUT,
                deferrable=deferrable,
                outlets=[Asset(f"{uri}-{name}")],
            )
    register_dag(dag)

    run = dag.test()

    assert str(run.state) == "success"
    jobs = {job.training_file: job for job in connected_gateway.created_jobs}
    for name in waits:
        job = jobs[f"file-train-{name}"]
        [event] = asset_events(f"{uri}-{name}")
        assert event.extra == {
            "job_id": job.id,
            "fine_tuned_model": job.fine_tuned_model,
            "trained_tokens": 99,
        }
