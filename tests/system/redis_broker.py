"""A private Redis server for one test session: the Celery workers' broker, from Debian's package.

``scripts/test.sh`` installs Debian's ``redis-server`` when it is missing. The server listens on
a free loopback port only (no Unix socket), keeps nothing on disk (``--save ''``, no append-only
file) and works in a fresh folder under the system temp dir; :meth:`stop` shuts it down and
removes that folder, and returns any process of it that outlived the shutdown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

START_TIMEOUT = 30.0


def redis_server_binary() -> str:
    """The ``redis-server`` program; fail the test with the fix when there is none."""
    found = shutil.which("redis-server", path=f"{os.environ.get('PATH', '')}:/usr/bin:/usr/sbin")
    if found:
        return found
    pytest.fail(
        "The system tests need Redis as the Celery broker. Install Debian's package: "
        "`apt-get install redis-server` (scripts/test.sh does this when run as root)."
    )


class RedisServer:
    """``start()`` starts the server and waits for it to answer; ``stop()`` stops and removes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.binary = redis_server_binary()
        self.base = Path(tempfile.mkdtemp(prefix="tfy-systest-redis-"))
        self.log_path = self.base / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The broker URL Celery gets (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args: str, timeout: float = 5.0) -> bytes:
        """Send one command (RESP, inline) and return the raw first answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            parts = [f"${len(arg.encode())}\r\n{arg}\r\n" for arg in args]
            sock.sendall(f"*{len(args)}\r\n{''.join(parts)}".encode())
            return sock.recv(65536)

    def start(self) -> None:
        log = self.log_path.open("wb")
        with log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--bind", "127.0.0.1",
                    "--port", str(self.port),
                    "--unixsocket", "",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.base),
                    "--daemonize", "no",
                    "--protected-mode", "yes",
                ],
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self.command("PING").startswith(b"+PONG"):
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server did not answer in {START_TIMEOUT:.0f} s\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as err:
            return f"<cannot read {self.log_path}: {err}>"

    def running_processes(self) -> list[tuple[int, str]]:
        """Live processes of this server: its session, or naming its port on the command line."""
        if self.process is None:
            return []
        found = []
        marker = f"127.0.0.1:{self.port}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                state, _, _, session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
                cmdline = (entry / "cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if state != "Z" and (
                int(session) == self.process.pid or (b"redis-server" in cmdline and marker in cmdline)
            ):
                found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
        return found

    def stop(self) -> list[tuple[int, str]]:
        """SIGTERM (Redis exits without saving: nothing is configured to be saved), then delete the
        folder; return any process that outlived it (killed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
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
