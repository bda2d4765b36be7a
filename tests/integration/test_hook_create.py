"""TrueFoundryHook.create_fine_tuning_job over real HTTP: one job per key whatever answers are lost."""

from __future__ import annotations

import logging
import time

import pytest

from airflow_provider_tfy import protocol
from airflow_provider_tfy.exceptions import (
    TrueFoundryAPIError,
    TrueFoundryConfigError,
    TrueFoundryConnectionError,
    TrueFoundryError,
)
from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
from airflow_provider_tfy.testing import Fault

from .conftest import assert_secret_free, closed_port, log_messages, structlog_lines

KEY_NAME = protocol.IDEMPOTENCY_METADATA_KEY
ARGS = {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-train-1"}


def fast_hook(**kwargs) -> TrueFoundryHook:
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("retry_delay", 0.01)
    return TrueFoundryHook(**kwargs)


def endpoints(sim) -> list[str]:
    return [record.endpoint for record in sim.requests]


# ------------------------------------------------------------------------------------------
# The body and the arguments
# ------------------------------------------------------------------------------------------


def test_every_argument_reaches_the_body(connected_gateway, capfd):
    capfd.readouterr()
    job = fast_hook().create_fine_tuning_job(
        **ARGS,
        validation_file="file-val-1",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        hyperparameters={"n_epochs": 2},
        suffix="nightly",
        seed=7,
        integrations=[{"type": "wandb", "wandb": {"project": "p"}}],
        job_metadata={"team": "ml"},
        idempotency_key="dag.task.run-1",
        provider_name="openai-main",
    )

    (created,) = connected_gateway.created_jobs
    assert job.id == created.id
    assert (created.model, created.training_file, created.validation_file) == (
        ARGS["model"],
        "file-train-1",
        "file-val-1",
    )
    assert (created.suffix, created.seed) == ("nightly", 7)
    assert created.method == {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
    assert created.metadata == {"team": "ml", KEY_NAME: "dag.task.run-1"}
    assert job.metadata == created.metadata
    assert (job.model, job.seed, job.validation_file) == (ARGS["model"], 7, "file-val-1")
    assert job.integrations == [{"type": "wandb", "wandb": {"project": "p"}}]
    assert job.hyperparameters == {"n_epochs": 2}
    create = next(r for r in connected_gateway.requests if r.endpoint == "create")
    assert create.headers["x-tfy-provider-name"] == "openai-main"
    assert create.headers["content-type"] == "application/json"
    # Looked for the key first, and again after creating (an overlapping try may have created too).
    assert endpoints(connected_gateway) == ["list", "create", "list"]
    info = structlog_lines(capfd.readouterr().out, "info")
    assert any(f"Created fine-tuning job {job.id}" in line for line in info)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"model": ""}, "model must be a non-empty string"),
        ({"suffix": "s" * 65}, "at most 64 characters"),
        ({"seed": "7"}, "seed must be a whole number"),
        ({"method": {"lr": float("nan")}}, "which JSON cannot carry"),
        ({"job_metadata": {f"k{i}": "v" for i in range(16)}, "idempotency_key": "k"}, "17 pairs"),
        ({"idempotency_key": "has space"}, "idempotency_key must be 1-64 characters"),
        ({"provider_name": "a\nb"}, "control character"),
    ],
)
def test_bad_arguments_are_refused_with_zero_requests(connected_gateway, kwargs, fragment):
    with pytest.raises(TrueFoundryConfigError, match=fragment.replace("(", r"\(")):
        fast_hook().create_fine_tuning_job(**{**ARGS, **kwargs})
    assert connected_gateway.requests == []


def test_an_unknown_header_argument_is_a_type_error(connected_gateway):
    with pytest.raises(TypeError, match="create_fine_tuning_job"):
        fast_hook().create_fine_tuning_job(**ARGS, provider="x")
    assert connected_gateway.requests == []


# ------------------------------------------------------------------------------------------
# Without a key: an unknown outcome is never sent again
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault.applied(then=Fault.server_error(500)),
        Fault.applied(then=Fault.reset()),
        Fault.server_error(500),
        Fault.server_error(503),
        Fault.reset(),
    ],
    ids=["applied-500", "applied-reset", "500", "503", "reset"],
)
def test_without_a_key_an_ambiguous_failure_is_not_repeated(connected_gateway, fault, caplog, capfd):
    connected_gateway.add_endpoint_fault("create", fault)

    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises((TrueFoundryAPIError, TrueFoundryConnectionError)) as info,
    ):
        fast_hook(max_retries=3).create_fine_tuning_job(**ARGS)

    assert endpoints(connected_gateway) == ["create"]
    message = str(info.value)
    assert "may or may not exist" in message
    assert "list_fine_tuning_jobs" in message
    assert "TrueFoundry console" in message
    assert not info.value.retryable
    assert len(connected_gateway.created_jobs) == (1 if fault.kind == "applied" else 0)
    output = capfd.readouterr()
    assert_secret_free(connected_gateway.api_key, info.value, *log_messages(caplog), output.out, output.err)


def test_429_is_repeated_after_retry_after(connected_gateway):
    connected_gateway.add_endpoint_fault("create", Fault.rate_limit(retry_after=0.3))

    started = time.monotonic()
    job = fast_hook().create_fine_tuning_job(**ARGS)

    assert time.monotonic() - started >= 0.3
    assert endpoints(connected_gateway) == ["create", "create"]
    assert [created.id for created in connected_gateway.created_jobs] == [job.id]


def test_a_refused_connection_is_repeated_and_says_nothing_was_sent(set_connection, connected_gateway):
    set_connection(host=f"http://127.0.0.1:{closed_port()}", password=connected_gateway.api_key)

    with pytest.raises(TrueFoundryConnectionError) as info:
        fast_hook(max_retries=2).create_fine_tuning_job(**ARGS)

    assert "could not be reached" in str(info.value)
    assert "may or may not exist" not in str(info.value)
    assert info.value.request_sent is False


# ------------------------------------------------------------------------------------------
# With a key: exactly one job
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [Fault.applied(then=Fault.server_error(500)), Fault.applied(then=Fault.reset())],
    ids=["applied-500", "applied-reset"],
)
def test_with_a_key_a_lost_answer_ends_with_exactly_one_job(connected_gateway, fault, capfd):
    connected_gateway.add_endpoint_fault("create", fault)
    capfd.readouterr()

    job = fast_hook().create_fine_tuning_job(**ARGS, idempotency_key="run-42")

    (created,) = connected_gateway.created_jobs
    assert job.id == created.id
    assert job.metadata == {KEY_NAME: "run-42"}
    assert endpoints(connected_gateway) == ["list", "create", "list"]
    output = capfd.readouterr().out
    assert any(f"Reattached to fine-tuning job {job.id}" in line for line in structlog_lines(output, "info"))
    assert any("may or may not have worked" in line for line in structlog_lines(output, "warning"))


def test_with_a_key_a_failure_that_created_nothing_creates_after_looking(connected_gateway):
    connected_gateway.add_endpoint_fault("create", Fault.server_error(503))

    job = fast_hook().create_fine_tuning_job(**ARGS, idempotency_key="run-43")

    assert [created.id for created in connected_gateway.created_jobs] == [job.id]
    assert endpoints(connected_gateway) == ["list", "create", "list", "create", "list"]


def test_with_a_key_a_create_that_keeps_failing_says_none_was_created(connected_gateway):
    for _ in range(3):
        connected_gateway.add_endpoint_fault("create", Fault.server_error(502))

    with pytest.raises(TrueFoundryAPIError) as info:
        fast_hook(max_retries=2).create_fine_tuning_job(**ARGS, idempotency_key="run-44")

    assert connected_gateway.created_jobs == []
    assert endpoints(connected_gateway) == ["list", "create", "list", "create", "list", "create", "list"]
    assert "none was created" in str(info.value)
    assert "'run-44'" in str(info.value)


@pytest.mark.parametrize("status", ["validating_files", "queued", "running", "succeeded"])
def test_an_existing_job_with_the_key_is_returned_and_nothing_is_created(connected_gateway, status, capfd):
    existing = connected_gateway.add_job(statuses=(status,), metadata={KEY_NAME: "run-45", "team": "ml"})
    connected_gateway.add_job(statuses=("running",), metadata={KEY_NAME: "other"})  # newer, other key
    capfd.readouterr()

    job = fast_hook().create_fine_tuning_job(**ARGS, idempotency_key="run-45")

    assert job.id == existing.id
    assert job.status == status
    assert connected_gateway.created_jobs == []
    assert endpoints(connected_gateway) == ["list"]
    (lookup,) = connected_gateway.requests
    assert lookup.query[f"metadata[{KEY_NAME}]"] == "run-45"
    info = structlog_lines(capfd.readouterr().out, "info")
    assert any(f"Reattached to fine-tuning job {existing.id} (status {status})" in line for line in info)


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_a_failed_or_cancelled_job_with_the_key_is_passed_over(connected_gateway, status):
    old = connected_gateway.add_job(statuses=(status,), metadata={KEY_NAME: "run-46"})

    job = fast_hook().create_fine_tuning_job(**ARGS, idempotency_key="run-46")

    assert job.id != old.id
    assert [created.id for created in connected_gateway.created_jobs] == [job.id]


def test_where_the_gateway_ignores_the_filter_the_key_is_still_found(connected_gateway):
    connected_gateway.ignore_list_filter = True
    wanted = connected_gateway.add_job(statuses=("running",), metadata={KEY_NAME: "run-47"})
    for _ in range(150):  # newer jobs push it onto the second page
        connected_gateway.add_job(statuses=("running",), metadata={KEY_NAME: "someone-else"})

    job = fast_hook().create_fine_tuning_job(**ARGS, idempotency_key="run-47")

    assert job.id == wanted.id
    assert connected_gateway.created_jobs == []
    assert endpoints(connected_gateway) == ["list", "list"]


def test_the_look_up_stops_at_its_bound_and_says_so(connected_gateway, capfd):
    connected_gateway.ignore_list_filter = True
    connected_gateway.add_job(statuses=("running",), metadata={KEY_NAME: "run-48"})  # the oldest
    bound = protocol.LOOKUP_MAX_PAGES * protocol.LOOKUP_PAGE_SIZE
    for _ in range(bound):
        connected_gateway.add_job(statuses=("succeeded",))
    capfd.readouterr()

    job = fast_hook().create_fine_tuning_job(**ARGS, idempotency_key="run-48")

    assert [created.id for created in connected_gateway.created_jobs] == [job.id]
    lookup = ["list"] * protocol.LOOKUP_MAX_PAGES
    assert endpoints(connected_gateway) == [*lookup, "create", *lookup]  # before and after creating
    warnings = structlog_lines(capfd.readouterr().out, "warning")
    assert any(f"after the newest {bound} jobs" in line for line in warnings)


def test_the_key_is_in_no_message_or_log_of_the_new_methods(connected_gateway, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    capfd.readouterr()
    sim = connected_gateway
    path = tmp_path / "t.jsonl"
    path.write_text('{"a": 1}\n')
    errors: list[BaseException] = []
    for endpoint in ("upload", "create", "list", "cancel"):
        for _ in range(3):
            sim.add_endpoint_fault(endpoint, Fault.server_error(503))
    running = sim.add_job(statuses=("running",))
    calls = [
        lambda: fast_hook().upload_file(path, provider_name="p"),
        lambda: fast_hook().create_fine_tuning_job(**ARGS),
        lambda: list(fast_hook().list_fine_tuning_jobs()),
        lambda: fast_hook().cancel_fine_tuning_job(running.id),
        lambda: fast_hook().upload_file(path),  # no provider name
        lambda: fast_hook().upload_file(tmp_path / "missing.jsonl", provider_name="p"),
    ]
    for call in calls:
        with pytest.raises(TrueFoundryError) as info:
            call()
        errors.append(info.value)
    results = [
        fast_hook().create_fine_tuning_job(**ARGS, idempotency_key="k"),
        fast_hook().upload_file(path, provider_name="p"),
        list(fast_hook().list_fine_tuning_jobs()),
    ]

    output = capfd.readouterr()
    assert any("TrueFoundry call failed" in line for line in structlog_lines(output.out, "warning"))
    assert_secret_free(
        sim.api_key, *errors, *results, *log_messages(caplog), caplog.text, output.out, output.err
    )


def test_both_transports_agree_a_refused_connection_was_never_sent(connected_gateway):
    import asyncio

    import aiohttp

    from airflow_provider_tfy.triggers.transport import send

    config = protocol.gateway_config(
        "c", host=f"http://127.0.0.1:{closed_port()}", password=connected_gateway.api_key, extra={}
    )
    request = protocol.Gateway(config).create(protocol.create_body(**ARGS))

    async def via_aiohttp() -> BaseException:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(TrueFoundryConnectionError) as info:
                await send(session, request)
            return info.value

    refused = asyncio.run(via_aiohttp())
    assert refused.request_sent is False
    assert protocol.could_have_been_applied(refused) is False
    reset_config = protocol.gateway_config(
        "c", host=connected_gateway.url, password=connected_gateway.api_key, extra={}
    )
    connected_gateway.add_endpoint_fault("create", Fault.reset())

    async def reset_via_aiohttp() -> BaseException:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(TrueFoundryConnectionError) as info:
                await send(session, protocol.Gateway(reset_config).create(protocol.create_body(**ARGS)))
            return info.value

    reset = asyncio.run(reset_via_aiohttp())
    assert reset.request_sent is True
    assert protocol.could_have_been_applied(reset) is True
