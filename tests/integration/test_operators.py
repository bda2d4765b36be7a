"""Whole pipeline runs (``dag.test()``): upload → create exactly once → wait → hand the model on.

The operators talk to the gateway simulator over real HTTP through a real Airflow connection; in
deferrable mode ``dag.test()`` runs the trigger inline and retries failed tasks. ``dag.test()``
with the same ``logical_date`` deletes and re-creates the run under the same run id, which is
what a clear is to the operator (same DAG, task, run and map index, a new try): the clear tests
use it. The simulator stands in for the gateway and counts what it saw: jobs created, create
requests, cancels.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_provider_tfy.protocol import IDEMPOTENCY_METADATA_KEY
from airflow_provider_tfy.testing import Fault, GatewaySimulator

from .conftest import (
    CONN_ID,
    FAST_HOOK_PARAMS,
    POKE_INTERVAL,
    ROOT,
    all_xcoms_text,
    assert_secret_free,
    has_xcom,
    log_messages,
    register_dag,
    rendered_fields,
    run_dag,
    task_instances,
    task_states,
    unique_dag_id,
    xcom_value,
)

pytestmark = pytest.mark.usefixtures("airflow_db", "example_env")

PIPELINE_FILE = ROOT / "example_dags" / "example_truefoundry_pipeline.py"
TRAINING_FILE = ROOT / "example_dags" / "example_training_data.jsonl"
UPLOAD, CREATE, REGISTER = "upload_training_file", "fine_tune", "register_model"
PROVIDER = "openai-main"
MODEL = "gpt-4o-mini-2024-07-18"
WAITS = {"sync": False, "deferrable": True}
DEFERRED_LINE = "Pausing task as DEFERRED"
JOB_ERROR = {
    "code": "invalid_training_file",
    "message": "Line 3 is not valid JSON.",
    "param": "training_file",
}
LOGICAL_DATE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


@pytest.fixture
def pipeline_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The example pipeline file, imported with fast knobs (it reads the environment at import)."""
    monkeypatch.setenv("TFY_EXAMPLE_RETRY_DELAY", "0")
    spec = importlib.util.spec_from_file_location("tfy_integration_example_pipeline", PIPELINE_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_pipeline(
    prefix: str,
    *,
    deferrable: bool,
    upload: bool = True,
    retries: int = 0,
    **create_kwargs: Any,
) -> Any:
    """A pipeline like the example's, registered in the DB, waiting in the worker or deferred.

    ``upload=False``: the training file id comes from ``params.training_file`` instead of an
    upload task, so a re-run with the same params has the very same inputs.
    """
    from airflow.sdk import DAG, task

    from airflow_provider_tfy.operators.files import TrueFoundryUploadFileOperator
    from airflow_provider_tfy.operators.fine_tuning import TrueFoundryCreateFineTuningJobOperator

    create_kwargs.setdefault("poll_interval", POKE_INTERVAL)
    create_kwargs.setdefault("wait_timeout", 60)
    with DAG(
        dag_id=unique_dag_id(prefix),
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        params={"training_file": "file-unset", "suffix": "demo"},
    ) as dag:
        if upload:
            training_file: Any = TrueFoundryUploadFileOperator(
                task_id=UPLOAD,
                file=str(TRAINING_FILE),
                provider_name=PROVIDER,
                truefoundry_conn_id=CONN_ID,
                hook_params=dict(FAST_HOOK_PARAMS),
            ).output
        else:
            training_file = "{{ params.training_file }}"
        create = TrueFoundryCreateFineTuningJobOperator(
            task_id=CREATE,
            model=MODEL,
            training_file=training_file,
            suffix="{{ params.suffix }}",
            job_metadata={"team": "ml"},
            provider_name=PROVIDER,
            truefoundry_conn_id=CONN_ID,
            hook_params=dict(FAST_HOOK_PARAMS),
            deferrable=deferrable,
            retries=retries,
            retry_delay=timedelta(0),
            **create_kwargs,
        )

        @task
        def register_model(job: dict[str, Any]) -> str:
            print(f"Registering fine-tuned model {job['fine_tuned_model']}")
            return str(job["fine_tuned_model"])

        register_model(create.output)
    register_dag(dag)
    return dag


def create_requests(sim: GatewaySimulator) -> list[Any]:
    return [r for r in sim.requests if r.endpoint == "create"]


def key_of(job: Any) -> str:
    return str(job.metadata[IDEMPOTENCY_METADATA_KEY])


def assert_key_nowhere(key: str, run: Any, output: str, caplog: pytest.LogCaptureFixture) -> None:
    """The API key is in no task log, rendered field, XCom or log record of the run."""
    assert output.strip(), "nothing was captured: the check below would prove nothing"
    assert_secret_free(
        key,
        output,
        json.dumps(rendered_fields(run), default=str),
        all_xcoms_text(run),
        *log_messages(caplog),
    )


# ------------------------------------------------------------------------------------------
# The example pipeline
# ------------------------------------------------------------------------------------------


def test_example_pipeline_uploads_fine_tunes_once_and_registers_the_model(
    pipeline_module, connected_gateway, api_key, capfd, caplog
):
    sim = connected_gateway
    sim.set_create_script(statuses=("queued", "running", "succeeded"), trained_tokens=4_200)

    run, output = run_dag(pipeline_module.pipeline_dag, capfd)

    assert run.state == "success", output[-3000:]
    assert task_states(run) == {UPLOAD: "success", CREATE: "success", REGISTER: "success"}
    assert DEFERRED_LINE in output  # the wait went to the trigger
    # The XCom chain: file id -> job -> model.
    (uploaded,) = sim.files
    assert uploaded.filename == TRAINING_FILE.name
    assert uploaded.purpose == "fine-tune"
    assert uploaded.bytes == TRAINING_FILE.stat().st_size
    assert uploaded.headers["x-tfy-provider-name"] == PROVIDER
    assert xcom_value(run, UPLOAD) == uploaded.id
    assert xcom_value(run, UPLOAD, key="file")["id"] == uploaded.id
    (job,) = sim.created_jobs
    assert job.training_file == uploaded.id
    assert xcom_value(run, CREATE, key="job_id") == job.id
    result = xcom_value(run, CREATE)
    assert result["id"] == job.id
    assert result["status"] == "succeeded"
    assert result["trained_tokens"] == 4_200
    assert result["metadata"]["pipeline"] == "example_truefoundry_pipeline"
    assert xcom_value(run, REGISTER) == job.fine_tuned_model == result["fine_tuned_model"]
    assert "support-bot" in job.fine_tuned_model  # the suffix param reached the create
    assert len(create_requests(sim)) == 1
    assert f"Created fine-tuning job {job.id}" in output
    assert_key_nowhere(api_key, run, output, caplog)


# ------------------------------------------------------------------------------------------
# Outcomes, waiting in the worker and deferred
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wait", list(WAITS))
def test_a_succeeded_job_hands_its_model_downstream(connected_gateway, api_key, capfd, caplog, wait):
    sim = connected_gateway
    dag = build_pipeline("tfy_ops_ok", deferrable=WAITS[wait])

    run, output = run_dag(dag, capfd)

    assert run.state == "success", output[-3000:]
    assert (DEFERRED_LINE in output) is WAITS[wait]
    (job,) = sim.created_jobs
    assert job.training_file == xcom_value(run, UPLOAD) == sim.files[0].id
    assert xcom_value(run, CREATE, key="job_id") == job.id
    assert xcom_value(run, CREATE)["fine_tuned_model"] == job.fine_tuned_model
    assert xcom_value(run, REGISTER) == job.fine_tuned_model
    assert job.metadata["team"] == "ml"
    key = key_of(job)
    assert key.startswith("airflow:")
    assert len(key) <= 64
    # Each status change once: queued (the create's answer), running, succeeded.
    for status in ("queued", "running", "succeeded"):
        assert output.count(f"Fine-tuning job {job.id}: status={status}") == 1, status
    assert sim.cancel_requests(job.id) == 0
    assert_key_nowhere(api_key, run, output, caplog)


@pytest.mark.parametrize("wait", list(WAITS))
@pytest.mark.parametrize(
    ("final", "exception", "reason"),
    [
        ("failed", "FineTuningJobFailed", "failed: invalid_training_file: Line 3 is not valid JSON."),
        ("cancelled", "FineTuningJobCancelled", "was cancelled before it finished; no model was produced."),
    ],
)
def test_a_job_that_ends_badly_fails_the_task_with_the_gateways_reason_and_no_retry(
    connected_gateway, api_key, capfd, caplog, wait, final, exception, reason
):
    sim = connected_gateway
    sim.set_create_script(statuses=("queued", "running", final), error=JOB_ERROR)
    dag = build_pipeline("tfy_ops_bad", deferrable=WAITS[wait], retries=2)

    run, output = run_dag(dag, capfd)

    assert run.state == "failed"
    assert task_states(run) == {UPLOAD: "success", CREATE: "failed", REGISTER: "upstream_failed"}
    (job,) = sim.created_jobs
    assert f"{exception}: Fine-tuning job '{job.id}' {reason}" in output
    assert task_instances(run)[CREATE].try_number == 1  # no task retry for a job that ended
    assert xcom_value(run, CREATE, key="job_id") == job.id  # pushed before the wait
    assert not has_xcom(run, CREATE)
    assert sim.cancel_requests(job.id) == 0
    assert_key_nowhere(api_key, run, output, caplog)


def test_without_wait_for_completion_the_job_as_created_is_returned(connected_gateway, capfd):
    sim = connected_gateway
    dag = build_pipeline("tfy_ops_nowait", deferrable=False, wait_for_completion=False)

    run, _ = run_dag(dag, capfd)

    (job,) = sim.created_jobs
    assert task_states(run)[CREATE] == "success"
    assert xcom_value(run, CREATE)["id"] == job.id
    assert xcom_value(run, CREATE)["status"] == "queued"
    assert sim.request_count(job.id) == 0  # never polled
    assert xcom_value(run, CREATE, key="job_id") == job.id


# ------------------------------------------------------------------------------------------
# One job per task and inputs
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lost_answer",
    [
        pytest.param(Fault.applied(then=Fault.server_error(500)), id="applied-then-500"),
        pytest.param(Fault.applied(then=Fault.reset()), id="applied-then-reset"),
    ],
)
def test_a_lost_answer_to_the_create_never_becomes_a_second_job(
    connected_gateway, api_key, capfd, caplog, lost_answer
):
    sim = connected_gateway
    sim.add_endpoint_fault("create", lost_answer)
    dag = build_pipeline("tfy_ops_lost", deferrable=False, retries=2)

    run, output = run_dag(dag, capfd)

    assert run.state == "success", output[-3000:]
    (job,) = sim.created_jobs
    assert len(create_requests(sim)) == 1
    assert xcom_value(run, CREATE, key="job_id") == job.id
    assert xcom_value(run, REGISTER) == job.fine_tuned_model
    assert f"Reattached to fine-tuning job {job.id}" in output
    assert_key_nowhere(api_key, run, output, caplog)


@pytest.mark.parametrize("wait", list(WAITS))
def test_a_task_retry_after_a_failure_mid_wait_reattaches_to_the_same_job(connected_gateway, capfd, wait):
    sim = connected_gateway
    # The created job's first status check is answered, the second fails with an error no hook
    # retry mends (400): the try fails mid-wait and Airflow retries the task.
    sim.set_create_script(
        statuses=("running", "running", "succeeded"), faults=[Fault.delay(0), Fault.status(400)]
    )
    dag = build_pipeline("tfy_ops_retry", deferrable=WAITS[wait], retries=1)

    run, output = run_dag(dag, capfd)

    assert run.state == "success", output[-3000:]
    assert task_instances(run)[CREATE].try_number == 2
    (job,) = sim.created_jobs
    assert len(create_requests(sim)) == 1
    assert f"Reattached to fine-tuning job {job.id} (status running)" in output
    assert xcom_value(run, REGISTER) == job.fine_tuned_model


def test_reuse_existing_job_false_creates_a_new_job_on_every_try(connected_gateway, capfd):
    sim = connected_gateway
    sim.set_create_script(statuses=("running", "succeeded"), faults=[Fault.delay(0), Fault.status(400)])
    dag = build_pipeline("tfy_ops_noreuse", deferrable=False, retries=1, reuse_existing_job=False)

    run, output = run_dag(dag, capfd)

    assert task_instances(run)[CREATE].try_number == 2
    first, second = sim.created_jobs
    assert key_of(first) != key_of(second)
    assert len(create_requests(sim)) == 2
    assert "Reattached" not in output


def test_a_clear_after_success_returns_the_succeeded_job_and_new_inputs_start_a_new_job(
    connected_gateway, capfd
):
    sim = connected_gateway
    dag = build_pipeline("tfy_ops_clear", deferrable=False, upload=False)
    conf = {"training_file": "file-train-a", "suffix": "demo"}

    first, _ = run_dag(dag, capfd, logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE, run_conf=conf)
    assert first.state == "success"
    (job,) = sim.created_jobs
    polls = sim.request_count(job.id)

    # Cleared and run again, same inputs: the succeeded job, at once, no new training.
    again, output = run_dag(dag, capfd, logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE, run_conf=conf)
    assert again.run_id == first.run_id
    assert again.state == "success"
    assert [j.id for j in sim.created_jobs] == [job.id]
    assert len(create_requests(sim)) == 1
    assert f"Reattached to fine-tuning job {job.id} (status succeeded)" in output
    assert sim.request_count(job.id) == polls  # no wait at all
    assert xcom_value(again, CREATE)["id"] == job.id
    assert xcom_value(again, REGISTER) == job.fine_tuned_model

    # Cleared with a new training file: a new job.
    third, _ = run_dag(
        dag,
        capfd,
        logical_date=LOGICAL_DATE,
        run_after=LOGICAL_DATE,
        run_conf={**conf, "training_file": "file-train-b"},
    )
    assert third.state == "success"
    assert [j.training_file for j in sim.created_jobs] == ["file-train-a", "file-train-b"]
    assert key_of(sim.created_jobs[0]) != key_of(sim.created_jobs[1])


def test_clearing_the_upload_too_uploads_a_new_file_and_so_starts_a_new_job(connected_gateway, capfd):
    sim = connected_gateway
    dag = build_pipeline("tfy_ops_clear_all", deferrable=False)

    for _ in range(2):
        run, _ = run_dag(dag, capfd, logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE)
        assert run.state == "success"

    assert len(sim.files) == 2
    assert [j.training_file for j in sim.created_jobs] == [f.id for f in sim.files]


def test_a_previous_failed_job_is_passed_over_and_a_new_job_started(connected_gateway, capfd):
    sim = connected_gateway
    dag = build_pipeline("tfy_ops_after_failed", deferrable=False, upload=False)
    conf = {"training_file": "file-train-a", "suffix": "demo"}
    sim.set_create_script(statuses=("queued", "failed"), error=JOB_ERROR)
    failed, _ = run_dag(dag, capfd, logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE, run_conf=conf)
    assert failed.state == "failed"

    sim.set_create_script()  # the default: queued, running, succeeded
    run, output = run_dag(dag, capfd, logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE, run_conf=conf)

    assert run.state == "success"
    old, new = sim.created_jobs
    assert key_of(old) == key_of(new)  # same task and inputs: the failed job did not count
    assert xcom_value(run, CREATE)["id"] == new.id
    assert "Reattached" not in output


# ------------------------------------------------------------------------------------------
# wait_timeout: the task fails, the job is left running, a retry reattaches
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wait", list(WAITS))
def test_wait_timeout_fails_the_try_leaves_the_job_running_and_the_retry_reattaches(
    connected_gateway, capfd, wait
):
    sim = connected_gateway
    sim.set_create_script(statuses=("running",))  # never finishes
    dag = build_pipeline("tfy_ops_timeout", deferrable=WAITS[wait], retries=1, wait_timeout=0.5)

    run, output = run_dag(dag, capfd)

    assert run.state == "failed"
    assert task_instances(run)[CREATE].try_number == 2
    (job,) = sim.created_jobs
    assert len(create_requests(sim)) == 1
    assert (
        f"FineTuningJobWaitTimeout: Fine-tuning job '{job.id}' did not finish within wait_timeout" in output
    )
    assert "left running at the gateway, not cancelled" in output
    assert "A retry of this task reattaches to it" in output
    assert f"Reattached to fine-tuning job {job.id} (status running)" in output
    assert sim.cancel_requests(job.id) == 0
    assert sim.get_job(job.id).render(0)["status"] == "running"


# ------------------------------------------------------------------------------------------
# Definition-time checks
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hook_params": {"retries": 3}}, r"hook_params has unknown keys \['retries'\]"),
        ({"poll_interval": 0}, "poll_interval must be a positive number"),
        ({"wait_timeout": timedelta(0)}, "wait_timeout must be a positive number"),
    ],
)
def test_bad_arguments_fail_at_dag_definition(kwargs, message):
    from airflow.sdk import DAG

    from airflow_provider_tfy.operators.fine_tuning import TrueFoundryCreateFineTuningJobOperator

    with pytest.raises(ValueError, match=message), DAG(dag_id="tfy_ops_bad_args", schedule=None):
        TrueFoundryCreateFineTuningJobOperator(task_id=CREATE, model=MODEL, training_file="file-1", **kwargs)


def test_every_create_and_header_argument_is_templated():
    from airflow_provider_tfy.operators.files import TrueFoundryUploadFileOperator
    from airflow_provider_tfy.operators.fine_tuning import TrueFoundryCreateFineTuningJobOperator
    from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor

    headers = {"provider_name", "provider_model", "vertex_storage_bucket_name", "file_purpose", "metadata"}
    create = set(TrueFoundryCreateFineTuningJobOperator.template_fields)
    assert create == headers | {
        "model",
        "training_file",
        "validation_file",
        "method",
        "hyperparameters",
        "suffix",
        "seed",
        "integrations",
        "job_metadata",
    }
    assert set(TrueFoundryUploadFileOperator.template_fields) == headers | {"file", "purpose"}
    assert set(TrueFoundryFineTuningJobSensor.template_fields) == headers | {"job_id"}


def test_the_key_fits_the_hooks_rule_and_depends_on_identity_and_inputs():
    """The key's parts, without a run: what changes it and what does not."""
    from types import SimpleNamespace

    from airflow_provider_tfy.operators.fine_tuning import TrueFoundryCreateFineTuningJobOperator
    from airflow_provider_tfy.protocol import Headers, validate_idempotency_key

    config = SimpleNamespace(headers=Headers(provider_name="from-extra"))

    def key(try_number: int = 1, reuse: bool = True, map_index: int = -1, **kwargs: Any) -> str:
        op = TrueFoundryCreateFineTuningJobOperator(
            task_id=CREATE,
            model=MODEL,
            training_file=kwargs.pop("training_file", "file-a"),
            reuse_existing_job=reuse,
            **kwargs,
        )
        op.__dict__["hook"] = SimpleNamespace(config=config)
        ti = SimpleNamespace(
            dag_id="d", task_id=CREATE, run_id="r", map_index=map_index, try_number=try_number
        )
        return op.idempotency_key({"ti": ti})  # type: ignore[arg-type]

    base = key()
    assert validate_idempotency_key(base) == base
    assert key(try_number=2) == base  # a retry reattaches
    assert key(training_file="file-b") != base
    assert key(map_index=0) != base
    assert key(seed=1) != base
    assert key(provider_name="other-account") != base
    assert key(provider_name="from-extra") == base  # the same account, named in either place
    assert key(metadata={"team": "ml"}) == base  # request labels do not choose the account
    assert key(reuse=False) != key(reuse=False, try_number=2)


def test_header_arguments_take_default_args_expand_and_are_documented():
    import inspect

    from airflow.sdk import DAG

    from airflow_provider_tfy.header_spec import HEADERS
    from airflow_provider_tfy.operators.files import TrueFoundryUploadFileOperator
    from airflow_provider_tfy.operators.fine_tuning import TrueFoundryCreateFineTuningJobOperator
    from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor

    with DAG(dag_id="tfy_ops_headers", schedule=None, default_args={"provider_name": "from-default"}):
        op = TrueFoundryCreateFineTuningJobOperator(task_id=CREATE, model=MODEL, training_file="f")
        TrueFoundryFineTuningJobSensor.partial(task_id="wait").expand(
            job_id=["a", "b"], vertex_storage_bucket_name=["x", "y"]
        )
    assert op.provider_name == "from-default"
    assert op.header_overrides == {spec.name: None for spec in HEADERS} | {"provider_name": "from-default"}
    for cls in (
        TrueFoundryUploadFileOperator,
        TrueFoundryCreateFineTuningJobOperator,
        TrueFoundryFineTuningJobSensor,
    ):
        doc = cls.__doc__ or ""
        for name in ("truefoundry_conn_id", "hook_params", *(spec.name for spec in HEADERS)):
            assert doc.count(f":param {name}:") == 1, (cls, name)
    params = inspect.signature(TrueFoundryFineTuningJobSensor.__mro__[1].__init__).parameters
    assert all(params[spec.name].kind is inspect.Parameter.KEYWORD_ONLY for spec in HEADERS)
