"""Who may talk to a sidecar: bearer token, TLS, mutual TLS and the Unix socket (design §2, §6)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.certs import TestPKI, make_pki
from support.sidecar import Stubs, copy_catalog, in_process

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    code: grpc.StatusCode = info.value.code()
    return code


def _evaluates(stubs: Stubs) -> None:
    res = stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id="acct_acme", feature="sso"), timeout=5
    )
    assert res.as_boolean is True and res.reason == "TARGETING_MATCH"


# -- bearer token ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("token")
    token_file = d / "token"
    token_file.write_text(TOKEN + "\n")  # a trailing newline, as editors write it
    with in_process(copy_catalog(d), d / "state.db", token_file=str(token_file)) as sidecar:
        yield sidecar


def test_token_protects_admin_and_usage_but_not_evaluation(token_sidecar: Any) -> None:
    with Stubs(f"127.0.0.1:{token_sidecar.port}") as s:
        upsert = pb.UpsertAccountRequest(id="acct_token", name="T")
        report = pb.ReportRequest(
            reports=[pb.UsageReport(account_id="acct_acme", feature="exports")]
        )
        consume = pb.ConsumeRequest(account_id="acct_acme", feature="exports")
        calls: dict[str, Callable[[list[tuple[str, str]]], Any]] = {
            "upsert": lambda md: s.admin.UpsertAccount(upsert, metadata=md, timeout=5),
            "list": lambda md: s.admin.ListAccounts(
                pb.ListAccountsRequest(), metadata=md, timeout=5
            ),
            "report": lambda md: s.usage.Report(report, metadata=md, timeout=5),
            "consume": lambda md: s.usage.Consume(consume, metadata=md, timeout=5),
        }
        bad: list[list[tuple[str, str]]] = [
            [],
            _bearer("wrong"),
            _bearer(TOKEN + "x"),
            [("authorization", TOKEN)],  # no "Bearer " scheme
        ]
        for name, call in calls.items():
            for metadata in bad:
                with pytest.raises(grpc.RpcError) as info:
                    call(metadata)
                assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED, (name, metadata)
                assert "token" in (info.value.details() or "")
        # nothing refused above reached the state
        assert "acct_token" not in token_sidecar.state.snapshot.accounts
        assert not token_sidecar.state.counters.values

        # evaluation stays open: no token needed (flagd/OFREP providers cannot send one)
        _evaluates(s)
        all_ = s.evaluation.EvaluateAll(pb.EvaluateAllRequest(account_id="acct_acme"), timeout=5)
        assert "sso" in all_.resolutions

        # with the right token every protected call goes through
        good = _bearer(TOKEN)
        assert calls["upsert"](good).id == "acct_token"
        assert any(a.id == "acct_token" for a in calls["list"](good).accounts)
        assert calls["report"](good).results[0].status == pb.ReportResult.STATUS_APPLIED
        assert calls["consume"](good).granted


def test_token_file_must_not_be_empty(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    with (
        pytest.raises(ValueError, match="empty"),
        in_process(copy_catalog(tmp_path), tmp_path / "s.db", token_file=str(token_file)),
    ):
        pass


# -- TLS and mutual TLS ----------------------------------------------------------------------


def test_tls_serves_encrypted_only(tmp_path: Path, pki: TestPKI) -> None:
    tls = {"tls_cert": str(pki.server_cert), "tls_key": str(pki.server_key)}
    with in_process(copy_catalog(tmp_path), tmp_path / "s.db", **tls) as sidecar:
        creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        for host in ("localhost", "127.0.0.1"):  # the certificate names both
            with Stubs(f"{host}:{sidecar.port}", creds) as s:
                _evaluates(s)
        # a plaintext client gets nowhere
        with Stubs(f"127.0.0.1:{sidecar.port}") as plain:
            assert _code(lambda: _evaluates(plain)) is grpc.StatusCode.UNAVAILABLE
        # a client that does not trust the server's CA refuses the connection
        untrusting = grpc.ssl_channel_credentials(root_certificates=pki.other_ca.read_bytes())
        with Stubs(f"localhost:{sidecar.port}", untrusting) as s:
            assert _code(lambda: _evaluates(s)) is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_ca(tmp_path: Path, pki: TestPKI) -> None:
    tls = {
        "tls_cert": str(pki.server_cert),
        "tls_key": str(pki.server_key),
        "tls_client_ca": str(pki.ca),
    }
    ca = pki.ca.read_bytes()
    with in_process(copy_catalog(tmp_path), tmp_path / "s.db", **tls) as sidecar:
        target = f"localhost:{sidecar.port}"
        no_cert = grpc.ssl_channel_credentials(root_certificates=ca)
        with Stubs(target, no_cert) as s:
            assert _code(lambda: _evaluates(s)) is grpc.StatusCode.UNAVAILABLE
        foreign = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=pki.other_client_key.read_bytes(),
            certificate_chain=pki.other_client_cert.read_bytes(),
        )
        with Stubs(target, foreign) as s:
            assert _code(lambda: _evaluates(s)) is grpc.StatusCode.UNAVAILABLE
        good = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=pki.client_key.read_bytes(),
            certificate_chain=pki.client_cert.read_bytes(),
        )
        with Stubs(target, good) as s:
            _evaluates(s)
            acct = s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_mtls"), timeout=5)
            assert acct.id == "acct_mtls"


# -- Unix domain socket ----------------------------------------------------------------------


def test_unix_socket_serves_grpc_alongside_tcp(tmp_path: Path) -> None:
    # socket paths are limited to ~100 bytes: keep it short rather than under tmp_path
    with tempfile.TemporaryDirectory(prefix="pg", dir="/tmp") as short:
        sock = Path(short) / "pg.sock"
        with in_process(copy_catalog(tmp_path), tmp_path / "s.db", socket=str(sock)) as sidecar:
            assert sock.is_socket()
            with Stubs(f"unix://{sock}") as s:
                _evaluates(s)
                s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_sock"), timeout=5)
            with Stubs(f"127.0.0.1:{sidecar.port}") as tcp:  # same state on both
                got = tcp.admin.GetAccount(pb.GetAccountRequest(id="acct_sock"), timeout=5)
                assert got.id == "acct_sock"
