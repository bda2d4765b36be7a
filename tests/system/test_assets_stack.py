"""Assets in the real stack: a new fine-tuned model starts the DAG scheduled on it.

The example pipeline (upload → create and wait, deferred → register) runs in the stack's
scheduler, workers and triggerer; its ``fine_tune`` task has the model asset among its outlets. The
scheduler then starts ``example_truefoundry_model_consumer`` (scheduled on that asset) by itself,
and its task reads the model's name from the triggering asset event.

The same finished run is photographed for the docs in Debian's Chromium: its Grid view, and the
deferred wait's task log with the status changes (see ``tests/docs_pictures.py``).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from airflow_stack import RUN_TIMEOUT, AirflowStack, wait_until
from docs_pictures import chromium_page, pictures_dir, take_picture

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]

PIPELINE = "example_truefoundry_pipeline"
CONSUMER = "example_truefoundry_model_consumer"
MODEL_URI = "truefoundry://fine-tuned-models/example-support-bot"


def upstream_events(stack: AirflowStack, run_id: str) -> list[dict[str, Any]]:
    """The asset events that triggered one consumer run."""
    answer = stack.api_json("GET", f"/api/v2/dags/{CONSUMER}/dagRuns/{run_id}/upstreamAssetEvents")
    return list(answer["asset_events"])


@pytest.fixture(scope="module")
def pipeline_run(airflow_stack: AirflowStack) -> tuple[str, dict[str, Any], set[str]]:
    """One finished run of the example pipeline: its run id, its job, the consumer runs before it."""
    stack = airflow_stack
    earlier_runs = set(stack.run_states(CONSUMER))
    body = {"logical_date": None, "conf": {"suffix": f"assets-{secrets.token_hex(4)}"}}
    run_id = str(stack.api_json("POST", f"/api/v2/dags/{PIPELINE}/dagRuns", json=body)["dag_run_id"])
    assert stack.wait_for_runs(PIPELINE, [run_id]) == {run_id: "success"}, stack.task_states(PIPELINE, run_id)
    job = stack.xcom(PIPELINE, run_id, "fine_tune")
    assert job["fine_tuned_model"]
    return run_id, job, earlier_runs


def test_a_new_model_starts_the_consumer_dag_which_reads_its_name(
    airflow_stack: AirflowStack, pipeline_run: tuple[str, dict[str, Any], set[str]]
) -> None:
    stack = airflow_stack
    _, job, earlier_runs = pipeline_run

    def consumer_run_of_our_event() -> tuple[str, list[dict[str, Any]]] | None:
        # Other tests may run the pipeline too: find the consumer run that our event triggered.
        for consumer_run in set(stack.run_states(CONSUMER)) - earlier_runs:
            events = upstream_events(stack, consumer_run)
            if any(event["extra"].get("job_id") == job["id"] for event in events):
                return consumer_run, events
        return None

    consumer_run, events = wait_until(
        consumer_run_of_our_event, RUN_TIMEOUT, f"a run of {CONSUMER} triggered by job {job['id']}", period=1
    )
    ours = next(event for event in events if event["extra"].get("job_id") == job["id"])
    assert ours["uri"] == MODEL_URI
    assert ours["extra"] == {
        "job_id": job["id"],
        "fine_tuned_model": job["fine_tuned_model"],
        "trained_tokens": job.get("trained_tokens"),
    }
    assert stack.wait_for_runs(CONSUMER, [consumer_run]) == {consumer_run: "success"}
    # The consumer reads the newest triggering event; with ours alone, that is our model.
    newest = max(events, key=lambda event: (event["timestamp"], event["id"]))
    assert stack.xcom(CONSUMER, consumer_run, "evaluate_new_model") == newest["extra"]["fine_tuned_model"]
    if len(events) == 1:
        assert stack.xcom(CONSUMER, consumer_run, "evaluate_new_model") == job["fine_tuned_model"]


def top_of_page(height: float) -> dict[str, float]:
    """A clip of the page's full width (1280 CSS pixels) and its top ``height`` pixels."""
    return {"x": 0, "y": 0, "width": 1280, "height": height}


def test_pictures_of_the_finished_pipeline_run(
    airflow_stack: AirflowStack,
    pipeline_run: tuple[str, dict[str, Any], set[str]],
    tmp_path: Path,
) -> None:
    """The Grid view (upload → create → register, all green) and the deferred wait's task log."""
    stack = airflow_stack
    run_id, job, _ = pipeline_run
    assert set(stack.task_states(PIPELINE, run_id).values()) == {"success"}
    log = stack.task_log(PIPELINE, run_id, "fine_tune")
    assert job["id"] in log
    for status in ("running", "succeeded"):
        assert f"status={status}" in log, f"the task log does not show the status {status}"

    with chromium_page(tmp_path / "profile", width=1280, height=760) as page:
        page.set_default_timeout(120_000)  # the React UI on a loaded 2-core CI box
        try:
            page.goto(f"{stack.base_url}/dags/{PIPELINE}/runs/{run_id}")
            page.get_by_text("register_model").first.wait_for()
            page.wait_for_load_state("networkidle")
            page.mouse.move(0, 0)
            # The header, the grid (all green) and the run's task instances.
            take_picture(
                page, "grid-pipeline", stack.api_key, clip={"x": 0, "y": 0, "width": 1280, "height": 600}
            )

            page.goto(f"{stack.base_url}/dags/{PIPELINE}/runs/{run_id}/tasks/fine_tune")
            page.get_by_text("status=succeeded").first.wait_for()
            page.wait_for_load_state("networkidle")
            page.mouse.move(0, 0)
            # The task's header and its log: created, queued, deferred, running, succeeded.
            take_picture(page, "deferred-wait-log", stack.api_key, clip=top_of_page(620))
        except Exception:
            page.screenshot(path=str(pictures_dir() / "FAILED-stack-page.png"), full_page=True)
            raise
