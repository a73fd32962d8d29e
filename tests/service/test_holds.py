"""Holds (design §17) through a real sidecar over gRPC: Reserve counts usage and every active
hold, Settle records the real amount (past the ceiling too), Release and expiry free the hold,
an ended hold cannot be ended again, idempotency keys, bad input, concurrent reservers, a
restart, and `held` in the metering answer."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.sidecar import Stubs, in_process, wait_for
from support.watch import WatchLog

CATALOG = """\
products:
  - name: Acme
    features:
      - {name: Tokens, type: metered, reset: monthly, anchor: calendar}
      - {name: Credits, type: credits, reset: monthly, anchor: calendar}
      - {name: Chat, type: metered, credits: {pool: credits, per_unit: 2}}
      - {name: Seats, type: metered, aggregation: gauge}
      - {name: SSO, type: boolean}
    plans:
      - name: Basic
        entitlements: {tokens: 100, credits: 20, chat: unlimited, seats: 3, sso: true}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("holds")
    (d / "catalog.yaml").write_text(CATALOG)
    return d


@pytest.fixture(scope="module")
def stubs(folder: Path) -> Iterator[Stubs]:
    with in_process(folder / "catalog.yaml", folder / "state.db") as sc:
        yield from _stubs(sc)


def _stubs(sc: Any) -> Iterator[Stubs]:
    with Stubs(f"127.0.0.1:{sc.port}") as s:
        yield s


def account(stubs: Stubs, account_id: str) -> str:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account_id), timeout=5)
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id=account_id, plan="basic"), timeout=5
    )
    return account_id


def reserve(stubs: Stubs, account_id: str, amount: float, **kw: Any) -> pb.ReserveResponse:
    feature = kw.pop("feature", "tokens")
    return stubs.usage.Reserve(  # type: ignore[no-any-return]
        pb.ReserveRequest(account_id=account_id, feature=feature, amount=amount, **kw), timeout=10
    )


def metering(stubs: Stubs, account_id: str, feature: str = "tokens") -> pb.Resolution:
    return stubs.evaluation.Evaluate(  # type: ignore[no-any-return]
        pb.EvaluateRequest(account_id=account_id, feature=feature), timeout=5
    )


def code_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details() or ""


def test_reserve_counts_every_active_hold_and_shows_held(stubs: Stubs) -> None:
    a = account(stubs, "acct_reserve")
    first = reserve(stubs, a, 60)
    assert first.granted and first.hold_id and first.HasField("expires_at")
    assert first.resolution.metering.held == 60
    assert first.resolution.metering.remaining == 40
    second = reserve(stubs, a, 50)  # 0 used + 60 held + 50 > 100
    assert not second.granted and second.denial == "usage_limit_reached" and not second.hold_id
    res = metering(stubs, a)
    assert res.metering.held == 60 and res.metering.used == 0
    assert res.metadata.fields["held"].number_value == 60
    consumed = stubs.usage.Consume(
        pb.ConsumeRequest(account_id=a, feature="tokens", amount=41), timeout=5
    )
    assert not consumed.granted  # Consume counts the hold too
    listed = stubs.usage.ListHolds(pb.ListHoldsRequest(account_id=a), timeout=5)
    assert [h.hold_id for h in listed.holds] == [first.hold_id]
    assert listed.holds[0].state == "active"


def test_settle_records_the_real_amount_and_ends_the_hold(stubs: Stubs) -> None:
    a = account(stubs, "acct_settle")
    held = reserve(stubs, a, 30)
    settled = stubs.usage.Settle(pb.SettleRequest(hold_id=held.hold_id, amount=25), timeout=10)
    assert settled.usage == 25 and not settled.over_ceiling
    assert settled.hold.state == "settled" and settled.hold.settled_amount == 25
    assert settled.resolution.metering.held == 0 and settled.resolution.metering.used == 25
    code, message = code_of(
        lambda: stubs.usage.Settle(pb.SettleRequest(hold_id=held.hold_id, amount=1), timeout=5)
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert message.endswith(f"hold {held.hold_id} was settled")
    assert metering(stubs, a).metering.used == 25  # nothing changed


def test_settle_past_the_ceiling_is_recorded_in_full(stubs: Stubs) -> None:
    a = account(stubs, "acct_over")
    held = reserve(stubs, a, 90)
    settled = stubs.usage.Settle(pb.SettleRequest(hold_id=held.hold_id, amount=130), timeout=10)
    assert settled.usage == 130 and settled.over_ceiling
    assert not metering(stubs, a).has_access


def test_release_frees_the_hold_and_cannot_repeat(stubs: Stubs) -> None:
    a = account(stubs, "acct_release")
    held = reserve(stubs, a, 100)
    assert not reserve(stubs, a, 1).granted
    released = stubs.usage.Release(pb.ReleaseRequest(hold_id=held.hold_id), timeout=10)
    assert released.hold.state == "released" and released.resolution.metering.held == 0
    assert reserve(stubs, a, 100).granted
    code, message = code_of(
        lambda: stubs.usage.Settle(pb.SettleRequest(hold_id=held.hold_id, amount=1), timeout=5)
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert message.endswith(f"hold {held.hold_id} was released")
    assert metering(stubs, a).metering.used == 0


def test_idempotency_keys_answer_the_first_result(stubs: Stubs) -> None:
    a = account(stubs, "acct_keys")
    one = reserve(stubs, a, 40, idempotency_key="r1")
    again = reserve(stubs, a, 40, idempotency_key="r1")
    assert again.duplicate and again.granted and again.hold_id == one.hold_id
    assert metering(stubs, a).metering.held == 40  # one hold, not two
    request = pb.SettleRequest(hold_id=one.hold_id, amount=10, idempotency_key="s1")
    first = stubs.usage.Settle(request, timeout=10)
    repeat = stubs.usage.Settle(request, timeout=10)  # after the hold ended: the first answer
    assert repeat.duplicate and repeat.usage == first.usage == 10
    assert metering(stubs, a).metering.used == 10
    other = reserve(stubs, a, 5)
    release = pb.ReleaseRequest(hold_id=other.hold_id, idempotency_key="x1")
    assert not stubs.usage.Release(release, timeout=10).duplicate
    assert stubs.usage.Release(release, timeout=10).duplicate


def test_expiry_is_a_time_boundary(stubs: Stubs) -> None:
    a = account(stubs, "acct_expiry")
    held = reserve(stubs, a, 70, ttl_seconds=1)
    res = metering(stubs, a)
    assert res.metering.held == 70
    assert res.valid_until.ToDatetime() == held.expires_at.ToDatetime()
    wait_for(lambda: metering(stubs, a).metering.held == 0, timeout=30)
    assert reserve(stubs, a, 100).granted
    code, message = code_of(
        lambda: stubs.usage.Settle(pb.SettleRequest(hold_id=held.hold_id, amount=1), timeout=5)
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert f"hold {held.hold_id} expired at " in message


def test_expiry_is_announced_on_watch_at_the_instant(stubs: Stubs) -> None:
    a = account(stubs, "acct_expiry_event")
    log = WatchLog(stubs)
    try:
        held = reserve(stubs, a, 10, ttl_seconds=2)
        expires = held.expires_at.ToDatetime(tzinfo=UTC).timestamp()
        arrived, event = log.wait_time_event(a, timeout=30)
        assert arrived >= expires - 0.01, f"announced {expires - arrived:.3f} s early"
        assert a in event.account_ids and not event.all_accounts
    finally:
        log.close()


def test_credit_priced_holds_count_on_the_pool(stubs: Stubs) -> None:
    a = account(stubs, "acct_pool")
    assert reserve(stubs, a, 8, feature="chat").granted  # 16 of 20 credits held
    assert metering(stubs, a, "credits").metering.held == 16
    refused = reserve(stubs, a, 3, feature="chat")
    assert not refused.granted and refused.denial == "credits_exhausted"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"amount": -1.0}, "amount must be a finite number > 0"),
        ({"amount": math.nan}, "amount must be a finite number > 0"),
        ({"amount": math.inf}, "amount must be a finite number > 0"),
        ({"amount": 0.0}, "amount must be a finite number > 0"),
        ({"ttl_seconds": 0}, "ttl_seconds must be between 1 and 86400"),
        ({"ttl_seconds": 86_401}, "ttl_seconds must be between 1 and 86400"),
        ({"feature": "seats"}, "not a sum metered feature"),
        ({"feature": "sso"}, "sso"),
        ({"dimensions": {"model": "x"}}, "dimensions need meters"),
    ],
)
def test_bad_reserve_is_invalid_argument_and_changes_nothing(
    stubs: Stubs, change: dict[str, Any], needle: str
) -> None:
    a = account(stubs, "acct_bad")
    fields: dict[str, Any] = {"amount": 5.0, **change}
    code, message = code_of(lambda: reserve(stubs, a, **fields))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and needle in message
    assert not stubs.usage.ListHolds(pb.ListHoldsRequest(account_id=a), timeout=5).holds


def test_bad_settle_and_release(stubs: Stubs) -> None:
    a = account(stubs, "acct_owner")
    held = reserve(stubs, a, 5)
    for amount in (-1.0, math.nan, math.inf):
        code, message = code_of(
            lambda amount=amount: stubs.usage.Settle(
                pb.SettleRequest(hold_id=held.hold_id, amount=amount), timeout=5
            )
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "finite number >= 0" in message
    code, message = code_of(
        lambda: stubs.usage.Settle(pb.SettleRequest(hold_id=held.hold_id), timeout=5)
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "amount is required" in message
    code, message = code_of(
        lambda: stubs.usage.Settle(pb.SettleRequest(hold_id="hold_nope", amount=1), timeout=5)
    )
    assert code is grpc.StatusCode.NOT_FOUND and "hold_nope" in message
    code, message = code_of(
        lambda: stubs.usage.Release(
            pb.ReleaseRequest(hold_id=held.hold_id, account_id="acct_someone_else"), timeout=5
        )
    )
    assert code is grpc.StatusCode.NOT_FOUND and "acct_someone_else" in message
    assert metering(stubs, a).metering.held == 5  # nothing changed


def test_concurrent_reservers_never_hold_more_than_the_ceiling(stubs: Stubs) -> None:
    a = account(stubs, "acct_race")
    granted: list[bool] = []
    lock = threading.Lock()

    def one() -> None:
        ok = reserve(stubs, a, 7).granted
        with lock:
            granted.append(ok)

    threads = [threading.Thread(target=one) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(granted) == 32 and sum(granted) == 100 // 7
    assert metering(stubs, a).metering.held == 7 * (100 // 7)


def test_a_restart_keeps_active_holds(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    catalog, db = tmp_path / "catalog.yaml", tmp_path / "state.db"
    with in_process(catalog, db) as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
        a = account(s, "acct_restart")
        held = reserve(s, a, 80)
    with in_process(catalog, db) as sc, Stubs(f"127.0.0.1:{sc.port}") as s:
        assert metering(s, a).metering.held == 80
        assert not reserve(s, a, 30).granted
        settled = s.usage.Settle(pb.SettleRequest(hold_id=held.hold_id, amount=80), timeout=10)
        assert settled.usage == 80 and settled.hold.state == "settled"
