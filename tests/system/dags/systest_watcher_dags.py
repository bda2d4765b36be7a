"""A DAG scheduled on an asset watched by the event trigger (``test_watcher_stack.py``).

The watcher reports jobs with metadata ``{"systest": "watcher"}`` that succeed; each consumer run
returns the ids of the jobs whose events triggered it.
"""

from __future__ import annotations

from datetime import datetime

from airflow_provider_tfy.version_compat import AIRFLOW_V_3_3_PLUS

if AIRFLOW_V_3_3_PLUS:
    from airflow.sdk import DAG, Asset, AssetWatcher, get_current_context, task

    from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobEventTrigger

    WATCHED = Asset(
        "truefoundry://systest/watched-jobs",
        watchers=[
            AssetWatcher(
                name="systest_watcher",
                trigger=TrueFoundryFineTuningJobEventTrigger(
                    job_metadata={"systest": "watcher"}, poll_interval=2, hook_params={"retry_delay": 0.2}
                ),
            )
        ],
    )

    @task
    def reported_jobs() -> list[str]:
        events = get_current_context()["triggering_asset_events"][WATCHED]
        return [event.extra["payload"]["id"] for event in events]

    with DAG(
        dag_id="systest_watcher_consumer",
        schedule=[WATCHED],
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
    ):
        reported_jobs()
