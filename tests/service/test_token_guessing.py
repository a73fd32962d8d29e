"""Token guessing is bounded (decision 1333): a token file with a short token stops start-up
with a clear error, and after a few wrong tokens from one address no token from there is
checked for a while — a right one included, or guessing would go on at full speed — over
gRPC or at the console's sign-in."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.console import TOKEN as CONSOLE_TOKEN
from support.console import Http, write_token_file
from support.sidecar import Stubs, copy_catalog, in_process

TOKEN = "guess-test-token-7f3a9c"


@pytest.mark.parametrize("content", ["x\n", "ops:abc\n", f"ok:{TOKEN}\nshort:0123456789abcde\n"])
def test_a_short_token_stops_start_up(tmp_path: Path, content: str) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(content)
    with (
        pytest.raises(ValueError, match="tokens are at least 16"),
        in_process(copy_catalog(tmp_path), tmp_path / "s.db", token_file=str(tokens)),
    ):
        pass


def _report(stubs: Stubs, token: str) -> grpc.RpcError | None:
    try:
        stubs.usage.Report(
            pb.ReportRequest(
                reports=[pb.UsageReport(account_id="acct_acme", feature="api-calls", amount=1)]
            ),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=10,
        )
    except grpc.RpcError as exc:
        return exc
    return None


def test_wrong_tokens_from_one_address_must_wait(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"app:{TOKEN}\n")
    with (
        in_process(copy_catalog(tmp_path), tmp_path / "s.db", token_file=str(tokens)) as sc,
        Stubs(f"127.0.0.1:{sc.port}") as stubs,
    ):
        assert _report(stubs, TOKEN) is None
        answers = []
        for i in range(40):
            refused = _report(stubs, f"guess-number-{i:04d}-xxxx")
            assert refused is not None and refused.code() == grpc.StatusCode.UNAUTHENTICATED
            answers.append(refused.details() or "")
            if "too many wrong tokens" in answers[-1]:
                break
        assert "too many wrong tokens" in answers[-1], answers
        assert sum("wrong token:" in a for a in answers) >= 20  # typos are free
        # while it waits, even the right token is not checked
        refused = _report(stubs, TOKEN)
        assert refused is not None and "too many wrong tokens" in (refused.details() or "")
        deadline = time.monotonic() + 30
        while (refused := _report(stubs, TOKEN)) is not None:
            assert time.monotonic() < deadline, refused.details()
            time.sleep(0.2)


def test_console_sign_in_shares_the_backoff(tmp_path: Path) -> None:
    """Wrong tokens at the console's sign-in count for the address too; while it waits, the
    right token is not checked there either (429), nor over gRPC."""
    with (
        in_process(
            copy_catalog(tmp_path), tmp_path / "s.db", token_file=str(write_token_file(tmp_path))
        ) as sc,
        Stubs(f"127.0.0.1:{sc.port}") as stubs,
    ):
        client = Http(sc.management_port)
        statuses = []
        for i in range(40):
            status, page = client.post("/console/login", {"token": f"guess-{i:04d}-yyyyyyyy"})
            statuses.append(status)
            if status == 429:
                break
        assert statuses[-1] == 429 and "Too many wrong tokens" in page, statuses
        assert statuses.count(403) >= 20
        status, page = client.post("/console/login", {"token": CONSOLE_TOKEN})
        assert status == 429 and not client.cookies
        refused = _report(stubs, CONSOLE_TOKEN)
        assert refused is not None and "too many wrong tokens" in (refused.details() or "")
