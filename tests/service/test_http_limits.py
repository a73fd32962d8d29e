"""The HTTP ports bound every connection (decision 1331), checked with real sockets: idle and
slow ("slowloris") connections are closed, a slow body is answered 408, connections past the
cap are answered 503 at once while gRPC keeps serving, and only allowed `Host` names are
answered (decision 1332)."""

from __future__ import annotations

import logging
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.sidecar import Stubs, copy_catalog, in_process

WAIT = 20.0  # generous: the assertions are "closed eventually", never "closed quickly"

BODY = b'{"context": {"targetingKey": "acct_acme"}}'


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("http-limits")
    with in_process(
        copy_catalog(tmp),
        tmp / "s.db",
        http_idle_seconds=0.5,
        http_body_seconds=0.5,
        http_max_connections=8,
        allowed_hosts="plangate.internal, Sidecar.Example",
    ) as running:
        yield running


def _connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    conn.settimeout(WAIT)
    return conn


def _closed_by_server(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails after `WAIT`)."""
    received = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept the connection open for {WAIT} s")


def _request(port: int, host: str = "", path: str = "/ofrep/v1/evaluate/flags/sso") -> bytes:
    with _connect(port) as conn:
        head = f"POST {path} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host else "")
        conn.sendall(
            head.encode()
            + b"Content-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
            + BODY
        )
        return _closed_by_server(conn)


@pytest.mark.parametrize("port", ["ofrep_port", "management_port"])
def test_a_connection_that_sends_nothing_is_closed(sidecar: Any, port: str) -> None:
    with _connect(getattr(sidecar, port)) as conn:
        assert _closed_by_server(conn) == b""


def test_a_grpc_connection_that_never_says_hello_is_closed(sidecar: Any) -> None:
    """No HTTP/2 preface within the idle time: gRPC says GOAWAY and closes the socket."""
    with _connect(sidecar.port) as conn:
        said = _closed_by_server(conn)
    assert b"handshake timeout" in said


def test_a_slow_request_head_is_closed(sidecar: Any) -> None:
    """Slowloris: a byte of the head now and then never completes it; the connection ends."""
    with _connect(sidecar.ofrep_port) as conn:
        head = b"POST /ofrep/v1/evaluate/flags/sso HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
        conn.sendall(head)
        deadline = time.monotonic() + WAIT
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                conn.sendall(b"a")
                conn.settimeout(0.2)
                closed = conn.recv(65536) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        assert closed, "a head sent a byte at a time kept its connection"


def test_a_keep_alive_connection_is_closed_once_idle(sidecar: Any) -> None:
    with _connect(sidecar.ofrep_port) as conn:
        conn.sendall(
            b"POST /ofrep/v1/evaluate/flags/sso HTTP/1.1\r\nHost: localhost\r\n"
            + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
            + BODY
        )
        answered = _closed_by_server(conn)
    assert answered.startswith(b"HTTP/1.1 200"), answered[:100]


def test_a_slow_body_is_answered_408(sidecar: Any) -> None:
    with _connect(sidecar.ofrep_port) as conn:
        conn.sendall(
            b"POST /ofrep/v1/evaluate/flags/sso HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        answered = _closed_by_server(conn)
    assert answered.startswith(b"HTTP/1.1 408"), answered[:100]


def test_connections_past_the_cap_get_503_and_grpc_keeps_serving(sidecar: Any) -> None:
    port = sidecar.ofrep_port
    held: list[socket.socket] = []
    try:
        busy = b""
        for _ in range(40):  # the cap is 8; idle ones close after 0.5 s, so open quickly
            conn = _connect(port)
            held.append(conn)
            conn.settimeout(0.05)
            try:
                busy = conn.recv(65536)
            except TimeoutError:
                continue
            if busy:
                break
        assert busy.startswith(b"HTTP/1.1 503"), busy[:100]
        assert b"too many open connections" in busy
        with Stubs(f"127.0.0.1:{sidecar.port}") as stubs:
            res = stubs.evaluation.Evaluate(
                pb.EvaluateRequest(account_id="acct_acme", feature="sso"), timeout=WAIT
            )
        assert res.as_boolean is True
    finally:
        for conn in held:
            conn.close()
    # once the held connections are gone, the port answers again
    deadline = time.monotonic() + WAIT
    while not (answer := _request(port, "localhost")).startswith(b"HTTP/1.1 200"):
        assert time.monotonic() < deadline, answer[:100]
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example", b"421"),
        ("evil.example:8016", b"421"),
        ("127.0.0.1.evil.example", b"421"),
        ("localhost", b"200"),
        ("localhost:8016", b"200"),
        ("app.localhost", b"200"),
        ("127.0.0.1", b"200"),
        ("[::1]:8016", b"200"),
        ("10.1.2.3:8016", b"200"),  # a pod IP: kubelet probes and Prometheus send these
        ("plangate.internal", b"200"),
        ("sidecar.example:8016", b"200"),
    ],
)
def test_only_allowed_host_names_are_answered(sidecar: Any, host: str, status: bytes) -> None:
    answer = _request(sidecar.ofrep_port, host)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]


@pytest.mark.parametrize("path", ["/readyz", "/metrics", "/console/"])
def test_the_management_port_refuses_foreign_hosts(sidecar: Any, path: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{sidecar.management_port}{path}", headers={"Host": "rebind.example"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=WAIT)
    assert info.value.code == 421
    assert b"allowed-hosts" in info.value.read()


def test_healthz_answers_any_host(sidecar: Any) -> None:
    """It says only "ok"; a liveness probe may name the pod any way."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{sidecar.management_port}/healthz", headers={"Host": "x"}
    )
    with urllib.request.urlopen(request, timeout=WAIT) as resp:
        assert resp.status == 200


def test_a_malformed_request_is_logged_in_one_line(
    sidecar: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="plangate.http"):
        with _connect(sidecar.ofrep_port) as conn:
            conn.sendall(b"POST /ofrep HTTP/1.1\r\nContent-Length: 3\r\n\r\n{}}")
            answered = _closed_by_server(conn)
        assert answered.startswith(b"HTTP/1.") and answered[8:13] == b" 400 ", answered[:100]
    logged = [r for r in caplog.records if r.name.startswith(("plangate.http", "aiohttp"))]
    assert logged, "the malformed request was not logged at all"
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in logged), [
        r.getMessage() for r in logged
    ]
