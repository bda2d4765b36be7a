"""Transport security and liveness: redirects, plain http, TLS verification, timeouts.

Proved against live servers on loopback: a second simulator as the redirect target, an
``ssl``-wrapped ``http.server`` with a CA made here for TLS, and raw sockets that never answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tfy import protocol
from airflow_provider_tfy.exceptions import (
    TrueFoundryAPIError,
    TrueFoundryConfigError,
    TrueFoundryConnectionError,
)
from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
from airflow_provider_tfy.testing import Fault, GatewaySimulator
from airflow_provider_tfy.testing.jobs import ScriptedJob
from airflow_provider_tfy.triggers.fine_tuning import TrueFoundryFineTuningJobTrigger

from ._support import CONN_ENV, CONN_ID, HOOK_PARAMS, connection_json, first_event

TIMEOUT = HOOK_PARAMS["timeout"]
ATTEMPTS = HOOK_PARAMS["max_retries"] + 1
# Seconds a bounded call may run past its bound on a busy machine: the suite shares 2 cores with a
# real Airflow stack on the other pytest-xdist worker. A hung call would pass any such bound.
SCHEDULING_SLACK = 3.0


def _hook(**params: Any) -> TrueFoundryHook:
    return TrueFoundryHook(CONN_ID, **{**HOOK_PARAMS, **params})


def _trigger(job_id: str, deadline_in: float = 10.0) -> TrueFoundryFineTuningJobTrigger:
    return TrueFoundryFineTuningJobTrigger(
        job_id=job_id,
        truefoundry_conn_id=CONN_ID,
        poll_interval=0.1,
        deadline=time.time() + deadline_in,
        hook_params=HOOK_PARAMS,
    )


def _connect(monkeypatch: pytest.MonkeyPatch, host: str, key: str, **extra: Any) -> None:
    monkeypatch.setenv(CONN_ENV, connection_json(host, key, **extra))


def _config(host: str, **extra: Any) -> protocol.GatewayConfig:
    return protocol.gateway_config("c", host=host, password="tfy-key", extra=extra)


# --------------------------------------------------------------------------------------------
# Redirects never carry the key to another origin
# --------------------------------------------------------------------------------------------


@pytest.fixture
def elsewhere(api_key: str) -> Iterator[GatewaySimulator]:
    """A second gateway on another origin, accepting the same key: the redirect's target."""
    with GatewaySimulator(api_key=api_key) as simulator:
        simulator.add_job("ftjob-moved", statuses=("succeeded",))
        yield simulator


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("path", ["hook", "trigger"])
def test_a_redirect_to_another_origin_is_not_followed(
    status: int, path: str, gateway: GatewaySimulator, gateway_conn: str, elsewhere: GatewaySimulator
) -> None:
    location = f"{elsewhere.url}/fine_tuning/jobs/ftjob-moved"
    gateway.add_job("ftjob-moved", faults=[Fault.status(status, headers={"Location": location})])

    if path == "hook":
        with pytest.raises(TrueFoundryAPIError) as caught:
            _hook().get_fine_tuning_job("ftjob-moved")
        assert caught.value.status_code == status
        assert not caught.value.retryable
        assert "redirect" in str(caught.value)
        assert str(elsewhere.port) in str(caught.value)
    else:
        event = first_event(_trigger("ftjob-moved"))
        assert (event["status"], event["kind"], event["status_code"]) == ("error", "api", status)
        assert "redirect" in event["message"]

    assert gateway.request_count("ftjob-moved") == 1
    assert elsewhere.requests == [], "the redirect was followed to another origin"
    assert elsewhere.connections_opened == 0


# --------------------------------------------------------------------------------------------
# Plain http only for loopback, unless the extra says so
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "http://gateway.example.com",
        "http://10.1.2.3:8080",
        "http://127.0.0.1.nip.io",
        "http://localhost.evil.example",
        "http://0x7f000001",
        "http://[2001:db8::1]",
    ],
)
def test_plain_http_to_a_non_loopback_host_is_refused(host: str) -> None:
    with pytest.raises(TrueFoundryConfigError, match="allow_insecure_http"):
        _config(host)
    for allowed in (True, "true", "yes"):
        assert _config(host, allow_insecure_http=allowed).base_url == host
    with pytest.raises(TrueFoundryConfigError, match="allow_insecure_http"):
        _config(host, allow_insecure_http="false")


@pytest.mark.parametrize(
    "host", ["http://127.0.0.1:8080", "http://127.8.9.10", "http://localhost:1", "http://[::1]:8080"]
)
def test_plain_http_to_loopback_is_accepted(host: str) -> None:
    assert _config(host).base_url == host


def test_allow_insecure_http_must_be_a_boolean() -> None:
    with pytest.raises(TrueFoundryConfigError, match="true or false"):
        _config("http://gateway.example.com", allow_insecure_http="maybe")


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


@pytest.mark.parametrize("path", ["hook", "trigger"])
def test_plain_http_to_this_machines_lan_address_needs_the_extra(
    path: str, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with GatewaySimulator(api_key=api_key, host=address) as lan:
        lan.add_job("ftjob-lan", statuses=("succeeded",))

        _connect(monkeypatch, lan.url, api_key)
        if path == "hook":
            with pytest.raises(TrueFoundryConfigError, match="unencrypted"):
                _hook().get_fine_tuning_job("ftjob-lan")
        else:
            assert first_event(_trigger("ftjob-lan"))["kind"] == "config"
        assert lan.requests == []

        _connect(monkeypatch, lan.url, api_key, allow_insecure_http="true")
        if path == "hook":
            assert _hook().get_fine_tuning_job("ftjob-lan").status == "succeeded"
        else:
            assert first_event(_trigger("ftjob-lan"))["status"] == "succeeded"
        assert len(lan.requests) == 1
        assert lan.requests[0].has_valid_auth


# --------------------------------------------------------------------------------------------
# TLS: verification on by default, a CA bundle path, or off with a warning
# --------------------------------------------------------------------------------------------


def test_verify_defaults_to_on_and_false_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_tfy.protocol")
    assert _config("https://gateway.example.com").verify is True
    assert _config("https://gateway.example.com", verify="").verify is True
    assert _config("https://gateway.example.com", verify="true").verify is True
    assert caplog.records == []
    assert _config("https://gateway.example.com", verify=" /etc/ssl/ca.pem ").verify == "/etc/ssl/ca.pem"
    for off in (False, "false", "0"):
        caplog.clear()
        assert _config("https://gateway.example.com", verify=off).verify is False
        (record,) = caplog.records
        assert record.levelno == logging.WARNING
        assert "verification off" in record.getMessage()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA, and a server certificate it signed for 127.0.0.1 and localhost."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def build(subject: str, issuer: Any, issuer_key: Any, key: Any, *, ca: bool) -> Any:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=not ca,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=ca,
                    crl_sign=ca,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        if not ca:
            builder = (
                builder.add_extension(
                    x509.SubjectAlternativeName(
                        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                    ),
                    critical=False,
                )
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                    critical=False,
                )
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("reliability test CA", None, ca_key, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = build("127.0.0.1", ca_cert.subject, ca_key, server_key, ca=False)

    folder = tmp_path_factory.mktemp("tls")
    files = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


class _TLSGateway(ThreadingHTTPServer):
    """The retrieve endpoint over HTTPS, answering one succeeded job to the right key."""

    daemon_threads = True

    def __init__(self, files: dict[str, Path], key: str) -> None:
        super().__init__(("127.0.0.1", 0), _TLSHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(files["cert"], files["key"])
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.key = key
        self.requests = 0
        self.job = ScriptedJob("ftjob-tls", statuses=("succeeded",)).poll()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"


class _TLSHandler(BaseHTTPRequestHandler):
    server: _TLSGateway

    def do_GET(self) -> None:
        self.server.requests += 1
        ok = self.headers.get("Authorization") == f"Bearer {self.server.key}"
        ok = ok and self.path == "/fine_tuning/jobs/ftjob-tls"
        body = json.dumps(self.server.job if ok else {"error": {"message": "no"}}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def tls_gateway(tls_files: dict[str, Path], api_key: str) -> Iterator[_TLSGateway]:
    server = _TLSGateway(tls_files, api_key)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("path", ["hook", "trigger"])
@pytest.mark.parametrize(
    "verify",
    [
        pytest.param(None, id="default"),
        # A cleared UI field stores "": that must mean the default (on), never "off".
        pytest.param("", id="cleared-field"),
    ],
)
def test_tls_verification_refuses_an_unknown_ca(
    path: str, verify: str | None, tls_gateway: _TLSGateway, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    extra = {} if verify is None else {"verify": verify}
    _connect(monkeypatch, tls_gateway.url, api_key, **extra)
    if path == "hook":
        with pytest.raises(TrueFoundryConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            _hook().get_fine_tuning_job("ftjob-tls")
    else:
        # A certificate that fails verification is not retried: the wait ends at once.
        event = first_event(_trigger("ftjob-tls", deadline_in=1.0))
        assert event["status"] == "error"
        assert "TLS verification failed" in event["message"]
    assert tls_gateway.requests == 0, "an HTTP request got through an unverified TLS session"


@pytest.mark.parametrize("path", ["hook", "trigger"])
def test_tls_verification_accepts_the_ca_bundle_given_in_verify(
    path: str,
    tls_gateway: _TLSGateway,
    tls_files: dict[str, Path],
    api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _connect(monkeypatch, tls_gateway.url, api_key, verify=str(tls_files["ca"]))
    if path == "hook":
        job = _hook().get_fine_tuning_job("ftjob-tls")
        assert job.to_xcom() == tls_gateway.job
    else:
        event = first_event(_trigger("ftjob-tls"))
        assert (event["status"], event["job"]) == ("succeeded", tls_gateway.job)
    assert tls_gateway.requests == 1


@pytest.mark.parametrize("path", ["hook", "trigger"])
def test_tls_verification_off_works_and_warns(
    path: str,
    tls_gateway: _TLSGateway,
    api_key: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_tfy.protocol")
    _connect(monkeypatch, tls_gateway.url, api_key, verify="false")
    if path == "hook":
        assert _hook().get_fine_tuning_job("ftjob-tls").status == "succeeded"
    else:
        assert first_event(_trigger("ftjob-tls"))["status"] == "succeeded"
    assert any("verification off" in record.getMessage() for record in caplog.records)
    assert tls_gateway.requests == 1


@pytest.mark.parametrize("path", ["hook", "trigger"])
def test_a_missing_ca_bundle_is_a_config_error_before_any_request(
    path: str, gateway: GatewaySimulator, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    https_url = gateway.url.replace("http://", "https://")
    _connect(monkeypatch, https_url, api_key, verify=str(tmp_path / "missing-ca.pem"))
    if path == "hook":
        with pytest.raises(TrueFoundryConfigError, match="verify"):
            _hook().get_fine_tuning_job("ftjob-1")
    else:
        event = first_event(_trigger("ftjob-1"))
        assert (event["status"], event["kind"]) == ("error", "config")
    assert gateway.connections_opened == 0


# --------------------------------------------------------------------------------------------
# Connect and read timeouts: no call can hang
# --------------------------------------------------------------------------------------------


class _Silent:
    """A TCP server that accepts connections, reads what it is sent, and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.05)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                connection, _ = self.listener.accept()
                self.accepted += 1
                self.connections.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in self.connections:
            connection.close()
        self.listener.close()


class _Dripping(_Silent):
    """Answers a 200 whose body trickles in a byte at a time, faster than any read timeout."""

    def _serve(self) -> None:
        self.listener.settimeout(0.05)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                connection, _ = self.listener.accept()
                self.accepted += 1
                self.connections.append(connection)
                threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            connection.recv(65536)
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
            )
            while not self._stop.wait(TIMEOUT / 3):
                connection.sendall(b" ")


@pytest.fixture
def silent() -> Iterator[_Silent]:
    server = _Silent()
    yield server
    server.close()


@pytest.fixture
def backlogged() -> Iterator[int]:
    """A port whose listen queue is full: connecting hangs until the client gives up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    yield port
    for filler in fillers:
        filler.close()
    listener.close()


def _call_bound() -> float:
    """The longest a hook call may take: every attempt's timeout, plus the longest backoffs."""
    policy = protocol.RetryPolicy.from_params(
        max_retries=HOOK_PARAMS["max_retries"], retry_delay=HOOK_PARAMS["retry_delay"]
    )
    backoff = sum(policy.backoff(n, rng=lambda: 1.0) for n in range(1, ATTEMPTS))
    return ATTEMPTS * TIMEOUT + backoff


def test_every_request_carries_connect_and_read_timeouts() -> None:
    config = protocol.gateway_config("c", host="https://gateway.example.com", password="k", extra={})
    request = protocol.Gateway(config).retrieve("ftjob-1")
    assert (request.connect_timeout, request.read_timeout) == (10.0, 30.0)
    config = protocol.gateway_config("c", host="https://g.example", password="k", extra={}, timeout=0.5)
    request = protocol.Gateway(config).retrieve("ftjob-1")
    assert (request.connect_timeout, request.read_timeout) == (0.5, 0.5)


def test_a_gateway_that_never_answers_ends_the_hook_call_in_time(
    silent: _Silent, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _connect(monkeypatch, f"http://127.0.0.1:{silent.port}", api_key)
    started = time.monotonic()
    with pytest.raises(TrueFoundryConnectionError, match="did not answer in time"):
        _hook().get_fine_tuning_job("ftjob-silent")
    elapsed = time.monotonic() - started
    # Every attempt waited for its read timeout; all of them together stay within the bound.
    assert ATTEMPTS * TIMEOUT * 0.9 <= elapsed <= _call_bound() + SCHEDULING_SLACK, elapsed
    assert silent.accepted == ATTEMPTS


def test_a_gateway_that_never_accepts_ends_the_hook_call_in_time(
    backlogged: int, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _connect(monkeypatch, f"http://127.0.0.1:{backlogged}", api_key)
    started = time.monotonic()
    with pytest.raises(TrueFoundryConnectionError, match="did not answer in time"):
        _hook().get_fine_tuning_job("ftjob-backlogged")
    elapsed = time.monotonic() - started
    assert ATTEMPTS * TIMEOUT * 0.9 <= elapsed <= _call_bound() + SCHEDULING_SLACK, elapsed


@pytest.mark.parametrize("server", ["silent", "backlogged"])
def test_a_gateway_that_never_answers_ends_the_trigger_at_its_deadline(
    server: str, request: pytest.FixtureRequest, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = request.getfixturevalue("silent").port if server == "silent" else request.getfixturevalue(server)
    _connect(monkeypatch, f"http://127.0.0.1:{port}", api_key)
    deadline_in = 1.5
    started = time.monotonic()
    event = first_event(_trigger("ftjob-silent", deadline_in=deadline_in))
    elapsed = time.monotonic() - started
    assert event["status"] == "timeout"
    # It gives up at the deadline, at most one request's timeout late.
    assert deadline_in - 0.1 <= elapsed <= deadline_in + TIMEOUT + SCHEDULING_SLACK, elapsed


def _error_within(seconds: float, call: Any) -> BaseException:
    """Run ``call`` in a daemon thread; the exception it raised, failing if it hung or returned.

    A thread, not ``pytest-timeout``: a hung call must fail this test, not the whole session.
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as err:  # whatever it is, the test asserts on it
            outcome.append(err)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"the call was still running after {seconds:.1f} s"
    error = outcome[0]
    assert error is not None, "the call returned, though the gateway never finished its answer"
    return error


def test_a_gateway_that_trickles_its_body_cannot_hang_the_hook(
    api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _Dripping()
    try:
        _connect(monkeypatch, f"http://127.0.0.1:{server.port}", api_key)
        hook = _hook()
        started = time.monotonic()
        error = _error_within(_call_bound() + 3, lambda: hook.get_fine_tuning_job("ftjob-drip"))
        elapsed = time.monotonic() - started
    finally:
        server.close()
    # The body's own deadline ended each attempt, not a crash or a refused connection.
    assert type(error) is TrueFoundryConnectionError, repr(error)
    assert "did not answer in time" in str(error)
    assert "the body did not arrive in time" in str(error)
    assert f"GET http://127.0.0.1:{server.port}/fine_tuning/jobs/ftjob-drip" in str(error)
    assert api_key not in str(error)
    # Every attempt got its answer's head and then waited out the whole-exchange deadline.
    assert server.accepted == ATTEMPTS
    assert elapsed >= ATTEMPTS * TIMEOUT * 0.9, elapsed


def test_a_gateway_that_trickles_its_body_cannot_hang_the_trigger(
    api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _Dripping()
    try:
        _connect(monkeypatch, f"http://127.0.0.1:{server.port}", api_key)
        trigger = _trigger("ftjob-drip", deadline_in=1.0)

        async def bounded() -> dict[str, Any]:
            return await asyncio.wait_for(_first(trigger), timeout=1.0 + TIMEOUT + 3)

        assert asyncio.run(bounded())["status"] == "timeout"
    finally:
        server.close()


async def _first(trigger: TrueFoundryFineTuningJobTrigger) -> dict[str, Any]:
    events = trigger.run()
    try:
        return (await events.__anext__()).payload
    finally:
        await events.aclose()


# --------------------------------------------------------------------------------------------
# Bodies over 4 MiB are refused: a runaway answer cannot fill a worker's or the triggerer's memory
# --------------------------------------------------------------------------------------------

CAP = protocol.MAX_BODY_BYTES
TOO_LARGE = f"the body is larger than {CAP} bytes"


def _padded_job(job_id: str, size: int) -> bytes:
    """A valid job answer of exactly ``size`` bytes: JSON after leading whitespace.

    The padding comes first, so a client that reads only part of the body cannot parse it.
    """
    job = json.dumps(ScriptedJob(job_id, statuses=("succeeded",)).poll()).encode()
    return b" " * (size - len(job)) + job


@pytest.mark.parametrize("path", ["hook", "trigger"])
def test_a_body_of_exactly_the_cap_is_read_whole(
    path: str, gateway: GatewaySimulator, gateway_conn: str
) -> None:
    gateway.add_job(
        "ftjob-cap", statuses=("succeeded",), faults=[Fault.malformed(_padded_job("ftjob-cap", CAP))]
    )
    if path == "hook":
        assert _hook(max_retries=0).get_fine_tuning_job("ftjob-cap").status == "succeeded"
    else:
        assert first_event(_trigger("ftjob-cap"))["status"] == "succeeded"
    # One request: the padded body was read to its end and parsed the first time.
    assert gateway.request_count("ftjob-cap") == 1


def test_a_body_over_the_cap_is_refused_by_the_hook(gateway: GatewaySimulator, gateway_conn: str) -> None:
    for _ in range(ATTEMPTS):
        gateway.add_fault("ftjob-huge", Fault.malformed(_padded_job("ftjob-huge", CAP + 1)))
    gateway.add_job("ftjob-huge", statuses=("succeeded",))
    with pytest.raises(TrueFoundryConnectionError) as caught:
        _hook().get_fine_tuning_job("ftjob-huge")
    assert type(caught.value) is TrueFoundryConnectionError
    message = str(caught.value)
    assert TOO_LARGE in message
    assert f"GET {gateway.url}/fine_tuning/jobs/ftjob-huge" in message
    assert len(message) < 400, message
    # A transient failure, as a proxy gone wrong would be: every attempt was made, none more.
    assert caught.value.retryable
    assert gateway.request_count("ftjob-huge") == ATTEMPTS


def _refusals(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The trigger's log lines that report an oversized body.

    Depending on how Airflow set up logging in this process, the trigger's logger goes through
    the standard library (caplog) or structlog's console renderer (stdout): one or the other.
    """
    printed = capsys.readouterr().out.splitlines()
    logged = [record.getMessage() for record in caplog.records]
    return [
        line
        for line in (logged if any(TOO_LARGE in line for line in logged) else printed)
        if TOO_LARGE in line
    ]


def test_a_body_over_the_cap_is_refused_by_the_trigger(
    gateway: GatewaySimulator,
    gateway_conn: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_tfy")
    for _ in range(ATTEMPTS):
        gateway.add_fault("ftjob-huge", Fault.malformed(_padded_job("ftjob-huge", CAP + 1)))
    gateway.add_job("ftjob-huge", statuses=("succeeded",))
    event = first_event(_trigger("ftjob-huge"))
    # It waited through the oversized answers, each refused and logged, and then saw the job.
    assert event["status"] == "succeeded"
    refused = _refusals(caplog, capsys)
    assert len(refused) == ATTEMPTS, refused
    assert all(f"GET {gateway.url}/fine_tuning/jobs/ftjob-huge" in line for line in refused)
    assert gateway.request_count("ftjob-huge") == ATTEMPTS + 1


class _Endless(_Silent):
    """Answers a 200 that announces a 1 GiB body and sends it as fast as the client reads."""

    ANNOUNCED = 1 << 30
    BLOCK = b" " * (64 * 1024)  # made once: sending it allocates nothing the test measures

    sent = 0

    def _serve(self) -> None:
        self.listener.settimeout(0.05)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                connection, _ = self.listener.accept()
                self.accepted += 1
                self.connections.append(connection)
                threading.Thread(target=self._flood, args=(connection,), daemon=True).start()

    def _flood(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            connection.recv(65536)
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % self.ANNOUNCED
            )
            while not self._stop.is_set() and self.sent < self.ANNOUNCED:
                connection.sendall(self.BLOCK)
                self.sent += len(self.BLOCK)


@pytest.fixture
def endless() -> Iterator[_Endless]:
    server = _Endless()
    yield server
    server.close()


# What a client may hold while refusing an endless body: the cap and a read's worth beyond it
# (4.2-4.6 MiB measured), with room to spare; one that buffered the whole answer would hold 1 GiB.
MEMORY_BOUND = 2 * CAP


@pytest.mark.parametrize("path", ["hook", "trigger"])
def test_an_endless_body_is_cut_at_the_cap_without_filling_memory(
    path: str,
    endless: _Endless,
    api_key: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _connect(monkeypatch, f"http://127.0.0.1:{endless.port}", api_key)
    caplog.set_level(logging.WARNING, logger="airflow_provider_tfy")
    hook = _hook(max_retries=0, timeout=10.0)
    trigger = TrueFoundryFineTuningJobTrigger(
        job_id="ftjob-endless",
        truefoundry_conn_id=CONN_ID,
        poll_interval=10.0,
        deadline=time.time() + 20,
        hook_params={**HOOK_PARAMS, "max_retries": 0, "timeout": 10.0},
    )
    if path == "hook":
        hook.config  # read the connection before measuring
    tracemalloc.start()
    try:
        if path == "hook":
            with pytest.raises(TrueFoundryConnectionError, match=TOO_LARGE) as caught:
                hook.get_fine_tuning_job("ftjob-endless")
            message = str(caught.value)
        else:
            # No retries and a 10 s poll interval: the first refusal is logged, and the deadline
            # is far off; stop the wait as soon as the log says the body was refused.
            message = asyncio.run(_refusal_logged(trigger, caplog, capsys))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert TOO_LARGE in message
    assert "/fine_tuning/jobs/ftjob-endless" in message
    assert endless.accepted == 1
    assert peak < MEMORY_BOUND, f"{peak / 2**20:.1f} MiB held while refusing an endless body"
    # The client stopped reading at the cap: only what the sockets' buffers held went further.
    assert CAP <= endless.sent < CAP + 32 * 2**20, endless.sent


async def _refusal_logged(
    trigger: TrueFoundryFineTuningJobTrigger,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> str:
    task = asyncio.ensure_future(_first(trigger))
    try:
        async with asyncio.timeout(15):
            while not (refused := _refusals(caplog, capsys)):
                assert not task.done(), task.result()
                await asyncio.sleep(0.01)
            return refused[0]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_netrc_credentials_never_replace_the_bearer_key(
    gateway: GatewaySimulator, gateway_conn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1\nlogin intruder\npassword from-netrc\n", encoding="utf-8")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    gateway.add_job("ftjob-netrc", statuses=("succeeded",))
    assert _hook().get_fine_tuning_job("ftjob-netrc").status == "succeeded"
    assert first_event(_trigger("ftjob-netrc"))["status"] == "succeeded"
    assert [record.has_valid_auth for record in gateway.requests] == [True, True]
