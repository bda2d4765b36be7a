"""Unit tests of the job model and the status policy."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid

import pytest

from airflow_provider_tfy.models import (
    FineTuningJob,
    FineTuningJobError,
    FineTuningJobStatus,
    JobOutcome,
    status_outcome,
)

LOGGER = "airflow_provider_tfy.models"


def unique_status(prefix: str = "brand_new_status") -> str:
    # The module remembers which unknown values it warned about for the whole process.
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("succeeded", JobOutcome.SUCCEEDED),
        ("failed", JobOutcome.FAILED),
        ("cancelled", JobOutcome.CANCELLED),
        ("queued", JobOutcome.IN_PROGRESS),
        ("running", JobOutcome.IN_PROGRESS),
        ("validating_files", JobOutcome.IN_PROGRESS),
        ("paused", JobOutcome.IN_PROGRESS),
        (FineTuningJobStatus.SUCCEEDED, JobOutcome.SUCCEEDED),
        (FineTuningJobStatus.FAILED, JobOutcome.FAILED),
        (FineTuningJobStatus.RUNNING, JobOutcome.IN_PROGRESS),
    ],
)
def test_known_statuses(status: str, outcome: JobOutcome, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert status_outcome(status) is outcome
        assert FineTuningJob(id="ftjob-1", status=status).outcome is outcome
    assert warnings_of(caplog) == []


@pytest.mark.parametrize(
    "status",
    [
        "brand_new_status",
        "SUCCEEDED",
        "Succeeded",
        "succeeded ",
        " succeeded",
        "completed",
        "done",
        "error",
        "",
    ],
)
def test_unknown_status_keeps_waiting(status: str) -> None:
    # Only the exact value "succeeded" opens the gate: a look-alike must never count as done.
    assert status_outcome(status) is JobOutcome.IN_PROGRESS
    assert FineTuningJob(id="ftjob-1", status=status).outcome is JobOutcome.IN_PROGRESS


def test_unknown_status_warns_once_per_distinct_value(caplog: pytest.LogCaptureFixture) -> None:
    first, second = unique_status(), unique_status()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):
            status_outcome(first)
        assert FineTuningJob(id="ftjob-1", status=first).outcome is JobOutcome.IN_PROGRESS
    records = warnings_of(caplog)
    assert len(records) == 1
    message = records[0].getMessage()
    assert repr(first) in message
    assert "in progress" in message
    assert "Upgrade airflow-provider-tfy" in message

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        status_outcome(second)
        status_outcome(second)
        status_outcome(first)
    records = warnings_of(caplog)
    assert len(records) == 1
    assert repr(second) in records[0].getMessage()


def test_statuses_are_plain_strings() -> None:
    assert FineTuningJobStatus.SUCCEEDED == "succeeded"
    assert str(FineTuningJobStatus.CANCELLED) == "cancelled"
    assert JobOutcome.IN_PROGRESS == "in_progress"
    assert (
        json.dumps({"s": FineTuningJobStatus.FAILED, "o": JobOutcome.FAILED})
        == '{"s": "failed", "o": "failed"}'
    )
    assert {s.value for s in FineTuningJobStatus} >= {"queued", "running", "succeeded", "failed", "cancelled"}


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (FineTuningJobError(code="invalid_file", message="Bad line 3"), "invalid_file: Bad line 3"),
        (FineTuningJobError(message="Bad line 3"), "Bad line 3"),
        (FineTuningJobError(code="quota"), "quota"),
        (FineTuningJobError(param="training_file"), "no reason given"),
        (FineTuningJobError(), "no reason given"),
    ],
)
def test_error_describe(error: FineTuningJobError, text: str) -> None:
    assert error.describe() == text


def test_to_xcom_normalises_only_present_timestamps() -> None:
    raw = {
        "id": "ftjob-1",
        "status": "running",
        "created_at": 1_700_000_000_000,
        "finished_at": None,
        "x": [1],
    }
    job = FineTuningJob(id="ftjob-1", status="running", created_at=1_700_000_000, raw=raw)
    xcom = job.to_xcom()
    assert xcom == {
        "id": "ftjob-1",
        "status": "running",
        "created_at": 1_700_000_000,
        "finished_at": None,
        "x": [1],
    }
    assert "estimated_finish" not in xcom
    assert raw["created_at"] == 1_700_000_000_000
    assert json.loads(json.dumps(xcom)) == xcom


def test_raw_does_not_take_part_in_equality() -> None:
    a = FineTuningJob(id="ftjob-1", status="running", raw={"id": "ftjob-1", "extra": 1})
    b = FineTuningJob(id="ftjob-1", status="running", raw={"id": "ftjob-1"})
    assert a == b
    assert "extra" not in repr(a)


@pytest.mark.parametrize(
    ("job", "summary"),
    [
        (FineTuningJob(id="j", status="queued"), "status=queued"),
        (
            FineTuningJob(id="j", status="running", trained_tokens=10, estimated_finish=1_700_000_000),
            "status=running, trained_tokens=10, estimated_finish=1700000000",
        ),
        (
            FineTuningJob(id="j", status="succeeded", trained_tokens=0, fine_tuned_model="ft:m"),
            "status=succeeded, trained_tokens=0, fine_tuned_model=ft:m",
        ),
    ],
)
def test_progress_summary(job: FineTuningJob, summary: str) -> None:
    assert job.progress_summary() == summary


def test_models_module_does_not_import_airflow() -> None:
    code = "import sys, airflow_provider_tfy.models; print('airflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


def test_file_to_xcom_is_the_raw_json_with_timestamps_in_seconds() -> None:
    from airflow_provider_tfy.models import TrueFoundryFile

    raw = {"id": "file-1", "created_at": 1_700_000_000_000, "expires_at": None, "extra": {"a": 1}}
    file = TrueFoundryFile(id="file-1", created_at=1_700_000_000, raw=raw)
    assert file.to_xcom() == {
        "id": "file-1",
        "created_at": 1_700_000_000,
        "expires_at": None,
        "extra": {"a": 1},
    }
    assert json.loads(json.dumps(file.to_xcom())) == file.to_xcom()
    assert file == TrueFoundryFile(id="file-1", created_at=1_700_000_000)  # raw is not compared
