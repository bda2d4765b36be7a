"""OpenLineage: what a fine-tuning task read and made, as Airflow's OpenLineage listener sends it.

The facets are checked as plain objects first; then a real ``airflow dags test`` runs a DAG with
``apache-airflow-providers-openlineage`` installed and its file transport configured, and the
COMPLETE event it wrote is read back: inputs, outputs and the job's run facet.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from airflow_cli import run_airflow

from airflow_provider_tfy import lineage
from airflow_provider_tfy.testing import GatewaySimulator

from .conftest import connection_json, unique_dag_id

SUCCEEDED_JOB = {
    "id": "ftjob-1",
    "status": "succeeded",
    "model": "gpt-4o-mini-2024-07-18",
    "training_file": "file-train",
    "validation_file": "file-valid",
    "fine_tuned_model": "ft:gpt-4o-mini:acme::abc",
    "trained_tokens": 1234,
}


@pytest.mark.parametrize(
    ("base_url", "namespace"),
    [
        ("https://gateway.truefoundry.ai", "truefoundry://gateway.truefoundry.ai"),
        ("https://acme.truefoundry.cloud/api/llm/", "truefoundry://acme.truefoundry.cloud/api/llm"),
        ("http://127.0.0.1:8080", "truefoundry://127.0.0.1:8080"),
    ],
)
def test_the_namespace_names_the_gateway(base_url: str, namespace: str) -> None:
    assert lineage.namespace(base_url) == namespace


def test_a_succeeded_job_reads_its_files_and_makes_its_model() -> None:
    result = lineage.operator_lineage(base_url="https://gateway.truefoundry.ai", job=SUCCEEDED_JOB)

    ns = "truefoundry://gateway.truefoundry.ai"
    assert [(d.namespace, d.name) for d in result.inputs] == [(ns, "file-train"), (ns, "file-valid")]
    assert [(d.namespace, d.name) for d in result.outputs] == [(ns, "ft:gpt-4o-mini:acme::abc")]
    facet = result.run_facets[lineage.RUN_FACET_NAME]
    assert (facet.job_id, facet.base_model, facet.status, facet.trained_tokens) == (
        "ftjob-1",
        "gpt-4o-mini-2024-07-18",
        "succeeded",
        1234,
    )


def test_a_job_without_a_model_yet_has_inputs_and_no_output() -> None:
    """A create that does not wait: the job exists, the model does not yet."""
    job = {"id": "ftjob-2", "status": "queued", "model": "m"}
    result = lineage.operator_lineage(
        base_url="https://gw.example", job=job, training_file="file-t", validation_file=None
    )

    assert [d.name for d in result.inputs] == ["file-t"]
    assert result.outputs == []
    assert result.run_facets[lineage.RUN_FACET_NAME].status == "queued"


def test_the_asset_extra_names_the_job_and_its_model() -> None:
    assert lineage.asset_extra(SUCCEEDED_JOB) == {
        "job_id": "ftjob-1",
        "fine_tuned_model": "ft:gpt-4o-mini:acme::abc",
        "trained_tokens": 1234,
    }


# One DAG: a sensor per waiting mode and a create operator, so one ``airflow dags test`` covers all.
LINEAGE_DAG = """
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_tfy.operators.fine_tuning import TrueFoundryCreateFineTuningJobOperator
from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor

with DAG(dag_id={dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    for mode, job_id in {jobs!r}.items():
        TrueFoundryFineTuningJobSensor(
            task_id=mode,
            job_id=job_id,
            poke_interval=0.2,
            timeout=60,
            deferrable=mode == "deferrable",
            hook_params={{"max_retries": 1, "retry_delay": 0.05}},
        )
    TrueFoundryCreateFineTuningJobOperator(
        task_id="create",
        model="gpt-4o-mini-2024-07-18",
        training_file="file-train-create",
        validation_file="file-valid-create",
        provider_name="openai-main",
        poll_interval=0.2,
        wait_timeout=60,
        hook_params={{"max_retries": 1, "retry_delay": 0.05}},
    )
"""


def run_with_openlineage(tmp_path: Path, gateway: GatewaySimulator, dag_id: str, source: str) -> list[Any]:
    """``airflow dags test`` one DAG file with the OpenLineage file transport; the events it wrote."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    events_file = tmp_path / "openlineage.jsonl"
    env = {
        **os.environ,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "tfy-tests",
        "AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT": connection_json(gateway.url, gateway.api_key),
    }
    run_airflow("dags", "test", dag_id, env=env, timeout=240)
    assert events_file.exists(), "the OpenLineage listener wrote no event"
    return [json.loads(line) for line in events_file.read_text(encoding="utf-8").splitlines() if line]


def complete_event(events: list[Any], job_name: str) -> Any:
    [event] = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == job_name]
    return event


def datasets(event: Any, side: str) -> list[tuple[str, str]]:
    return [(dataset["namespace"], dataset["name"]) for dataset in event[side]]


def test_the_sensor_and_the_create_operator_report_lineage_on_complete(
    tmp_path: Path, gateway: GatewaySimulator, airflow_db: Path
) -> None:
    """The sensor waiting in a worker and deferred, and the create operator: each COMPLETE event."""
    modes = ("poke", "deferrable")
    jobs = {
        mode: gateway.add_job(
            statuses=("running", "succeeded"),
            trained_tokens=777,
            fine_tuned_model=f"ft:gpt-4o-mini:acme::{mode}",
            extra_fields={"training_file": f"file-train-{mode}", "validation_file": f"file-valid-{mode}"},
        )
        for mode in modes
    }
    dag_id = unique_dag_id("lineage_sensor")
    gateway.set_create_script(statuses=("running", "succeeded"), trained_tokens=777)
    source = LINEAGE_DAG.format(dag_id=dag_id, jobs={mode: job.id for mode, job in jobs.items()})

    events = run_with_openlineage(tmp_path, gateway, dag_id, source)

    ns = "truefoundry://" + gateway.url.split("://", 1)[1].rstrip("/")
    for mode, job in jobs.items():
        event = complete_event(events, f"{dag_id}.{mode}")
        assert datasets(event, "inputs") == [(ns, f"file-train-{mode}"), (ns, f"file-valid-{mode}")], mode
        assert datasets(event, "outputs") == [(ns, f"ft:gpt-4o-mini:acme::{mode}")], mode
        facet = event["run"]["facets"][lineage.RUN_FACET_NAME]
        assert facet["job_id"] == job.id
        assert facet["status"] == "succeeded"
        assert facet["trained_tokens"] == 777
        assert facet["base_model"] == job.model
        assert facet["_schemaURL"] == lineage.RUN_FACET_SCHEMA_URL
    [created] = gateway.created_jobs
    event = complete_event(events, f"{dag_id}.create")
    assert datasets(event, "inputs") == [(ns, "file-train-create"), (ns, "file-valid-create")]
    assert datasets(event, "outputs") == [(ns, created.fine_tuned_model)]
    facet = event["run"]["facets"][lineage.RUN_FACET_NAME]
    assert (facet["job_id"], facet["base_model"], facet["status"], facet["trained_tokens"]) == (
        created.id,
        "gpt-4o-mini-2024-07-18",
        "succeeded",
        777,
    )
    assert gateway.api_key not in json.dumps(events)
