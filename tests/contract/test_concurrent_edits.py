"""Concurrent admin edits of one account lose nothing (decision 1300), on both stores.

Four client threads each make every kind of admin edit of one account over real gRPC, five
rounds each, all at once: against one sidecar on SQLite, one on PostgreSQL, and two sidecars
sharing one PostgreSQL database (two threads each, so their edits also race across
sidecars). Every call must be acknowledged (none refused, none `ABORTED`), and afterwards the
account holds exactly what the calls made — every attribute, subscription (with its phases,
members and end), override, grant and top-up — the audit log has exactly one entry per call,
each describing that call's own change on top of the one before, and the outbox exactly one
lifecycle row per event those calls make. `DeleteAccount` is left out: it needs no base record
(one statement under the write lock) and would end everyone else's edits.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.store.base import AuditEntry
from support.receiver import Receiver
from support.sidecar import EXAMPLE_CATALOG, Stubs, in_process, wait_for

THREADS, ROUNDS = 4, 5
ACCOUNT = "acct_busy"
NUMBERS = ("api-calls", "exports", "image-generations", "ai-completions")  # set, kept
CLEARED = ("sso", "scheduled-exports", "execution-concurrency", "seats")  # set, then cleared
HOOKS = """
webhooks:
  - url: {url}/hooks
    events: [subscription.created, subscription.updated, subscription.canceled, topup.added]
"""
PER_ROUND = Counter(
    UpsertAccount=1,
    CreateSubscription=1,
    ChangePlan=1,
    ChangeAddOns=1,
    CancelScheduledChange=1,
    AddMember=2,
    RemoveMember=1,
    CancelSubscription=1,
    ResumeSubscription=1,
    SetOverride=2,
    ClearOverride=1,
    CreateGrant=2,
    RevokeGrant=1,
    AddTopUp=2,
    VoidTopUp=1,
    ResetUsage=1,
)
EVENTS_PER_ROUND = Counter(
    {
        "subscription.created": 1,
        "subscription.updated": 7,  # plan, add-ons, scheduled change undone, 3 members, resume
        "subscription.canceled": 1,
        "topup.added": 2,
    }
)


def _at(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


def _number(value: float) -> struct_pb2.Value:
    return struct_pb2.Value(number_value=value)


def _round(s: Stubs, thread: int, n: int, now: datetime) -> None:
    """One round of every admin kind by one thread; names are the thread's and round's own."""
    tag = f"t{thread}r{n}"
    sub, admin = f"sub-{tag}", s.admin
    a: dict[str, Any] = {"account_id": ACCOUNT}
    attributes = struct_pb2.Struct()
    attributes.update({tag: n})
    admin.UpsertAccount(pb.UpsertAccountRequest(id=ACCOUNT, attributes=attributes), timeout=30)
    admin.CreateSubscription(pb.CreateSubscriptionRequest(**a, plan="free", id=sub), timeout=30)
    sa: dict[str, Any] = {**a, "subscription_id": sub}
    admin.ChangePlan(
        pb.ChangePlanRequest(**sa, plan="pro", at=_at(now + timedelta(30))), timeout=30
    )
    later = _at(now + timedelta(40))
    admin.ChangeAddOns(
        pb.ChangeAddOnsRequest(**sa, addons={"extra-seats": 1}, at=later), timeout=30
    )
    admin.CancelScheduledChange(pb.CancelScheduledChangeRequest(**sa, at=later), timeout=30)
    for member in ("m1", "m2"):
        admin.AddMember(pb.MemberRequest(**sa, member_id=f"{member}-{tag}"), timeout=30)
    admin.RemoveMember(pb.MemberRequest(**sa, member_id=f"m1-{tag}"), timeout=30)
    end = _at(now + timedelta(60))
    admin.CancelSubscription(pb.CancelSubscriptionRequest(**sa, at=end), timeout=30)
    admin.ResumeSubscription(pb.ResumeSubscriptionRequest(**sa), timeout=30)
    keep, clear = NUMBERS[thread], CLEARED[thread]
    admin.SetOverride(pb.SetOverrideRequest(**a, feature=keep, value=_number(n + 1)), timeout=30)
    admin.SetOverride(pb.SetOverrideRequest(**a, feature=clear, value=_value(clear)), timeout=30)
    admin.ClearOverride(pb.ClearOverrideRequest(**a, feature=clear), timeout=30)
    for grant in (f"g-{tag}", f"gx-{tag}"):
        request = pb.CreateGrantRequest(**a, feature="api-calls", value=_number(n), id=grant)
        admin.CreateGrant(request, timeout=30)
    admin.RevokeGrant(pb.RevokeGrantRequest(**a, grant_id=f"gx-{tag}"), timeout=30)
    for topup in (f"u-{tag}", f"ux-{tag}"):
        add = pb.AddTopUpRequest(**a, feature="api-calls", amount=n + 1, id=topup)
        admin.AddTopUp(add, timeout=30)
    admin.VoidTopUp(pb.VoidTopUpRequest(**a, topup_id=f"ux-{tag}"), timeout=30)
    admin.ResetUsage(pb.ResetUsageRequest(**a, feature="api-calls"), timeout=30)


def _value(feature: str) -> struct_pb2.Value:
    if feature in ("sso", "scheduled-exports"):
        return struct_pb2.Value(bool_value=True)
    return _number(3)


def _storm(targets: list[int]) -> None:
    """THREADS clients, thread i on the sidecar at `targets[i % len(targets)]`, all at once."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def client(thread: int) -> None:
        try:
            with Stubs(f"127.0.0.1:{targets[thread % len(targets)]}") as s:
                start.wait(timeout=30)
                for n in range(ROUNDS):
                    _round(s, thread, n, now)
        except (grpc.RpcError, threading.BrokenBarrierError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors  # every edit acknowledged: none refused, none ABORTED


def _check_account(record: dict[str, Any]) -> None:
    tags = [f"t{t}r{n}" for t in range(THREADS) for n in range(ROUNDS)]
    assert record["attributes"] == {f"t{t}r{n}": n for t in range(THREADS) for n in range(ROUNDS)}
    subs = {s["id"]: s for s in record["subscriptions"]}
    assert sorted(subs) == sorted(f"sub-{tag}" for tag in tags)
    for tag in tags:
        sub = subs[f"sub-{tag}"]
        assert sub["members"] == [f"m2-{tag}"], sub
        assert "ends_at" not in sub, sub  # cancelled, then resumed
        assert [p["plan"] for p in sub["phases"]] == ["pro"], sub  # the add-on change undone
    overrides = record["overrides"]
    assert sorted(overrides) == sorted(NUMBERS)
    assert all(overrides[f]["value"] == ROUNDS for f in NUMBERS), overrides
    assert sorted(g["id"] for g in record["grants"]) == sorted(f"g-{tag}" for tag in tags)
    topups = {t["id"]: t for t in record["topups"]}
    assert sorted(topups) == sorted(f"{kind}-{tag}" for tag in tags for kind in ("u", "ux"))
    assert sorted(i for i, t in topups.items() if t.get("voided_at")) == sorted(
        f"ux-{tag}" for tag in tags
    )


def _audit(store: Any, account: str = ACCOUNT) -> list[AuditEntry]:
    """The account's audit entries, oldest first."""
    entries: list[AuditEntry] = []
    before: int | None = None
    while True:
        page = store.list_audit(account, None, 500, before)
        entries += page
        if len(page) < 500:
            return entries[::-1]  # oldest first
        before = page[-1].seq


def _check_audit(entries: list[AuditEntry], record: dict[str, Any]) -> None:
    """One entry per call, each the change of that call on top of the entry before it."""
    calls = Counter({kind: count * THREADS * ROUNDS for kind, count in PER_ROUND.items()})
    calls["UpsertAccount"] += 1  # the set-up's
    assert Counter(e.action for e in entries) == calls
    state: dict[str, Any] = {}
    for e in entries:
        if e.action == "ResetUsage":
            continue  # a counter's change, not the record's
        for key, value in (e.before or {}).items():
            assert state.get(key) == value, f"{e.action} {e.target}: {key} was not what it saw"
        for key in set(e.before or {}) - set(e.after or {}):
            del state[key]
        state.update(e.after or {})
        if e.action in ("AddTopUp", "CreateGrant", "CreateSubscription"):
            part = {"AddTopUp": "topups", "CreateGrant": "grants"}.get(e.action, "subscriptions")
            old = {x["id"] for x in (e.before or {}).get(part) or ()}
            new = {x["id"] for x in (e.after or {}).get(part) or ()}
            assert old <= new and new - old == {e.target}, (e.action, e.target, new - old)
    assert state == record


def _check_outbox(store: Any) -> None:
    rows = store.list_deliveries(None, 10_000)
    kinds = Counter(r.payload["event"]["type"] for r in rows if r.account == ACCOUNT)
    assert kinds == Counter({k: v * THREADS * ROUNDS for k, v in EVENTS_PER_ROUND.items()})


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Path]:
    receiver = Receiver()  # takes the deliveries (their rows stay in the outbox, delivered)
    path = tmp_path / "catalog.yaml"
    path.write_text(EXAMPLE_CATALOG.read_text() + HOOKS.format(url=receiver.url))
    yield path
    receiver.close()


def _started(stack: ExitStack, catalog: Path, db: Any, count: int, **settings: Any) -> list[Any]:
    sidecars = [stack.enter_context(in_process(catalog, db, **settings)) for _ in range(count)]
    for sc in sidecars:
        if sc.feed is not None:
            wait_for(lambda sc=sc: sc.feed.connected, timeout=10)
    return sidecars


@pytest.fixture(params=["sqlite", "postgres", "postgres-two-sidecars"])
def sidecars(request: pytest.FixtureRequest, catalog: Path, tmp_path: Path) -> Iterator[list[Any]]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            yield _started(stack, catalog, tmp_path / "state.db", 1)
        else:
            url = request.getfixturevalue("postgres_cluster").url()
            env = f"edits-{uuid.uuid4().hex[:8]}"
            count = 2 if request.param == "postgres-two-sidecars" else 1
            yield _started(stack, catalog, url, count, environment=env)


def test_concurrent_edits_of_every_kind_on_one_account_lose_nothing(
    sidecars: list[Any],
) -> None:
    first = sidecars[0]
    with Stubs(f"127.0.0.1:{first.port}") as s:
        s.admin.UpsertAccount(pb.UpsertAccountRequest(id=ACCOUNT, name="busy"), timeout=10)
    for sc in sidecars:
        wait_for(lambda sc=sc: ACCOUNT in sc.state.records, timeout=10)
    _storm([sc.port for sc in sidecars])
    stored = first.store.load_records()[ACCOUNT]
    _check_account(stored)
    for sc in sidecars:  # what each sidecar serves is what is stored
        wait_for(lambda sc=sc: sc.state.records.get(ACCOUNT) == stored, timeout=10)
    _check_audit(_audit(first.store), stored)
    _check_outbox(first.store)


def test_an_edit_through_a_sidecar_behind_on_the_account_is_rebuilt_on_the_latest(
    postgres_cluster: Any,
) -> None:
    """Deterministic: sidecar B has not seen A's top-up (no change feed runs here) when it adds
    its own. The store refuses B's write over the version B holds; B reads the newer record,
    adds its top-up to that and stores it. Both top-ups stay; the audit shows B's on A's."""
    from plangate.sidecar.catalog import load_catalog
    from plangate.sidecar.runtime.live.state import LiveState
    from plangate.sidecar.runtime.serve.admin import Admin
    from plangate.sidecar.store.postgres import PostgresStore

    catalog = load_catalog(EXAMPLE_CATALOG)
    env = f"behind-{uuid.uuid4().hex[:8]}"
    stores = [PostgresStore(postgres_cluster.url(), env) for _ in range(2)]
    try:
        a = LiveState(catalog, stores[0])
        Admin(a).upsert_account("acct_behind", actor="test")
        b = LiveState(catalog, stores[1])  # holds the account as created
        Admin(a).add_topup("acct_behind", "api-calls", 5, topup_id="from-a", actor="test")
        Admin(b).add_topup("acct_behind", "api-calls", 7, topup_id="from-b", actor="test")
        stored = stores[0].load_records()["acct_behind"]
        assert [t["id"] for t in stored["topups"]] == ["from-a", "from-b"]
        assert b.records["acct_behind"] == stored  # B serves what it stored
        entries = _audit(stores[1], "acct_behind")
        assert [e.action for e in entries] == ["UpsertAccount", "AddTopUp", "AddTopUp"]
        assert [t["id"] for t in (entries[2].before or {})["topups"]] == ["from-a"]
    finally:
        for store in stores:
            store.close()


OPS = st.lists(
    st.tuples(st.integers(0, 1), st.sampled_from(["topup", "grant", "override", "attribute"])),
    min_size=1,
    max_size=8,
)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(ops=OPS)
def test_interleaved_edits_of_two_sidecars_without_a_feed_all_land(
    postgres_cluster: Any, ops: list[tuple[int, str]]
) -> None:
    """Any interleaving of edits through two sidecars that never hear of each other's changes
    (each one's memory is behind whenever the other wrote last): every edit lands, once."""
    from plangate.sidecar.catalog import load_catalog
    from plangate.sidecar.runtime.live.state import LiveState
    from plangate.sidecar.runtime.serve.admin import Admin
    from plangate.sidecar.store.postgres import PostgresStore

    catalog = load_catalog(EXAMPLE_CATALOG)
    env = f"interleaved-{uuid.uuid4().hex[:8]}"
    stores = [PostgresStore(postgres_cluster.url(), env) for _ in range(2)]
    try:
        first = LiveState(catalog, stores[0])
        Admin(first).upsert_account("acct_i", actor="test")
        admins = [Admin(first), Admin(LiveState(catalog, stores[1]))]
        expected: dict[str, Any] = {"topups": [], "grants": [], "overrides": {}, "attributes": {}}
        for n, (side, kind) in enumerate(ops):
            admin, name = admins[side], f"{kind}-{n}"
            if kind == "topup":
                admin.add_topup("acct_i", "api-calls", 1.0, topup_id=name, actor="test")
                expected["topups"].append(name)
            elif kind == "grant":
                admin.create_grant("acct_i", "api-calls", n, grant_id=name, actor="test")
                expected["grants"].append(name)
            elif kind == "override":
                feature = NUMBERS[n % len(NUMBERS)]
                admin.set_override("acct_i", feature, n, actor="test")
                expected["overrides"][feature] = n
            else:
                admin.upsert_account("acct_i", attributes={name: n}, actor="test")
                expected["attributes"][name] = n
        stored = stores[0].load_records()["acct_i"]
        assert [t["id"] for t in stored.get("topups", [])] == expected["topups"]
        assert [g["id"] for g in stored["grants"]] == expected["grants"]
        assert {k: v["value"] for k, v in stored["overrides"].items()} == expected["overrides"]
        assert stored["attributes"] == expected["attributes"]
        assert len(_audit(stores[1], "acct_i")) == len(ops) + 1
    finally:
        for store in stores:
            store.close()
