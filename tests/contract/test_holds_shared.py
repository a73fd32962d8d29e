"""Holds stay exact across two sidecars in shared mode (design §17): 32 concurrent reservers,
half on each sidecar, on one PostgreSQL never hold more than the ceiling, and a hold made on
one sidecar counts for the other's admissions at once."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.sidecar import Stubs, in_process, wait_for

CATALOG = """\
products:
  - name: Acme
    features:
      - {name: Tokens, type: metered, reset: monthly, anchor: calendar}
    plans:
      - name: Basic
        entitlements: {tokens: 100}
"""


def test_32_reservers_on_two_sidecars_never_hold_more_than_the_ceiling(
    postgres_cluster: Any, tmp_path: Path
) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    env = f"holds-{uuid.uuid4().hex[:8]}"
    url = postgres_cluster.url()
    with (
        in_process(tmp_path / "catalog.yaml", url, environment=env) as a,
        in_process(tmp_path / "catalog.yaml", url, environment=env) as b,
        Stubs(f"127.0.0.1:{a.port}") as sa,
    ):
        wait_for(lambda: a.feed.connected and b.feed.connected, timeout=10)
        sa.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_shared"), timeout=5)
        sa.admin.CreateSubscription(
            pb.CreateSubscriptionRequest(account_id="acct_shared", plan="basic"), timeout=5
        )
        wait_for(lambda: "acct_shared" in b.state.snapshot.accounts, timeout=10)
        holds: list[str] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            sidecar = (a, b)[n % 2]
            try:
                with Stubs(f"127.0.0.1:{sidecar.port}") as s:
                    reply = s.usage.Reserve(
                        pb.ReserveRequest(account_id="acct_shared", feature="tokens", amount=7),
                        timeout=30,
                    )
                if reply.granted:
                    with lock:
                        holds.append(reply.hold_id)
                else:
                    assert reply.denial == "usage_limit_reached", reply.denial
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert len(holds) == 100 // 7  # 14 x 7 = 98 <= 100, never a 15th
        stored = [h for h in a.store.load_holds() if h.account == "acct_shared"]
        assert sorted(h.id for h in stored) == sorted(holds)
        with Stubs(f"127.0.0.1:{b.port}") as sb:  # the other sidecar's admission sees them all
            reply = sb.usage.Consume(
                pb.ConsumeRequest(account_id="acct_shared", feature="tokens", amount=3),
                timeout=10,
            )
            assert not reply.granted
            settled = sb.usage.Settle(pb.SettleRequest(hold_id=holds[0], amount=7), timeout=10)
            assert settled.usage == 7 and settled.hold.state == "settled"
