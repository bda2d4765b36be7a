"""A private PostgreSQL cluster for one test session, from the machine's Debian packages.

``scripts/test.sh`` installs Debian's ``postgresql`` when it is missing. The cluster lives in a
fresh folder under the system temp dir (not pytest's, whose 0700 parents the ``postgres`` user
cannot enter), listens on a free loopback port only (no Unix socket), trusts its one superuser
``airflow`` (nothing else can reach it), and is removed, processes and files, by :meth:`stop`.

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user, which then
owns the folder; as anyone else it runs as that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest

DATABASE = "airflow"
USER = "airflow"
START_TIMEOUT = 60.0
# Durability is worth nothing in a throwaway cluster; these settings make every commit cheap.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Scheduler, api-server, dag-processor and two triggerers with SQLAlchemy pools of 5 + 10
    # overflow each, sync and async: well under this.
    "max_connections": "300",
}


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL's bin folder; fail the test with the fix when there is none."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    pytest.fail(
        "The system tests need PostgreSQL's server binaries (initdb, postgres). Install Debian's "
        "package: `apt-get install postgresql` (scripts/test.sh does this when run as root)."
    )


class PostgresCluster:
    """``start()`` initialises and starts the cluster; ``stop()`` stops it and deletes its files."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bindir = postgres_bindir()
        self.base = Path(tempfile.mkdtemp(prefix="tfy-systest-pg-"))
        self.data = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self._user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        self.version = ""

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Airflow gets (it derives the asyncpg one from it)."""
        return f"postgresql+psycopg2://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def connect(self) -> Any:
        """A new psycopg2 connection to the Airflow database (autocommit)."""
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=USER, dbname=DATABASE)
        conn.autocommit = True
        return conn

    def _run(self, *args: str) -> str:
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=120,
            **self._user,
        )
        if result.returncode != 0:
            pytest.fail(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def start(self) -> None:
        # --auth=trust: the server listens on loopback only and lives for one test session.
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        settings = [arg for name, value in SERVER_SETTINGS.items() for arg in ("-c", f"{name}={value}")]
        log = self.log_path.open("wb")
        with log:
            self.process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), *settings],
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._user,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"postgres exited {self.process.returncode}:\n{self.log_tail()}")
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=USER, dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"postgres did not accept connections in {START_TIMEOUT:.0f} s\n{self.log_tail()}"
                    )
                time.sleep(0.2)
        conn.autocommit = True
        with conn.cursor() as cur:  # not ``with conn``: that opens a transaction
            cur.execute(f"CREATE DATABASE {DATABASE}")
            cur.execute("SHOW server_version")
            self.version = str(cur.fetchone()[0])
        conn.close()

    def dump(self) -> str:
        """The whole Airflow database as SQL text (``pg_dump``), for searching it."""
        return self._run("pg_dump", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as err:
            return f"<cannot read {self.log_path}: {err}>"

    def running_processes(self) -> list[tuple[int, str]]:
        """Live processes of this cluster: the postmaster's session, or naming the data folder."""
        if self.process is None:
            return []
        found = []
        marker = str(self.data).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                state, _, _, session = stat.rsplit(")", 1)[1].split()[:4]
                cmdline = (entry / "cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if state != "Z" and (int(session) == self.process.pid or marker in cmdline):
                found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
        return found

    def stop(self) -> list[tuple[int, str]]:
        """Fast shutdown, then delete the folder; return any process that outlived it (killed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: abort sessions, exit
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        leftovers = self.running_processes()
        for pid, _ in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)
        return leftovers


def major_version(version: str) -> str:
    match = re.match(r"\d+(\.\d+)?", version)
    return match.group(0) if match else version
