"""Start-up refuses what it cannot serve as asked, saying why (issue 11.8): mTLS without a
server certificate, unusable certificate files, a `--socket` path that is not a socket."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.certs import TestPKI, make_pki
from support.sidecar import copy_catalog

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def serve(tmp_path: Path, *flags: str | Path) -> subprocess.CompletedProcess[str]:
    """`plangate serve` with `flags`, which must refuse to start (it is killed otherwise)."""
    cmd = [
        sys.executable, "-m", "plangate.sidecar.cli.main", "serve",
        "--catalog", str(copy_catalog(tmp_path)), "--db", str(tmp_path / "s.db"),
        "--port", "0", "--management-port", "0", "--ofrep-port", "0",
        *(str(f) for f in flags),
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert "Traceback" not in run.stderr, run.stderr
    return run


def test_client_ca_without_a_server_certificate_is_refused(tmp_path: Path, pki: TestPKI) -> None:
    run = serve(tmp_path, "--tls-client-ca", pki.ca)
    assert run.returncode == 1
    assert "--tls-client-ca" in run.stderr and "--tls-cert" in run.stderr
    assert "ready" not in run.stdout  # never served plaintext


@pytest.mark.parametrize("broken", ["garbage", "mismatched", "missing"])
def test_unusable_certificate_files_say_what_is_wrong(
    tmp_path: Path, pki: TestPKI, broken: str
) -> None:
    cert, key = pki.server_cert, pki.server_key
    if broken == "garbage":
        cert = tmp_path / "cert.pem"
        cert.write_text(
            "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
        )
    elif broken == "mismatched":
        key = pki.client_key  # a real key, of another certificate
    else:
        cert = tmp_path / "nowhere.pem"
    run = serve(tmp_path, "--tls-cert", cert, "--tls-key", key)
    assert run.returncode == 1
    assert "port in use" not in run.stderr
    assert "TLS" in run.stderr and str(cert if broken != "mismatched" else key) in run.stderr


def test_a_regular_file_given_as_socket_is_refused_and_left_untouched(tmp_path: Path) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("do not delete me\n")
    run = serve(tmp_path, "--socket", precious)
    assert run.returncode == 1
    assert str(precious) in run.stderr and "not a socket" in run.stderr
    assert precious.read_text() == "do not delete me\n"
