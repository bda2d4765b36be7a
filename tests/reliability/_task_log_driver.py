"""Run DAG tasks the way a real Airflow worker does, so that their logs land on disk.

Used by ``test_secrets.py`` in a subprocess with its own ``AIRFLOW_HOME``. Each task runs under
Airflow's supervisor (``supervise_task``): the task is forked into a child process whose output
the supervisor masks and writes to ``$AIRFLOW_HOME/logs/dag_id=.../attempt=1.log``, exactly as on
a worker. Only the Execution API is in-process instead of behind an api-server.

Usage: ``python _task_log_driver.py DAG_ID TASK_ID [TASK_ID ...]``; prints one JSON line per task.
"""

from __future__ import annotations

import json
import sys


def main(dag_id: str, task_ids: list[str]) -> None:
    from airflow import settings
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.executors.workloads import BundleInfo, ExecuteTask
    from airflow.models.dagrun import DagRun, get_or_create_dagrun
    from airflow.sdk import timezone
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor, supervise_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    bundle = manager.get_bundle("dags-folder")
    bundle.initialize()
    bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name="dags-folder")
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    sync_bag_to_db(bag, "dags-folder", None)
    dag = bag.dags[dag_id]
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))

    session = settings.Session()
    now = timezone.utcnow()
    run = get_or_create_dagrun(
        dag=scheduler_dag,
        start_date=now,
        logical_date=now,
        data_interval=None,
        run_after=now,
        run_id=DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=now, run_after=now),
        session=session,
        conf=None,
        triggered_by=DagRunTriggeredByType.TEST,
        triggering_user_name="reliability",
    )
    client = InProcessTestSupervisor._api_client(dag)
    for task_id in task_ids:
        ti = run.get_task_instance(task_id, session=session)
        ti.try_number = 1
        ti.state = TaskInstanceState.QUEUED
        session.commit()
        workload = ExecuteTask.make(ti, bundle_info=BundleInfo(name="dags-folder"))
        supervise_task(
            ti=workload.ti,
            bundle_info=workload.bundle_info,
            dag_rel_path=workload.dag_rel_path,
            token="",
            client=client,
            log_path=workload.log_path,
        )
        session.expire_all()
        state = run.get_task_instance(task_id, session=session).state
        print(json.dumps({"task_id": task_id, "state": str(state), "log": workload.log_path}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
