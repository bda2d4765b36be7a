"""TrueFoundryHook.list_fine_tuning_jobs and cancel_fine_tuning_job over real HTTP."""

from __future__ import annotations

import itertools
import logging

import pytest

from airflow_provider_tfy.exceptions import (
    FineTuningJobNotFound,
    TrueFoundryAPIError,
    TrueFoundryConfigError,
)
from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
from airflow_provider_tfy.testing import Fault

from .conftest import assert_secret_free, log_messages


def fast_hook(**kwargs) -> TrueFoundryHook:
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("retry_delay", 0.01)
    return TrueFoundryHook(**kwargs)


def list_queries(sim) -> list[dict[str, str]]:
    return [record.query for record in sim.requests if record.endpoint == "list"]


# ------------------------------------------------------------------------------------------
# List
# ------------------------------------------------------------------------------------------


def test_pages_are_followed_newest_first(connected_gateway):
    added = [connected_gateway.add_job(statuses=("running",)) for _ in range(7)]

    jobs = list(fast_hook().list_fine_tuning_jobs(page_size=3, provider_name="openai-main"))

    assert [job.id for job in jobs] == [job.id for job in reversed(added)]
    queries = list_queries(connected_gateway)
    assert queries == [
        {"limit": "3"},
        {"limit": "3", "after": jobs[2].id},
        {"limit": "3", "after": jobs[5].id},
    ]
    assert all(r.headers["x-tfy-provider-name"] == "openai-main" for r in connected_gateway.requests)


def test_pages_are_fetched_lazily(connected_gateway):
    for _ in range(5):
        connected_gateway.add_job(statuses=("running",))

    jobs = fast_hook().list_fine_tuning_jobs(page_size=2, after=None)
    assert connected_gateway.requests == []
    first_two = list(itertools.islice(jobs, 2))

    assert len(first_two) == 2
    assert len(list_queries(connected_gateway)) == 1


def test_after_starts_past_a_job(connected_gateway):
    added = [connected_gateway.add_job(statuses=("running",)) for _ in range(4)]

    jobs = list(fast_hook().list_fine_tuning_jobs(after=added[2].id))

    assert [job.id for job in jobs] == [added[1].id, added[0].id]
    assert list_queries(connected_gateway) == [{"limit": "20", "after": added[2].id}]


@pytest.mark.parametrize("ignored", [False, True], ids=["filtered-by-gateway", "gateway-ignores-filter"])
def test_the_metadata_filter_is_sent_and_applied_client_side(connected_gateway, ignored):
    connected_gateway.ignore_list_filter = ignored
    wanted = [
        connected_gateway.add_job(statuses=("running",), metadata={"team": "ml", "run": str(i)})
        for i in range(3)
    ]
    for i in range(4):
        connected_gateway.add_job(statuses=("running",), metadata={"team": "ops", "run": str(i)})
    connected_gateway.add_job(statuses=("running",))

    jobs = list(fast_hook().list_fine_tuning_jobs(job_metadata={"team": "ml"}, page_size=2))

    assert [job.id for job in jobs] == [job.id for job in reversed(wanted)]
    queries = list_queries(connected_gateway)
    assert all(query["metadata[team]"] == "ml" for query in queries)
    assert len(queries) == (4 if ignored else 2)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"page_size": 0}, "page_size must be a whole number from 1 to 100"),
        ({"page_size": 101}, "page_size must be a whole number from 1 to 100"),
        ({"job_metadata": {"team": 1}}, "job_metadata must map"),
        ({"after": ""}, "job_id is empty"),
    ],
)
def test_bad_list_arguments_fail_at_the_call_with_zero_requests(connected_gateway, kwargs, fragment):
    with pytest.raises(TrueFoundryConfigError, match=fragment):
        fast_hook().list_fine_tuning_jobs(**kwargs)
    assert connected_gateway.requests == []


def test_a_transient_list_failure_is_retried(connected_gateway):
    job = connected_gateway.add_job(statuses=("running",))
    connected_gateway.add_endpoint_fault("list", Fault.server_error(503))
    connected_gateway.add_endpoint_fault("list", Fault.reset())

    assert [found.id for found in fast_hook().list_fine_tuning_jobs()] == [job.id]
    assert len(list_queries(connected_gateway)) == 3


# ------------------------------------------------------------------------------------------
# Cancel
# ------------------------------------------------------------------------------------------


def test_cancel_returns_the_cancelled_job(connected_gateway):
    scripted = connected_gateway.add_job(statuses=("running",))

    job = fast_hook().cancel_fine_tuning_job(scripted.id, provider_name="openai-main")

    assert job.id == scripted.id
    assert job.status == "cancelled"
    assert connected_gateway.cancel_requests(scripted.id) == 1
    (record,) = connected_gateway.requests
    assert (record.method, record.endpoint) == ("POST", "cancel")
    assert record.headers["x-tfy-provider-name"] == "openai-main"
    assert fast_hook().get_fine_tuning_job(scripted.id).status == "cancelled"


@pytest.mark.parametrize(
    "fault", [Fault.server_error(503), Fault.applied(then=Fault.reset())], ids=["503", "applied-then-reset"]
)
def test_cancel_is_retried_like_a_retrieve(connected_gateway, fault):
    scripted = connected_gateway.add_job(statuses=("running",))
    connected_gateway.add_endpoint_fault("cancel", fault)

    job = fast_hook().cancel_fine_tuning_job(scripted.id)

    assert job.status == "cancelled"
    assert connected_gateway.cancel_requests(scripted.id) == 2


def test_a_gateway_that_cannot_cancel_says_so_clearly(connected_gateway, caplog):
    scripted = connected_gateway.add_job(statuses=("running",))
    connected_gateway.can_cancel = False

    with caplog.at_level(logging.DEBUG), pytest.raises(TrueFoundryAPIError) as info:
        fast_hook().cancel_fine_tuning_job(scripted.id)

    assert info.value.status_code == 405
    assert "this gateway cannot cancel fine-tuning jobs" in str(info.value)
    assert connected_gateway.cancel_requests(scripted.id) == 1  # not retried
    assert_secret_free(connected_gateway.api_key, info.value, *log_messages(caplog))


def test_cancelling_an_unknown_job_names_both_possible_causes(connected_gateway):
    with pytest.raises(FineTuningJobNotFound) as info:
        fast_hook().cancel_fine_tuning_job("ftjob-nobody")

    assert "this gateway cannot cancel fine-tuning jobs, or it does not know job 'ftjob-nobody'" in str(
        info.value
    )


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("get_fine_tuning_job", ("ftjob-1",)),
        ("cancel_fine_tuning_job", ("ftjob-1",)),
        ("list_fine_tuning_jobs", ()),
        ("upload_file", ("/no/such.jsonl",)),
    ],
)
def test_every_method_takes_the_same_header_arguments_and_no_others(connected_gateway, method, args):
    with pytest.raises(TypeError, match=rf"{method}\(\) got unexpected keyword argument\(s\) 'provider'"):
        getattr(fast_hook(), method)(*args, provider="openai-main")
    assert connected_gateway.requests == []
