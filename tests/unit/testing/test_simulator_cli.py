"""``python -m airflow_provider_tfy.testing`` in a real subprocess."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import requests


def _start(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_tfy.testing", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Buffered stdout, as when piped for real: the banner must be flushed explicitly.
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
    )
    info: dict[str, str] = {}
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    while "ready" not in info:
        assert time.monotonic() < deadline, "simulator did not print its banner"
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(
                f"simulator exited early: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}"
            )
        line = line.strip()
        if line.startswith("TrueFoundry gateway simulator listening on "):
            info["url"] = line.rsplit(" ", 1)[1]
        elif line.startswith("API key: "):
            info["key"] = line.removeprefix("API key: ")
        elif line.startswith("export AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT="):
            info["conn"] = shlex.split(line.removeprefix("export AIRFLOW_CONN_TRUEFOUNDRY_DEFAULT="))[0]
        elif line.startswith("Job: "):
            info.setdefault("jobs", "")
            info["jobs"] += line.removeprefix("Job: ").split(" ")[0] + " "
        elif line.startswith("Press Ctrl+C"):
            info["ready"] = "yes"
    return proc, info


def _stop(proc: subprocess.Popen[str], sig: int) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_serves_scripted_jobs_and_exits_cleanly(sig: int) -> None:
    proc, info = _start(
        "--api-key", "cli-key", "--job", "ftjob-cli=queued,succeeded", "--path-prefix", "/api/llm"
    )
    try:
        assert info["url"].startswith("http://127.0.0.1:")
        assert info["url"].endswith("/api/llm")
        assert info["key"] == "cli-key"
        assert json.loads(info["conn"]) == {
            "conn_type": "truefoundry",
            "host": info["url"],
            "password": "cli-key",
        }
        auth = {"Authorization": "Bearer cli-key"}
        url = f"{info['url']}/fine_tuning/jobs/ftjob-cli"
        statuses = [requests.get(url, headers=auth, timeout=10).json()["status"] for _ in range(2)]
        assert statuses == ["queued", "succeeded"]
    finally:
        code = _stop(proc, sig)
    assert code == 0


def test_cli_defaults_seed_demo_jobs_and_a_random_key() -> None:
    proc, info = _start()
    try:
        assert info["key"].startswith("tfy-sim-")
        assert len(info["key"]) > len("tfy-sim-") + 8
        assert info["jobs"].split() == ["ftjob-demo-succeeded", "ftjob-demo-failed", "ftjob-demo-cancelled"]
        auth = {"Authorization": f"Bearer {info['key']}"}
        listing = requests.get(f"{info['url']}/fine_tuning/jobs", headers=auth, timeout=10).json()
        assert {job["id"] for job in listing["data"]} == set(info["jobs"].split())
        assert requests.get(f"{info['url']}/fine_tuning/jobs", timeout=10).status_code == 401
    finally:
        code = _stop(proc, signal.SIGTERM)
    assert code == 0


def test_cli_rejects_bad_job_spec() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_tfy.testing", "--job", "ftjob-x=queued,exploded"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "unknown status" in result.stderr


def test_cli_scripts_created_jobs_cancel_and_list_filter() -> None:
    proc, info = _start("--create-statuses", "queued,failed", "--no-cancel", "--ignore-list-filter")
    try:
        auth = {"Authorization": f"Bearer {info['key']}"}
        jobs = f"{info['url']}/fine_tuning/jobs"
        created = requests.post(
            jobs, json={"model": "m", "training_file": "file-1"}, headers=auth, timeout=10
        )
        job_id = created.json()["id"]
        statuses = [
            requests.get(f"{jobs}/{job_id}", headers=auth, timeout=10).json()["status"] for _ in range(2)
        ]
        assert statuses == ["queued", "failed"]
        assert requests.post(f"{jobs}/{job_id}/cancel", headers=auth, timeout=10).status_code == 405
        filtered = requests.get(
            jobs, params={"metadata[k]": "nothing-has-it"}, headers=auth, timeout=10
        ).json()
        assert len(filtered["data"]) == 4  # the filter is ignored: three demo jobs and the created one
    finally:
        code = _stop(proc, signal.SIGTERM)
    assert code == 0


def test_cli_rejects_bad_create_statuses() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_tfy.testing", "--create-statuses", "queued,exploded"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "exploded" in result.stderr
