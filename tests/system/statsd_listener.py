"""A StatsD server for the stack: Airflow's metrics arrive here over UDP on loopback.

Every Airflow process of the stack sends its metrics (``[metrics] statsd_on``) to this listener
in the test process, so a test can count what the provider reported through Airflow's ``Stats``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter


class StatsdListener:
    """Collects ``<name>:<value>|c`` counters sent to ``127.0.0.1:<port>``; other kinds are ignored."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="statsd-listener", daemon=True)

    def start(self) -> StatsdListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def count(self, name: str) -> int:
        """The sum of the counter ``name`` (without Airflow's prefix) received so far."""
        with self._lock:
            return self._counts[name]

    def wait_for(self, name: str, at_least: int, timeout: float = 10.0) -> int:
        """The counter once it reaches ``at_least`` (UDP is asynchronous), or as it is at ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.count(name) < at_least and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.count(name)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            # One datagram may carry several lines; the prefix (``airflow.``) is cut off.
            for line in data.decode(errors="replace").splitlines():
                name, _, rest = line.partition(":")
                value, _, kind = rest.partition("|")
                if kind.startswith("c") and value.lstrip("-").isdigit():
                    with self._lock:
                        self._counts[name.removeprefix(f"{PREFIX}.")] += int(value)


#: ``[metrics] statsd_prefix`` in the stack.
PREFIX = "airflow"
