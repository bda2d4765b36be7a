"""Hostile input: a clear error before any request, or encoding that keeps the request safe.

Every case goes through the sync hook and the async trigger against a live simulator, so "before
any request" is measured (the simulator saw nothing), not assumed. The same rows render the
docs' table in docs/reliability.md (:func:`hostile_input_markdown`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_tfy.exceptions import FineTuningJobNotFound, TrueFoundryConfigError
from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor
from airflow_provider_tfy.testing import GatewaySimulator
from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger

from . import _support
from ._support import (
    CONN_ENV,
    CONN_ID,
    HOOK_PARAMS,
    check_docs_block,
    connection_json,
    first_event,
    markdown_table,
    run_dag,
)

REFUSED = "`TrueFoundryConfigError` before any request"
JOBS_PREFIX = "/fine_tuning/jobs/"
# A clear error names the problem in a sentence, not a dump.
MAX_MESSAGE = 1000


@dataclass(frozen=True)
class Case:
    """One hostile input: where it goes, what it is, and what must happen."""

    name: str
    input: str
    example: str
    refused: bool
    # Hook/trigger keyword arguments (job_id and header overrides) ...
    call: dict[str, Any] = field(default_factory=dict)
    # ... or connection fields: "host" is formatted with the simulator's host:port.
    host: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    password: str | None = None
    # Words the error message must contain (it names what is wrong), and must not (a secret).
    mentions: tuple[str, ...] = ()
    never_shows: tuple[str, ...] = ()
    result: str = REFUSED


def _job(name: str, example: str, job_id: Any, *mentions: str) -> Case:
    return Case(name, "job id", example, True, call={"job_id": job_id}, mentions=("job_id", *mentions))


def _encoded(name: str, example: str, job_id: str) -> Case:
    return Case(
        name,
        "job id",
        example,
        False,
        call={"job_id": job_id},
        result="percent-encoded as one path segment under `/fine_tuning/jobs/`; the gateway answers 404 "
        "(`FineTuningJobNotFound`)",
    )


def _url(name: str, example: str, host: str, *mentions: str, never_shows: tuple[str, ...] = ()) -> Case:
    return Case(
        name,
        "base URL",
        example,
        True,
        call={"job_id": "ftjob-ok"},
        host=host,
        mentions=("base URL", *mentions),
        never_shows=never_shows,
    )


def _header(name: str, input_: str, example: str, *, mentions: tuple[str, ...], **call: Any) -> Case:
    return Case(name, input_, example, True, call={"job_id": "ftjob-ok", **call}, mentions=mentions)


def _extra(name: str, input_: str, example: str, *, mentions: tuple[str, ...], **extra: Any) -> Case:
    return Case(name, input_, example, True, call={"job_id": "ftjob-ok"}, extra=extra, mentions=mentions)


CASES: list[Case] = [
    _job("job_id_empty", '`""`', "", "empty"),
    _job("job_id_blank", '`"   "`', "   ", "empty"),
    _job("job_id_dotdot", '`".."`', ".."),
    _job("job_id_dot", '`"."`', "."),
    _encoded("job_id_slash", '`"../../admin"`', "../../admin"),
    _encoded("job_id_slash_inside", '`"ftjob/../x"`', "ftjob/../x"),
    _encoded("job_id_percent_2f", '`"..%2F..%2Fadmin"`', "..%2F..%2Fadmin"),
    _encoded("job_id_query_fragment", '`"ftjob?limit=1#x"`', "ftjob?limit=1#x"),
    _encoded("job_id_non_ascii", '`"ftjob-é"`', "ftjob-é"),
    _job("job_id_crlf", '`"ftjob-1\\r\\nX-Evil: 1"`', "ftjob-1\r\nX-Evil: 1", "control"),
    _job("job_id_nul", '`"ftjob-\\x00"`', "ftjob-\x00", "control"),
    _job("job_id_tab", '`"ftjob-\\t1"`', "ftjob-\t1", "control"),
    _job("job_id_del", '`"ftjob-\\x7f"`', "ftjob-\x7f", "control"),
    _job("job_id_10000_chars", "10,000 characters", "f" * 10_000, "10000"),
    _job("job_id_int", "`12345`", 12345, "string", "int"),
    _job("job_id_none", "`None`", None, "string", "NoneType"),
    _job("job_id_list", '`["ftjob-1"]`', ["ftjob-1"], "string", "list"),
    _job("job_id_bytes", '`b"ftjob-1"`', b"ftjob-1", "string", "bytes"),
    _url("url_no_scheme", "`127.0.0.1:8080`", "{hostport}", "scheme"),
    _url("url_ftp", "`ftp://127.0.0.1:8080`", "ftp://{hostport}", "https://"),
    _url("url_space", "`http://127.0.0.1:8080/api llm`", "http://{hostport}/api llm", "spaces"),
    _url("url_tab", "`http://127.0.0.1:8080/\\tapi`", "http://{hostport}/\tapi", "spaces"),
    _url(
        "url_credentials",
        "`http://admin:hunter2@127.0.0.1:8080`",
        "http://admin:hunter2@{hostport}",
        "credentials",
        never_shows=("hunter2", "admin:"),
    ),
    _url("url_query", "`http://127.0.0.1:8080?x=1`", "http://{hostport}?x=1", "query"),
    _url("url_no_host", "`https://`", "https://", "host"),
    _url("url_bad_port", "`http://127.0.0.1:99999`", "http://127.0.0.1:99999", "port"),
    _header(
        "metadata_int_value",
        "metadata",
        '`{"team": 1}`',
        metadata={"team": 1},
        mentions=("metadata", "strings"),
    ),
    _header(
        "metadata_null_value",
        "metadata",
        '`{"team": None}`',
        metadata={"team": None},
        mentions=("metadata", "strings"),
    ),
    _header(
        "metadata_int_key", "metadata", '`{1: "a"}`', metadata={1: "a"}, mentions=("metadata", "strings")
    ),
    _header(
        "metadata_nested",
        "metadata",
        '`{"team": {"a": "b"}}`',
        metadata={"team": {"a": "b"}},
        mentions=("metadata", "strings"),
    ),
    _header("metadata_list", "metadata", '`["team"]`', metadata=["team"], mentions=("metadata", "strings")),
    _extra(
        "metadata_extra_not_json",
        "metadata (connection extra)",
        '`"team=ml"`',
        metadata="team=ml",
        mentions=("metadata", "JSON"),
    ),
    _extra(
        "metadata_extra_int_value",
        "metadata (connection extra)",
        '`"{\\"team\\": 1}"`',
        metadata='{"team": 1}',
        mentions=("metadata", "strings"),
    ),
    _header(
        "provider_name_crlf",
        "header value",
        '`provider_name="openai\\r\\nX-Evil: 1"`',
        provider_name="openai\r\nX-Evil: 1",
        mentions=("provider_name", "control"),
    ),
    _header(
        "provider_model_lf",
        "header value",
        '`provider_model="gemini\\nX-Evil: 1"`',
        provider_model="gemini\nX-Evil: 1",
        mentions=("provider_model", "control"),
    ),
    _header(
        "bucket_cr",
        "header value",
        '`vertex_storage_bucket_name="b\\rX-Evil: 1"`',
        vertex_storage_bucket_name="b\rX-Evil: 1",
        mentions=("vertex_storage_bucket_name", "control"),
    ),
    _header(
        "file_purpose_nul",
        "header value",
        '`file_purpose="fine-tune\\x00"`',
        file_purpose="fine-tune\x00",
        mentions=("file_purpose", "control"),
    ),
    _extra(
        "provider_name_extra_crlf",
        "header value (connection extra)",
        '`"openai\\r\\nX-Evil: 1"`',
        provider_name="openai\r\nX-Evil: 1",
        mentions=("provider_name", "control"),
    ),
    Case(
        "metadata_value_crlf",
        "metadata",
        '`{"team": "ml\\r\\nX-Evil: 1"}`',
        False,
        call={"job_id": "ftjob-ok", "metadata": {"team": "ml\r\nX-Evil: 1"}},
        result="JSON-escaped into `x-tfy-metadata`; no header is injected",
    ),
    Case(
        "api_key_newline",
        "API key",
        '`"tfy-key\\nX-Evil: 1"`',
        True,
        call={"job_id": "ftjob-ok"},
        password="tfy-key\nX-Evil: 1",
        mentions=("API key", "control"),
        never_shows=("tfy-key",),
    ),
]


def hostile_input_markdown() -> str:
    """The hostile-input table of docs/reliability.md, generated from :data:`CASES`."""
    intro = (
        "Each case goes through the hook and the trigger against the simulator; "
        "requests are those the simulator saw (`tests/reliability/test_hostile_input.py`)."
    )
    rows = [[case.input, case.example, case.result, "0" if case.refused else "1"] for case in CASES]
    return intro + "\n\n" + markdown_table(["Input", "Example", "Result", "Requests"], rows)


# --------------------------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------------------------


def _set_connection(case: Case, gateway: GatewaySimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    hostport = f"{gateway.host}:{gateway.port}"
    host = case.host.format(hostport=hostport) if case.host is not None else gateway.url
    password = case.password if case.password is not None else gateway.api_key
    monkeypatch.setenv(CONN_ENV, connection_json(host, password, **case.extra))


def _via_hook(case: Case) -> BaseException | None:
    kwargs = dict(case.call)
    job_id = kwargs.pop("job_id")
    try:
        TrueFoundryHook(CONN_ID, **HOOK_PARAMS).get_fine_tuning_job(job_id, **kwargs)
    except Exception as err:
        return err
    return None


def _via_trigger(case: Case) -> dict[str, Any]:
    trigger = TrueFoundryFineTuningJobTrigger(
        truefoundry_conn_id=CONN_ID,
        poll_interval=0.1,
        deadline=time.time() + 10,
        hook_params=HOOK_PARAMS,
        **case.call,
    )
    return first_event(trigger)


PATHS: dict[str, Callable[[Case], Any]] = {"hook": _via_hook, "trigger": _via_trigger}


def _params() -> list[Any]:
    params = []
    for case in CASES:
        for path in PATHS:
            marks: list[Any] = []
            params.append(pytest.param(case, path, id=f"{case.name}-{path}", marks=marks))
    return params


@pytest.mark.parametrize(("case", "path"), _params())
def test_hostile_input(
    case: Case, path: str, gateway: GatewaySimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_connection(case, gateway, monkeypatch)
    if case.name == "metadata_value_crlf":
        gateway.add_job("ftjob-ok", statuses=("succeeded",))
    outcome = PATHS[path](case)

    if case.refused:
        assert gateway.requests == [], "a request left before the input was checked"
        if path == "hook":
            assert isinstance(outcome, TrueFoundryConfigError), repr(outcome)
            message = str(outcome)
        else:
            assert (outcome["status"], outcome["kind"]) == ("error", "config"), outcome
            message = outcome["message"]
        assert len(message) < MAX_MESSAGE
        for word in case.mentions:
            assert word in message, f"{word!r} not in {message!r}"
        for secret in case.never_shows:
            assert secret not in message
        return

    # Safe encoding: exactly one request, inside /fine_tuning/jobs/, carrying the id unchanged.
    (record,) = gateway.requests
    assert record.path.startswith(JOBS_PREFIX)
    segment = record.path[len(JOBS_PREFIX) :]
    assert "/" not in segment
    assert "?" not in segment
    assert "#" not in segment
    assert record.query == {}
    assert unquote(segment) == case.call["job_id"]
    assert "x-evil" not in record.headers
    if case.name == "metadata_value_crlf":
        assert record.status == 200
        assert json.loads(record.headers["x-tfy-metadata"]) == case.call["metadata"]
        assert "\r" not in record.headers["x-tfy-metadata"]
        assert "\n" not in record.headers["x-tfy-metadata"]
        return
    assert record.status == 404
    assert record.job_id == case.call["job_id"]
    if path == "hook":
        assert isinstance(outcome, FineTuningJobNotFound), repr(outcome)
    else:
        assert (outcome["status"], outcome["kind"], outcome["status_code"]) == ("error", "not_found", 404)


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_job_id_template_rendering_to_empty_fails_before_any_request(
    mode: str, airflow_db: Any, gateway: GatewaySimulator, gateway_conn: str
) -> None:
    seen: dict[str, Any] = {}
    with DAG(
        dag_id=f"reliability_hostile_empty_template_{mode}",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
    ) as dag:
        TrueFoundryFineTuningJobSensor(
            task_id="wait",
            job_id="{{ dag_run.conf.get('job_id', '') }}",
            truefoundry_conn_id=gateway_conn,
            poke_interval=0.1,
            timeout=30,
            hook_params=HOOK_PARAMS,
            deferrable=mode == "deferrable",
            retries=3,
            retry_delay=timedelta(0),
            on_failure_callback=lambda context: seen.setdefault("error", context.get("exception")),
        )
    run = run_dag(dag, run_conf={})

    assert str(run.state) == "failed"
    (ti,) = run.get_task_instances()
    # A config error is an AirflowFailException: no task retry is spent on it.
    assert (str(ti.state), ti.try_number) == ("failed", 1)
    assert isinstance(seen["error"], TrueFoundryConfigError)
    assert "empty" in str(seen["error"])
    assert "template" in str(seen["error"])
    assert gateway.requests == []


@pytest.mark.parametrize(
    "mode",
    [
        "poke",
        "deferrable",
    ],
)
def test_metadata_rendered_as_json_text_reaches_the_gateway_in_every_mode(
    mode: str, airflow_db: Any, gateway: GatewaySimulator, gateway_conn: str
) -> None:
    metadata = {"team": "ml\r\nX-Evil: 1", "run": "nightly"}
    scripted = gateway.add_job(statuses=("queued", "succeeded"))
    with DAG(
        dag_id=f"reliability_hostile_metadata_text_{mode}",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
    ) as dag:
        TrueFoundryFineTuningJobSensor(
            task_id="wait",
            job_id=scripted.id,
            truefoundry_conn_id=gateway_conn,
            # A template renders to text: the hook documents that metadata may be JSON text.
            metadata="{{ dag_run.conf['metadata'] | tojson }}",
            poke_interval=0.1,
            timeout=30,
            hook_params=HOOK_PARAMS,
            deferrable=mode == "deferrable",
            retries=0,
        )
    run = run_dag(dag, run_conf={"metadata": metadata})

    sent = [json.loads(record.headers["x-tfy-metadata"]) for record in gateway.requests]
    assert sent
    assert all(value == metadata for value in sent)
    assert str(run.state) == "success"
    assert gateway.request_count(scripted.id) == 2


def test_hostile_input_table_in_docs() -> None:
    table = hostile_input_markdown()
    print(f"\n<!-- hostile-input:start -->\n{table}\n<!-- hostile-input:end -->")
    check_docs_block("hostile-input", table)


def test_case_names_are_unique() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))


def test_the_docs_check_fails_without_the_page_or_markers_and_on_a_stale_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "reliability.md"
    monkeypatch.setattr(_support, "DOCS_PAGE", page)
    table = hostile_input_markdown()
    with pytest.raises(AssertionError, match="is missing"):
        check_docs_block("hostile-input", table)
    page.write_text("# Title\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="no <!-- hostile-input:start --> / <!-- hostile-input:end -->"):
        check_docs_block("hostile-input", table)
    stale = table.replace("| 0 |", "| 2 |", 1)
    page.write_text(f"x\n<!-- hostile-input:start -->\n{stale}\n<!-- hostile-input:end -->\ny\n", "utf-8")
    with pytest.raises(AssertionError, match="out of date"):
        check_docs_block("hostile-input", table)
    page.write_text(f"x\n<!-- hostile-input:start -->\n{table}\n<!-- hostile-input:end -->\ny\n", "utf-8")
    check_docs_block("hostile-input", table)
