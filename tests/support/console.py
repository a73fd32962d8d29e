"""A sidecar with something to look at in its console, for the console's service and browser
tests: stored accounts (one with a name that is markup), usage, a top-up, a trial with a
scheduled plan change, and a failed webhook delivery — all made through the real gRPC API."""

from __future__ import annotations

import http.client
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from google.protobuf.struct_pb2 import Struct
from plangate.protocol.plangate.v1 import plangate_pb2 as pb

from support.sidecar import Stubs

TOKEN_NAME = "ops-alice"
TOKEN = "console-test-token-4f1c"
HOSTILE = "<script>alert('x')</script> & \"Co\""
"""A stored account's name: markup that must reach the page as text."""

STAMP = re.compile(r'name="csrf" value="([^"]+)"')


def write_token_file(directory: Path) -> Path:
    path = directory / "tokens"
    path.write_text(f"# the console tests' one token\n{TOKEN_NAME}:{TOKEN}\n")
    return path


def seed(stubs: Stubs, metadata: tuple[tuple[str, str], ...] = ()) -> None:
    """Accounts, usage, a top-up and a quota delivery whose webhook cannot be reached."""
    admin, usage = stubs.admin, stubs.usage
    attributes = Struct()
    attributes.update({"region": "eu", "crm": "crm-9931"})
    admin.UpsertAccount(
        pb.UpsertAccountRequest(id="acct_hostile", name=HOSTILE, attributes=attributes),
        metadata=metadata,
    )
    admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id="acct_hostile", plan="pro"), metadata=metadata
    )
    admin.UpsertAccount(
        pb.UpsertAccountRequest(id="acct_trial", name="Trial Co"), metadata=metadata
    )
    now = datetime.now(UTC)
    trial_end = pb.CreateSubscriptionRequest(account_id="acct_trial", plan="pro")
    trial_end.trial_ends_at.FromDatetime(now + timedelta(days=10))
    trial_end.trial_then = "free"
    admin.CreateSubscription(trial_end, metadata=metadata)
    reports = [
        pb.UsageReport(account_id="acct_acme", feature="api-calls", amount=1234),
        pb.UsageReport(account_id="acct_acme", feature="exports", amount=3),
        # 80% of Pro's 100,000 crosses the quota: a webhook to a port nobody listens on
        pb.UsageReport(account_id="acct_hostile", feature="api-calls", amount=85_000),
        pb.UsageReport(account_id="acct_initech", feature="ai-credits", amount=150),
    ]
    usage.Report(pb.ReportRequest(reports=reports), metadata=metadata)


def wait_for_failed_delivery(stubs: Stubs, metadata: tuple[tuple[str, str], ...] = ()) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = stubs.admin.ListDeliveries(
            pb.ListDeliveriesRequest(status="failed"), metadata=metadata
        )
        if found.deliveries:
            return
        time.sleep(0.05)
    raise AssertionError("the quota delivery did not fail within 20 s")


class Http:
    """A tiny cookie-keeping HTTP client for the console (what a browser does, minus rendering)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        text = response.read().decode()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                cookie, _, _ = value.partition(";")
                key, _, val = cookie.partition("=")
                if val.strip('"'):
                    self.cookies[key] = val.strip('"')
                else:
                    self.cookies.pop(key, None)
        out = {k.lower(): v for k, v in response.getheaders()}
        conn.close()
        return response.status, out, text

    def get(self, path: str) -> tuple[int, str]:
        status, _, text = self.request("GET", path)
        return status, text

    def post(self, path: str, form: dict[str, str], origin: str | None = "") -> tuple[int, str]:
        """A form POST with this console's Origin (`origin=None`: no Origin header at all)."""
        headers = {} if origin is None else {"Origin": origin or self.origin}
        status, got, text = self.request("POST", path, form, headers)
        if status == 303:
            return status, urlsplit(got["location"]).path
        return status, text

    def sign_in(self) -> None:
        status, where = self.post("/console/login", {"token": TOKEN, "next": "/console/"})
        assert status == 303 and where == "/console/", (status, where)

    def csrf(self, path: str) -> str:
        status, text = self.get(path)
        assert status == 200, text
        found = STAMP.search(text)
        assert found, "no CSRF field on " + path
        return found.group(1)


def bearer() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKEN}"),)
