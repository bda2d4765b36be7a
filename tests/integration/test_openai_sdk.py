"""The official ``openai`` SDK, pointed at the simulator, parses every answer of the fine-tuning API.

An independent client is the check that the simulator speaks the wire format the gateway (and
OpenAI, which it follows) speaks, not merely the one our hook expects.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import NotFoundError, OpenAI
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob

from airflow_provider_tfy.testing import GatewaySimulator

PROVIDER = "openai-main"
JSONL = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
# Anything that could send the SDK somewhere other than the simulator.
_ENVIRONMENT = (
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_WEBHOOK_SECRET",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


@pytest.fixture
def client(truefoundry_gateway: GatewaySimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAI]:
    for name in _ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    sim = truefoundry_gateway
    with OpenAI(
        base_url=sim.url,
        api_key=sim.api_key,
        max_retries=0,
        timeout=10,
        default_headers={"x-tfy-provider-name": PROVIDER},
    ) as openai_client:
        yield openai_client
    # Every call reached the simulator, with the key it expects.
    assert sim.requests
    assert all(record.has_valid_auth for record in sim.requests)


def test_files_create(client: OpenAI, truefoundry_gateway: GatewaySimulator, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(JSONL * 3)
    with path.open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="fine-tune")
    assert isinstance(uploaded, FileObject)
    assert uploaded.object == "file"
    assert uploaded.id.startswith("file-")
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose, uploaded.status) == (
        len(JSONL) * 3,
        "train.jsonl",
        "fine-tune",
        "processed",
    )
    (stored,) = truefoundry_gateway.files
    assert stored.id == uploaded.id
    assert stored.headers["x-tfy-provider-name"] == PROVIDER
    assert set(stored.field_names) == {"file", "purpose"}


def test_fine_tuning_jobs_create_retrieve_list_cancel(
    client: OpenAI, truefoundry_gateway: GatewaySimulator
) -> None:
    sim = truefoundry_gateway
    sim.set_create_script(statuses=("queued", "running", "succeeded"), polls_per_status=2)
    created = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file="file-abc",
        validation_file="file-val",
        suffix="nightly",
        seed=7,
        metadata={"airflow_idempotency_key": "dag.task.1"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    )
    assert isinstance(created, FineTuningJob)
    assert created.status == "queued"
    assert (created.training_file, created.validation_file, created.seed) == ("file-abc", "file-val", 7)
    assert created.metadata == {"airflow_idempotency_key": "dag.task.1"}
    assert created.method is not None
    assert created.method.type == "supervised"
    assert [job.id for job in sim.created_jobs] == [created.id]

    retrieved = client.fine_tuning.jobs.retrieve(created.id)
    assert retrieved.id == created.id
    assert retrieved.status == "queued"
    assert retrieved.hyperparameters.n_epochs is not None

    other = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file="file-abc")
    page = client.fine_tuning.jobs.list(limit=1)
    assert [job.id for job in page.data] == [other.id]
    assert page.has_more is True
    # The SDK follows the cursor itself, and writes the filter as metadata[key]=value.
    assert [job.id for job in client.fine_tuning.jobs.list(limit=1)] == [other.id, created.id]
    filtered = client.fine_tuning.jobs.list(metadata={"airflow_idempotency_key": "dag.task.1"})
    assert [job.id for job in filtered.data] == [created.id]
    assert sim.requests[-1].query == {"metadata[airflow_idempotency_key]": "dag.task.1"}

    cancelled = client.fine_tuning.jobs.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    assert client.fine_tuning.jobs.retrieve(created.id).status == "cancelled"
    assert sim.cancel_requests(created.id) == 1


def test_a_finished_job_comes_back_whole(client: OpenAI, truefoundry_gateway: GatewaySimulator) -> None:
    succeeded = truefoundry_gateway.add_job(statuses=("succeeded",), trained_tokens=1234)
    failed = truefoundry_gateway.add_job(statuses=("failed",))
    job = client.fine_tuning.jobs.retrieve(succeeded.id)
    assert job.fine_tuned_model == succeeded.fine_tuned_model
    assert job.trained_tokens == 1234
    assert job.result_files
    error = client.fine_tuning.jobs.retrieve(failed.id).error
    assert error is not None
    assert error.code == "invalid_training_file"


def test_errors_are_parsed_as_openai_errors(client: OpenAI) -> None:
    with pytest.raises(NotFoundError) as info:
        client.fine_tuning.jobs.retrieve("ftjob-missing")
    assert info.value.status_code == 404
    assert "ftjob-missing" in info.value.message
