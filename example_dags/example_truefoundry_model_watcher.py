"""Evaluate every model a team fine-tunes, wherever the job was started: an asset watcher.

``TrueFoundryFineTuningJobEventTrigger`` polls the gateway's job list from the triggerer and
reports each job of team ``nlp`` (its ``metadata``) that succeeds, once. Each report becomes an
event of the asset below, whose ``extra["payload"]`` is the job as the sensor returns it, and
starts this DAG. Needs Airflow 3.3 (the asset's state store keeps what the watcher has seen across
triggerer restarts); on older Airflow this file defines no DAG. See ``docs/watcher.md``.
"""

from __future__ import annotations

from datetime import datetime

from airflow_provider_tfy.version_compat import AIRFLOW_V_3_3_PLUS

if AIRFLOW_V_3_3_PLUS:
    from airflow.sdk import DAG, Asset, AssetWatcher, get_current_context, task

    from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobEventTrigger

    TEAM_MODELS = Asset(
        "truefoundry://fine-tuning-jobs/team-nlp",
        watchers=[
            AssetWatcher(
                name="team_nlp_succeeded_jobs",
                trigger=TrueFoundryFineTuningJobEventTrigger(
                    job_metadata={"team": "nlp"}, statuses=["succeeded"], poll_interval=60
                ),
            )
        ],
    )

    @task
    def evaluate_models() -> list[str]:
        """Stand-in for the evaluation: each job reported since the last run names a model.

        Airflow starts one run for the asset events that arrived since the previous run was
        created: one job as a rule, several when jobs end close together, so evaluate them all.
        """
        models = []
        for event in get_current_context()["triggering_asset_events"][TEAM_MODELS]:
            job = event.extra["payload"]
            print(f"Evaluating {job['fine_tuned_model']} (job {job['id']}, {job['trained_tokens']} tokens)")
            models.append(str(job["fine_tuned_model"]))
        return models

    with DAG(
        dag_id="example_truefoundry_model_watcher",
        schedule=[TEAM_MODELS],
        start_date=datetime(2026, 1, 1),
        catchup=False,
        tags=["truefoundry", "example"],
    ) as watcher_dag:
        evaluate_models()
