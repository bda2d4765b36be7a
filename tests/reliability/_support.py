"""Helpers shared by the reliability suite: connections, DAG runs, the docs' tables."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# The fault-matrix and hostile-input tables are published on the reliability page of the docs.
DOCS_PAGE = ROOT / "docs" / "reliability.md"
CONN_ID = "tfy_reliability"
CONN_ENV = f"AIRFLOW_CONN_{CONN_ID.upper()}"
# Retries finish in a blink; the 1 s read timeout leaves a loaded CI box (2 cores, several Airflow
# processes) ample time to answer, so no request is retried, and counted, by accident.
HOOK_PARAMS = {"max_retries": 2, "retry_delay": 0.05, "timeout": 1.0}
ATTEMPTS_PER_CALL = HOOK_PARAMS["max_retries"] + 1


KEY_PREFIX = "tfy-SECRET-"


def new_key() -> str:
    """A fresh API key, recognisable in any output it leaks into."""
    return f"{KEY_PREFIX}{uuid.uuid4().hex}{uuid.uuid4().hex}"


def connection_json(host: str, key: str, **extra: Any) -> str:
    """An Airflow connection in the JSON form ``AIRFLOW_CONN_*`` variables take."""
    conn: dict[str, Any] = {"conn_type": "truefoundry", "host": host, "password": key}
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


def free_port() -> int:
    """A TCP port that was free a moment ago (for a server that must come back on the same port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sync_dag(dag: Any) -> None:
    """Serialise a DAG built inside a test into the metadata DB, as the dag-processor would.

    ``dag.test()`` refuses a DAG that is not serialised, and only parses the DAGs folder itself.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def run_dag(dag: Any, run_conf: dict[str, Any] | None = None) -> Any:
    """Serialise and run ``dag`` once with ``dag.test()``; return the finished DagRun."""
    sync_dag(dag)
    return dag.test(run_conf=run_conf)


def first_event(trigger: Any) -> dict[str, Any]:
    """Run a trigger on a fresh event loop until its first event; return the event's payload."""

    async def collect() -> dict[str, Any]:
        events = trigger.run()
        try:
            event = await events.__anext__()
        finally:
            await events.aclose()
        return event.payload

    return asyncio.run(collect())


# --------------------------------------------------------------------------------------------
# The docs' tables
# --------------------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table; ``|`` inside a cell is escaped."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(row) for row in rows)])


def check_docs_block(name: str, expected: str) -> None:
    """Fail unless the docs page holds exactly ``expected`` between the ``name`` markers.

    Missing markers fail too: a green run means the published table was compared.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    page = DOCS_PAGE.relative_to(ROOT) if DOCS_PAGE.is_relative_to(ROOT) else DOCS_PAGE
    hint = f"(print it with: pytest tests/reliability -k {name.replace('-', '_')}_table -s)"
    assert DOCS_PAGE.is_file(), f"{page} is missing; it publishes the {name} table {hint}."
    text = DOCS_PAGE.read_text(encoding="utf-8")
    missing = " / ".join(marker for marker in (start, end) if marker not in text)
    assert not missing, f"{page} has no {missing} marker; put the markers around the generated table {hint}."
    match = re.search(re.escape(start) + r"\n?(.*?)\n?" + re.escape(end), text, re.DOTALL)
    assert match is not None, f"{page}: {end} comes before {start}."
    actual = match.group(1).strip()
    assert actual == expected.strip(), (
        f"{page}'s {name} table is out of date; replace the text between the markers with:\n\n{expected}"
    )
