"""`plangate stripe import` through a running sidecar (design §18): Stripe's list JSON, as
`stripe customers list` / `stripe subscriptions list` print it, applied over `Admin.ImportStripe`
by the real command line; state read back over the native API, webhooks signed as Stripe signs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.sidecar import Stubs, in_process
from support.stripe_events import post_signed, signature

SECRET = "whsec_import_7a1e"
SECRET_ENV = "PLANGATE_TEST_STRIPE_IMPORT_SECRET"
START = 1_780_000_000
CLI = [sys.executable, "-m", "plangate.sidecar.cli.main"]

CATALOG = f"""
products:
  - name: Acme
    features:
      - name: SSO
        type: boolean
      - name: Seats
        type: metered
        aggregation: gauge
        reset: never
    plans:
      - name: Free
        entitlements: {{seats: 1}}
      - name: Pro
        entitlements: {{sso: true, seats: 5}}
    addons:
      - name: Extra seats
        requires: [pro]
        max_quantity: 10
        entitlements: {{seats: 5}}
connections:
  stripe:
    webhook_secret_env: {SECRET_ENV}
    account_id: metadata.plangate_account
    attributes: {{region: metadata.region}}
    prices:
      price_pro: {{plan: pro}}
      price_free: {{plan: free}}
      price_seats: {{addon: extra-seats}}
"""


def customer(cid: str, account: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "customer",
        "created": START,
        "metadata": {"plangate_account": account, "region": "eu"},
        **fields,
    }


def subscription(sid: str, cid: str, *prices: str, **fields: Any) -> dict[str, Any]:
    items = [
        {"id": f"si_{sid}_{i}", "price": {"id": p}, "quantity": 2 if p == "price_seats" else 1}
        for i, p in enumerate(prices)
    ]
    return {
        "id": sid,
        "object": "subscription",
        "customer": cid,
        "created": START,
        "status": "active",
        "start_date": START,
        "items": {"object": "list", "data": items},
        "cancel_at_period_end": False,
        "cancel_at": None,
        **fields,
    }


def listing(*objects: dict[str, Any]) -> str:
    return json.dumps({"object": "list", "data": list(objects), "has_more": False, "url": "/v1/x"})


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def sidecar(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """The same sidecar on each store: the import's marks and edits are the store's."""
    d = tmp_path_factory.mktemp("stripe_import")
    (d / "catalog.yaml").write_text(textwrap.dedent(CATALOG))
    db: Any = d / "state.db"
    extra: dict[str, Any] = {}
    if request.param == "postgres":
        db = request.getfixturevalue("postgres_cluster").url()
        extra["environment"] = f"stripe-import-{uuid.uuid4().hex[:8]}"
    os.environ[SECRET_ENV] = SECRET
    try:
        with in_process(d / "catalog.yaml", db, connections_port=0, **extra) as sc:
            yield sc
    finally:
        del os.environ[SECRET_ENV]


def plangate(sidecar: Any, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PLANGATE_")}
    return subprocess.run(
        [*CLI, *args, "--target", f"127.0.0.1:{sidecar.port}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean,
    )


def files(tmp_path: Path, *texts: str) -> list[str]:
    paths = []
    for n, text in enumerate(texts):
        path = tmp_path / f"list{n}.json"
        path.write_text(text)
        paths.append(str(path))
    return paths


def post_event(sidecar: Any, kind: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    body = json.dumps(
        {
            "id": f"evt_{obj['id']}_{created}",
            "type": kind,
            "created": created,
            "data": {"object": obj},
        }
    ).encode()
    status, answer = post_signed(sidecar.connections_port, body, signature(body, SECRET))
    assert status == 200, answer
    return answer


def account(stubs: Stubs, account_id: str) -> pb.Account:
    return stubs.admin.GetAccount(pb.GetAccountRequest(id=account_id), timeout=5)


def absent(stubs: Stubs, account_id: str) -> bool:
    try:
        account(stubs, account_id)
    except grpc.RpcError as exc:
        return exc.code() == grpc.StatusCode.NOT_FOUND
    return False


def outcomes(run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    reply = json.loads(run.stdout)
    return {r["object_id"]: r["outcome"] for r in reply["results"]}


def test_dry_run_changes_nothing_then_import_applies_then_repeat_changes_nothing(
    sidecar: Any, stubs: Stubs, tmp_path: Path
) -> None:
    lists = files(
        tmp_path,
        listing(
            subscription("sub_a1", "cus_a1", "price_pro", "price_seats"),
            subscription("sub_a2", "cus_a1", "price_free", status="paused"),
        ),
        listing(customer("cus_a1", "acct_a1", name="Ada Ltd")),
    )
    dry = plangate(sidecar, "stripe", "import", *lists, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would change" in dry.stdout and "plan pro + extra-seats×2" in dry.stdout
    assert absent(stubs, "acct_a1")
    assert outcomes(plangate(sidecar, "stripe", "import", *lists, "--dry-run", "--json")) == {
        "cus_a1": "applied",
        "sub_a1": "applied",
        "sub_a2": "applied",
    }
    assert absent(stubs, "acct_a1")

    first = plangate(sidecar, "stripe", "import", *lists, "--json")
    assert first.returncode == 0, first.stderr
    assert outcomes(first) == {"cus_a1": "applied", "sub_a1": "applied", "sub_a2": "applied"}
    got = account(stubs, "acct_a1")
    assert got.name == "Ada Ltd"
    assert got.attributes["region"] == "eu"
    sub, paused = got.subscriptions
    assert (sub.id, sub.plan, dict(sub.addons)) == ("sub_a1", "pro", {"extra-seats": 2})
    assert (paused.id, paused.HasField("ends_at")) == ("sub_a2", True)  # paused: access ended
    audit = stubs.admin.ListAuditLog(pb.ListAuditLogRequest(account_id="acct_a1"), timeout=5)
    assert {(e.actor, e.action, e.target) for e in audit.entries} == {
        ("stripe", "customer.imported", "cus_a1"),
        ("stripe", "customer.subscription.imported", "sub_a1"),
        ("stripe", "customer.subscription.imported", "sub_a2"),
    }

    # a later second (the paused subscription's end is the import's time): still unchanged
    second = int(time.time())
    while int(time.time()) <= second:
        time.sleep(0.05)
    again = plangate(sidecar, "stripe", "import", *lists, "--json")
    assert again.returncode == 0, again.stderr
    assert outcomes(again) == {"cus_a1": "unchanged", "sub_a1": "unchanged", "sub_a2": "unchanged"}
    after = stubs.admin.ListAuditLog(pb.ListAuditLogRequest(account_id="acct_a1"), timeout=5)
    assert len(after.entries) == len(audit.entries)


def test_import_reconciles_and_later_webhook_events_still_apply(
    sidecar: Any, stubs: Stubs, tmp_path: Path
) -> None:
    cus = customer("cus_b1", "acct_b1")
    assert post_event(sidecar, "customer.created", cus, START + 10) == {"outcome": "applied"}
    sub = subscription("sub_b1", "cus_b1", "price_free")
    assert post_event(sidecar, "customer.subscription.created", sub, START + 20) == {
        "outcome": "applied"
    }
    # the list says what Stripe holds now: the webhook missed the upgrade
    run = plangate(
        sidecar,
        "stripe",
        "import",
        *files(tmp_path, listing(subscription("sub_b1", "cus_b1", "price_pro"))),
        "--json",
    )
    assert outcomes(run) == {"sub_b1": "applied"}
    assert account(stubs, "acct_b1").subscriptions[0].plan == "pro"
    # a webhook event after the last one applied still applies (the import adds no newer time)
    later = subscription("sub_b1", "cus_b1", "price_free")
    assert post_event(sidecar, "customer.subscription.updated", later, START + 30) == {
        "outcome": "applied"
    }
    assert account(stubs, "acct_b1").subscriptions[0].plan == "free"


def test_unknown_customer_fails_the_command_and_bad_input_changes_nothing(
    sidecar: Any, stubs: Stubs, tmp_path: Path
) -> None:
    orphan = plangate(
        sidecar,
        "stripe",
        "import",
        *files(tmp_path, listing(subscription("sub_c9", "cus_nobody", "price_pro"))),
    )
    assert orphan.returncode == 1
    assert "cus_nobody was never seen" in orphan.stderr

    bad = plangate(
        sidecar,
        "stripe",
        "import",
        *files(tmp_path, listing(customer("cus_c1", "acct_c1")), '{"data": 5}'),
    )
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr and "list 2 is not a Stripe list" in bad.stderr
    assert absent(stubs, "acct_c1")

    with pytest.raises(grpc.RpcError) as empty:
        stubs.admin.ImportStripe(pb.ImportStripeRequest(dry_run=True), timeout=5)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "objects_json" in (empty.value.details() or "")
