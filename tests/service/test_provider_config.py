"""Provider configuration (design §8): arguments, then `PLANGATE_*` variables, then defaults;
and the transports they select — Unix socket, bearer token, TLS and mutual TLS — each against
a real sidecar configured the same way.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.track import TrackingEventDetails
from plangate.provider import PlanGateProvider, ProviderConfig
from support.certs import TestPKI, make_pki
from support.provider import native_used, provider
from support.sidecar import Stubs, copy_catalog, in_process, wait_for

TOKEN = "provider-test-token"


def test_defaults() -> None:
    config = ProviderConfig.resolve(env={})
    assert config.target == "localhost:8013"
    assert (config.token, config.tls_ca, config.tls_cert, config.tls_key) == (None,) * 4
    assert config.deadline == 0.5 and config.cache is True and config.grace_period == 5.0
    assert not config.secure


def test_environment_fills_in_what_arguments_leave_out() -> None:
    env = {
        "PLANGATE_TARGET": "unix:///run/plangate.sock",
        "PLANGATE_TOKEN": "from-env",
        "PLANGATE_TLS_CA": "/etc/ca.pem",
        "PLANGATE_TLS_CERT": "/etc/client.pem",
        "PLANGATE_TLS_KEY": "/etc/client.key",
        "PLANGATE_DEADLINE_MS": "250",
        "PLANGATE_CACHE": "off",
        "PLANGATE_CACHE_SIZE": "42",
        "PLANGATE_GRACE_PERIOD_MS": "1500",
    }
    config = PlanGateProvider(env=env).config
    assert config.target == "unix:///run/plangate.sock"
    assert config.token == "from-env"
    assert (config.tls_ca, config.tls_cert, config.tls_key) == (
        "/etc/ca.pem",
        "/etc/client.pem",
        "/etc/client.key",
    )
    assert (config.deadline, config.cache, config.cache_size, config.grace_period) == (
        0.25,
        False,
        42,
        1.5,
    )
    assert config.secure

    explicit = PlanGateProvider(
        "127.0.0.1:9000", token="arg", deadline_ms=1000, cache=True, grace_period_ms=100, env=env
    ).config
    assert (explicit.target, explicit.token, explicit.deadline, explicit.cache) == (
        "127.0.0.1:9000",
        "arg",
        1.0,
        True,
    )
    assert explicit.grace_period == 0.1
    assert explicit.tls_ca == "/etc/ca.pem"  # not given as an argument: still from env


def test_the_process_environment_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANGATE_TARGET", "sidecar.local:1234")
    monkeypatch.setenv("PLANGATE_CACHE", "no")
    config = PlanGateProvider().config
    assert (config.target, config.cache) == ("sidecar.local:1234", False)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PLANGATE_DEADLINE_MS": "soon"}, "PLANGATE_DEADLINE_MS"),
        ({"PLANGATE_CACHE": "maybe"}, "PLANGATE_CACHE"),
        ({"PLANGATE_DEADLINE_MS": "0"}, "deadline must be positive"),
        ({"PLANGATE_TLS_CERT": "/c.pem"}, "tls_cert and tls_key go together"),
    ],
)
def test_bad_settings_are_refused_with_a_useful_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PlanGateProvider(env=env)


def test_the_provider_does_not_import_the_sidecar() -> None:
    """Apps install only the provider: importing it must not pull in the daemon."""
    code = (
        "import sys, plangate.provider; "
        "loaded = [m for m in sys.modules if m.startswith('plangate.sidecar')]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_unknown_options_are_refused() -> None:
    with pytest.raises(TypeError, match="deadlien"):
        PlanGateProvider(deadlien=5)


def test_unix_socket_target(tmp_path: Path) -> None:
    sock = tmp_path / "pg.sock"
    with (
        in_process(copy_catalog(tmp_path), tmp_path / "state.db", socket=str(sock)) as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as stubs,
        provider(None, env={"PLANGATE_TARGET": f"unix://{sock}"}) as p,
    ):
        assert p.config.target == f"unix://{sock}"
        client = api.get_client()
        acme = EvaluationContext("acct_acme")
        assert client.get_boolean_value("sso", False, acme) is True
        client.track("exports", acme, TrackingEventDetails(value=3))
        wait_for(lambda: p.pending_reports == 0, timeout=5)
        assert native_used(stubs, "acct_acme", "exports") == 3


def test_bearer_token_is_sent_on_usage_calls(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with (
        in_process(copy_catalog(tmp_path), tmp_path / "state.db", token_file=str(token_file)) as sc,
        Stubs(f"127.0.0.1:{sc.port}") as stubs,
    ):
        target = f"127.0.0.1:{sc.port}"
        acme = EvaluationContext("acct_acme")
        with provider(target, env={"PLANGATE_TOKEN": TOKEN}) as p:
            api.get_client().track("exports", acme, TrackingEventDetails(value=2))
            wait_for(lambda: p.pending_reports == 0, timeout=5)
        assert native_used(stubs, "acct_acme", "exports") == 2

        # A wrong token: evaluation (open on loopback) works, usage is refused and retried
        # until shutdown gives up — never counted.
        with provider(target, token="wrong", shutdown_timeout=0.3) as p:
            client = api.get_client()
            assert client.get_boolean_value("sso", False, acme) is True
            client.track("exports", acme, TrackingEventDetails(value=5))
            api.shutdown()
            assert p.pending_reports == 1
        assert native_used(stubs, "acct_acme", "exports") == 2


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_sidecar(pki: TestPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("mtls")
    with in_process(
        copy_catalog(d),
        d / "state.db",
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca),
    ) as sidecar:
        yield sidecar


def test_mutual_tls_from_environment(pki: TestPKI, mtls_sidecar: Any) -> None:
    env = {
        "PLANGATE_TARGET": f"localhost:{mtls_sidecar.port}",
        "PLANGATE_TLS_CA": str(pki.ca),
        "PLANGATE_TLS_CERT": str(pki.client_cert),
        "PLANGATE_TLS_KEY": str(pki.client_key),
    }
    with provider(None, env=env):
        client = api.get_client()
        assert client.get_boolean_value("sso", False, EvaluationContext("acct_acme")) is True


def test_mutual_tls_refuses_a_provider_without_a_client_certificate(
    pki: TestPKI, mtls_sidecar: Any
) -> None:
    p = PlanGateProvider(f"localhost:{mtls_sidecar.port}", tls_ca=str(pki.ca), init_timeout_ms=1000)
    try:
        with pytest.raises(Exception, match="no PlanGate sidecar answered"):
            api.set_provider_and_wait(p)
        client = api.get_client()
        details = client.get_boolean_details("sso", True, EvaluationContext("acct_acme"))
        assert details.value is True and details.error_code is not None
    finally:
        api.clear_providers()
