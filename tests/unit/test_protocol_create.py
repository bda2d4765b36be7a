"""Unit tests of create's argument checks, the idempotency key and "could it have been applied?"."""

from __future__ import annotations

import math
from typing import Any

import pytest

from airflow_provider_tfy import protocol
from airflow_provider_tfy.exceptions import (
    TrueFoundryAPIError,
    TrueFoundryConfigError,
    TrueFoundryConnectionError,
    TrueFoundryError,
    TrueFoundryResponseError,
)
from airflow_provider_tfy.models import FineTuningJob
from airflow_provider_tfy.protocol.answers import RETRYABLE_STATUSES
from airflow_provider_tfy.protocol.create import reattachable

REQUIRED = {"model": "gpt-4o-mini", "training_file": "file-1"}
KEY_NAME = protocol.IDEMPOTENCY_METADATA_KEY


def refused(**kwargs: Any) -> str:
    with pytest.raises(TrueFoundryConfigError) as info:
        protocol.create_body(**{**REQUIRED, **kwargs})
    message = str(info.value)
    assert message.startswith("create_fine_tuning_job: ")
    assert message.endswith("Nothing was sent to the gateway.")
    return message


def test_idempotency_metadata_key_is_the_documented_one() -> None:
    assert KEY_NAME == "airflow_idempotency_key"


def test_create_body_has_only_what_was_given() -> None:
    assert protocol.create_body(**REQUIRED) == REQUIRED


def test_create_body_carries_every_field() -> None:
    body = protocol.create_body(
        **REQUIRED,
        validation_file="file-2",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
        hyperparameters={"n_epochs": "auto", "learning_rate_multiplier": 0.5},
        suffix="x" * 64,
        seed=0,
        integrations=({"type": "wandb", "wandb": {"project": "p", "tags": ("a",)}},),
        job_metadata={"team": "ml"},
        idempotency_key="dag.task:run-1_a",
    )
    assert body == {
        **REQUIRED,
        "validation_file": "file-2",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
        "hyperparameters": {"n_epochs": "auto", "learning_rate_multiplier": 0.5},
        "suffix": "x" * 64,
        "seed": 0,
        "integrations": [{"type": "wandb", "wandb": {"project": "p", "tags": ["a"]}}],
        "metadata": {"team": "ml", KEY_NAME: "dag.task:run-1_a"},
    }


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"model": None}, "model must be a non-empty string"),
        ({"model": ""}, "model must be a non-empty string"),
        ({"model": " gpt "}, "spaces or control characters"),
        ({"training_file": 3}, "training_file must be a non-empty string"),
        ({"validation_file": ""}, "validation_file must be a non-empty string"),
        ({"method": "supervised"}, "method must be a dict"),
        ({"hyperparameters": [1]}, "hyperparameters must be a dict"),
        ({"method": {"x": {1, 2}}}, "method['x'] is a set"),
        ({"hyperparameters": {"lr": math.nan}}, "hyperparameters['lr'] is nan"),
        ({"hyperparameters": {"lr": math.inf}}, "which JSON cannot carry"),
        ({"method": {1: "a"}}, "method has a key that is not a string"),
        ({"suffix": "x" * 65}, "suffix must be a string of at most 64 characters, got 65 characters"),
        ({"suffix": 5}, "suffix must be a string"),
        ({"seed": "42"}, "seed must be a whole number, got str"),
        ({"seed": True}, "seed must be a whole number, got bool"),
        ({"seed": 4.0}, "seed must be a whole number"),
        ({"integrations": {"type": "wandb"}}, "integrations must be a list of dicts"),
        ({"integrations": ["wandb"]}, "integrations must be a list of dicts"),
        ({"job_metadata": ["a"]}, "job_metadata must be a dict of strings"),
        ({"job_metadata": {"a": 1}}, "job_metadata['a'] must be a string"),
        ({"job_metadata": {"": "a"}}, "job_metadata keys must be strings of 1-64"),
        ({"job_metadata": {"k" * 65: "a"}}, "job_metadata keys must be strings of 1-64"),
        ({"job_metadata": {"a": "v" * 513}}, "at most 512 characters, got 513 characters"),
        ({"job_metadata": {f"k{i}": "v" for i in range(17)}}, "17 pairs, more than the gateway's 16"),
        ({"job_metadata": {KEY_NAME: "x"}}, "reserved for the idempotency key"),
        ({"job_metadata": {KEY_NAME: "x"}, "idempotency_key": "y"}, "reserved for the idempotency key"),
    ],
)
def test_create_body_names_each_bad_argument(kwargs: dict[str, Any], fragment: str) -> None:
    assert fragment in refused(**kwargs)


def test_deeply_nested_method_is_refused_not_a_recursion_error() -> None:
    nested: dict[str, Any] = {}
    for _ in range(100):
        nested = {"n": nested}
    assert "nested more than" in refused(method=nested)


def test_the_idempotency_key_counts_in_the_16_pairs() -> None:
    sixteen = {f"k{i}": "v" for i in range(16)}
    assert len(protocol.create_body(**REQUIRED, job_metadata=sixteen)["metadata"]) == 16
    message = refused(job_metadata=sixteen, idempotency_key="key-1")
    assert "17 pairs" in message
    assert "the idempotency key counts as one" in message
    fifteen = {f"k{i}": "v" for i in range(15)}
    assert len(protocol.create_body(**REQUIRED, job_metadata=fifteen, idempotency_key="k")["metadata"]) == 16


def test_the_key_may_repeat_itself_in_job_metadata() -> None:
    body = protocol.create_body(**REQUIRED, job_metadata={KEY_NAME: "k1"}, idempotency_key="k1")
    assert body["metadata"] == {KEY_NAME: "k1"}


@pytest.mark.parametrize("key", ["a", "A-z_0.9:x", "k" * 64])
def test_idempotency_key_accepts_1_to_64_safe_characters(key: str) -> None:
    assert protocol.validate_idempotency_key(key) == key


@pytest.mark.parametrize("key", ["", "k" * 65, "a b", "a/b", "ключ", "a\n", 5, b"k"])
def test_idempotency_key_refuses_anything_else(key: Any) -> None:
    with pytest.raises(TrueFoundryConfigError, match="idempotency_key must be 1-64 characters"):
        protocol.validate_idempotency_key(key)
    assert "idempotency_key must be" in refused(idempotency_key=key)


# --------------------------------------------------------------------------------------------
# Reattaching
# --------------------------------------------------------------------------------------------


def job(status: str, key: str | None = "k1", **metadata: str) -> FineTuningJob:
    if key is not None:
        metadata[KEY_NAME] = key
    return FineTuningJob(id="ftjob-1", status=status, metadata=metadata or None)


@pytest.mark.parametrize(
    "status", ["validating_files", "queued", "running", "paused", "succeeded", "brand_new"]
)
def test_a_job_in_progress_or_succeeded_with_the_key_stands_for_the_create(status: str) -> None:
    assert reattachable(job(status), "k1")


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_a_failed_or_cancelled_job_is_passed_over(status: str) -> None:
    assert not reattachable(job(status), "k1")


def test_a_job_without_that_key_is_not_reattached() -> None:
    assert not reattachable(job("running", key="k2"), "k1")
    assert not reattachable(job("running", key=None), "k1")
    assert not reattachable(job("running", key=None, other="k1"), "k1")


def test_carries_metadata_checks_every_pair() -> None:
    found = job("running", team="ml")
    assert protocol.carries_metadata(found, {})
    assert protocol.carries_metadata(found, {"team": "ml", KEY_NAME: "k1"})
    assert not protocol.carries_metadata(found, {"team": "ops"})
    assert not protocol.carries_metadata(FineTuningJob(id="j", status="queued"), {"team": "ml"})


# --------------------------------------------------------------------------------------------
# Could the attempt have been applied?
# --------------------------------------------------------------------------------------------


def api_error(status: int, **kwargs: Any) -> TrueFoundryAPIError:
    return TrueFoundryAPIError("x", status_code=status, retryable=status in RETRYABLE_STATUSES, **kwargs)


@pytest.mark.parametrize(
    ("error", "applied"),
    [
        pytest.param(TrueFoundryConnectionError("refused", request_sent=False), False, id="never-sent"),
        pytest.param(TrueFoundryConnectionError("reset"), True, id="reset-after-sending"),
        pytest.param(TrueFoundryConnectionError("reset", request_sent=True), True, id="read-timeout"),
        pytest.param(api_error(429, retry_after=1.0), False, id="429"),
        pytest.param(api_error(400), False, id="400"),
        pytest.param(api_error(409), False, id="409"),
        pytest.param(api_error(500), True, id="500"),
        pytest.param(api_error(502), True, id="502"),
        pytest.param(api_error(503), True, id="503"),
        pytest.param(api_error(504), True, id="504"),
        pytest.param(api_error(302), True, id="redirect"),
        pytest.param(TrueFoundryResponseError("2xx, not JSON", retryable=True), True, id="garbled-2xx"),
        pytest.param(TrueFoundryConfigError("bad argument"), False, id="config"),
        pytest.param(TrueFoundryError("unknown"), True, id="unknown"),
        pytest.param(RuntimeError("unknown"), True, id="foreign"),
    ],
)
def test_could_have_been_applied(error: BaseException, applied: bool) -> None:
    assert protocol.could_have_been_applied(error) is applied


@pytest.mark.parametrize(
    ("error", "repeated"),
    [
        pytest.param(TrueFoundryConnectionError("refused", request_sent=False), True, id="never-sent"),
        pytest.param(api_error(429, retry_after=2.0), True, id="429"),
        pytest.param(api_error(429, retry_after=3600.0), False, id="429-too-long"),
        pytest.param(TrueFoundryConnectionError("reset"), False, id="reset"),
        pytest.param(api_error(500), False, id="500"),
        pytest.param(api_error(503), False, id="503"),
        pytest.param(TrueFoundryResponseError("garbled", retryable=True), False, id="garbled"),
    ],
)
def test_a_request_not_safe_to_repeat_is_repeated_only_when_certainly_not_applied(
    error: BaseException, repeated: bool
) -> None:
    policy = protocol.RetryPolicy(max_retries=3)
    assert policy.should_retry(1, error, safe_to_repeat=False) is repeated
    assert (policy.wait_before_retry(1, error, safe_to_repeat=False) is not None) is repeated
    # The same failures of a request that is safe to repeat are all retried (but the long wait).
    assert policy.should_retry(1, error) is (
        error.__class__ is not TrueFoundryAPIError or error.retry_after != 3600.0
    )


def test_transport_error_carries_whether_the_request_was_sent() -> None:
    config = protocol.gateway_config("c", host="https://gw.example.com", password="k", extra={})
    request = protocol.Gateway(config).retrieve("ftjob-1")
    assert protocol.transport_error(request, "reset").request_sent
    assert not protocol.transport_error(request, "refused", sent=False).request_sent
    assert not protocol.tls_error(request, "bad cert").request_sent


# --------------------------------------------------------------------------------------------
# Errors after an unknown outcome
# --------------------------------------------------------------------------------------------

TARGET = "POST https://gw.example.com/fine_tuning/jobs"


@pytest.mark.parametrize(
    "error",
    [
        api_error(500, body_excerpt="boom"),
        TrueFoundryConnectionError("The gateway could not be reached for X (reset)."),
        TrueFoundryResponseError("not JSON", retryable=True),
    ],
    ids=["500", "reset", "garbled"],
)
def test_an_unknown_outcome_without_a_key_says_what_to_check(error: TrueFoundryError) -> None:
    unknown = protocol.create_outcome_unknown(error, TARGET)
    message = str(unknown)
    assert type(unknown) is type(error)
    assert str(error) in message
    assert "may or may not exist" in message
    assert "was not sent again" in message
    assert "list_fine_tuning_jobs" in message
    assert "TrueFoundry console" in message
    assert "idempotency_key" in message
    assert not unknown.retryable
    if isinstance(error, TrueFoundryAPIError):
        assert isinstance(unknown, TrueFoundryAPIError)
        assert (unknown.status_code, unknown.body_excerpt) == (500, "boom")


def test_a_keyed_create_that_kept_failing_says_none_was_created() -> None:
    failed = protocol.create_not_done(api_error(503), "key-1", 3)
    assert isinstance(failed, TrueFoundryAPIError)
    assert "failed 3 time(s)" in str(failed)
    assert "'key-1'" in str(failed)
    assert "none was created" in str(failed)
    assert failed.retryable


# ------------------------------------------------------------------------------------------
# converge: which of the jobs carrying one key survives
# ------------------------------------------------------------------------------------------


def keyed(job_id: str, status: str, created_at: int | None, key: str | None = "k1") -> FineTuningJob:
    return FineTuningJob(
        id=job_id, status=status, created_at=created_at, metadata={KEY_NAME: key} if key else None
    )


def ids(jobs: list[FineTuningJob]) -> list[str]:
    return [job.id for job in jobs]


def test_converge_keeps_the_oldest_live_job_and_cancels_the_others_in_progress() -> None:
    jobs = [keyed("ftjob-c", "queued", 30), keyed("ftjob-b", "running", 20), keyed("ftjob-a", "running", 10)]
    survivor, to_cancel = protocol.converge(jobs, "k1")
    assert survivor is not None
    assert survivor.id == "ftjob-a"
    assert ids(to_cancel) == ["ftjob-b", "ftjob-c"]


def test_converge_breaks_a_created_at_tie_by_id_whatever_the_order() -> None:
    one, two = keyed("ftjob-2", "running", 10), keyed("ftjob-1", "queued", 10)
    for jobs in ([one, two], [two, one]):
        survivor, to_cancel = protocol.converge(jobs, "k1")
        assert survivor is two
        assert ids(to_cancel) == ["ftjob-2"]


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_converge_passes_over_failed_and_cancelled_jobs(status: str) -> None:
    survivor, to_cancel = protocol.converge(
        [keyed("ftjob-new", "running", 20), keyed("ftjob-old", status, 10)], "k1"
    )
    assert survivor is not None
    assert survivor.id == "ftjob-new"
    assert to_cancel == []  # an ended job has nothing to cancel


def test_converge_keeps_an_older_succeeded_job_and_never_cancels_a_succeeded_one() -> None:
    survivor, to_cancel = protocol.converge(
        [
            keyed("ftjob-late", "succeeded", 30),
            keyed("ftjob-new", "running", 20),
            keyed("ftjob-old", "succeeded", 10),
        ],
        "k1",
    )
    assert survivor is not None
    assert survivor.id == "ftjob-old"
    assert ids(to_cancel) == ["ftjob-new"]


def test_converge_ignores_jobs_without_the_key_as_when_the_gateway_ignores_the_filter() -> None:
    listed = [
        keyed("ftjob-x", "running", 1, key=None),
        keyed("ftjob-y", "running", 2, key="other"),
        keyed("ftjob-mine", "running", 30),
    ]
    survivor, to_cancel = protocol.converge(listed, "k1")
    assert survivor is not None
    assert survivor.id == "ftjob-mine"
    assert to_cancel == []
    assert protocol.converge(listed[:2], "k1") == (None, [])
    assert protocol.converge([], "k1") == (None, [])


def test_converge_counts_a_job_given_twice_by_its_later_copy_and_puts_no_created_at_last() -> None:
    old = keyed("ftjob-old", "running", 10)
    survivor, to_cancel = protocol.converge([keyed("ftjob-0", "running", None), old, old], "k1")
    assert survivor is old
    assert ids(to_cancel) == ["ftjob-0"]
    # A create's own answer (queued) and a later listing (cancelled by another try): the listing counts.
    stale, fresh = keyed("ftjob-mine", "queued", 5), keyed("ftjob-mine", "cancelled", 5)
    assert protocol.converge([stale, old, fresh], "k1") == (old, [])
    assert protocol.converge([fresh, stale], "k1") == (stale, [])
