"""The Admin API (design §6): every operation, its Watch events, its effect on evaluations,
and its refusals: bad input is INVALID_ARGUMENT/NOT_FOUND, accounts declared in the catalog
are FAILED_PRECONDITION naming the file, and nothing refused changes any state."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import from_struct, to_struct, to_value
from support.admin import Events, fingerprint
from support.sidecar import Stubs, copy_catalog, in_process

NOW = datetime.now(UTC)


def ts(at: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(at)
    return out


DAY = timedelta(days=1)
PAST, FUTURE = ts(NOW - 30 * DAY), ts(NOW + 30 * DAY)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The example sidecar, its broad streams uncoalesced: these tests count the events of
    each edit one by one (coalescing is `test_stream_interest.py`'s subject)."""
    d = tmp_path_factory.mktemp("admin")
    with in_process(copy_catalog(d), d / "state.db", stream_coalesce_seconds=0.0) as sc:
        yield sc


@pytest.fixture
def events(stubs: Stubs) -> Iterator[Events]:
    e = Events(stubs)
    yield e
    e.close()


def value(stubs: Stubs, account_id: str, feature: str) -> pb.Resolution:
    res = stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id=account_id, feature=feature), timeout=5
    )
    assert res.error_code == "", res.error_message
    return res


# -- accounts --------------------------------------------------------------------------------


def test_accounts_upsert_get_list_delete(stubs: Stubs, events: Events) -> None:
    attributes = {
        "region": "eu",
        "seats_bought": 12,
        "vip": True,
        "tags": ["a", "b"],
        "crm": {"id": "x1"},
    }
    created = stubs.admin.UpsertAccount(
        pb.UpsertAccountRequest(id="acct_crud", name="Crud Ltd", attributes=to_struct(attributes)),
        timeout=5,
    )
    events.expect("acct_crud")
    assert (created.id, created.name, created.declared) == ("acct_crud", "Crud Ltd", False)
    assert from_struct(created.attributes) == attributes
    got = stubs.admin.GetAccount(pb.GetAccountRequest(id="acct_crud"), timeout=5)
    assert got == created
    # an upsert of an existing account sets what it gives and keeps the rest
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id="acct_crud", plan="pro", id="s1"), timeout=5
    )
    events.expect("acct_crud")
    renamed = stubs.admin.UpsertAccount(
        pb.UpsertAccountRequest(
            id="acct_crud", name="Crud Inc", attributes=to_struct({"region": "us"})
        ),
        timeout=5,
    )
    events.expect("acct_crud")
    assert renamed.name == "Crud Inc" and from_struct(renamed.attributes) == {
        **attributes,
        "region": "us",
    }
    assert [s.id for s in renamed.subscriptions] == ["s1"]
    assert value(stubs, "acct_crud", "sso").as_boolean

    # listing pages through every account, declared ones included, in id order
    for i in range(7):
        stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=f"acct_page_{i}"), timeout=5)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = stubs.admin.ListAccounts(pb.ListAccountsRequest(page_size=3, page_token=token))
        assert len(page.accounts) <= 3
        seen += [a.id for a in page.accounts]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert {"acct_acme", "acct_globex", "acct_crud"} | {f"acct_page_{i}" for i in range(7)} <= set(
        seen
    )
    assert pages == -(-len(seen) // 3)
    declared = [
        a for a in stubs.admin.ListAccounts(pb.ListAccountsRequest()).accounts if a.declared
    ]
    assert {a.id for a in declared} == {"acct_acme", "acct_globex", "acct_initech"}
    events.account_changes()  # drain the seven upserts

    deleted = stubs.admin.DeleteAccount(pb.DeleteAccountRequest(id="acct_crud"), timeout=5)
    assert deleted.deleted
    events.expect("acct_crud")
    assert not stubs.admin.DeleteAccount(pb.DeleteAccountRequest(id="acct_crud"), timeout=5).deleted
    assert events.account_changes() == []  # nothing happened, nothing announced
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.GetAccount(pb.GetAccountRequest(id="acct_crud"), timeout=5)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    gone = value(stubs, "acct_crud", "sso")
    assert (gone.reason, gone.denial, gone.as_boolean) == ("DEFAULT", "account_not_found", False)


def test_upsert_is_a_merge_and_clearing_is_explicit(stubs: Stubs, events: Events) -> None:
    """Design §6: an unset field keeps its value, attributes merge key by key, a null value
    removes one key, `clear_attributes` empties them first; a refused merge changes nothing."""

    def upsert(**fields: Any) -> pb.Account:
        reply: pb.Account = stubs.admin.UpsertAccount(
            pb.UpsertAccountRequest(id="acct_merge", **fields), timeout=5
        )
        return reply

    upsert(name="Merge AG", attributes=to_struct({"region": "eu", "tier": 2}))
    # the README's CLI example then its grpcurl example: a second client sets only a name
    kept = upsert(name="Merge SE")
    assert (kept.name, from_struct(kept.attributes)) == ("Merge SE", {"region": "eu", "tier": 2})
    # attributes alone keep the name, and merge key by key
    merged = upsert(attributes=to_struct({"tier": 3, "beta": True}))
    assert merged.name == "Merge SE"
    assert from_struct(merged.attributes) == {"region": "eu", "tier": 3, "beta": True}
    # a null removes one key; an explicit empty name is a name
    dropped = upsert(name="", attributes=to_struct({"beta": None}))
    assert (dropped.name, from_struct(dropped.attributes)) == ("", {"region": "eu", "tier": 3})
    cleared = upsert(clear_attributes=True, attributes=to_struct({"region": "us"}))
    assert from_struct(cleared.attributes) == {"region": "us"}
    assert from_struct(upsert(clear_attributes=True).attributes) == {}
    # the stored record, not just the reply, is what the merge produced
    assert stubs.admin.GetAccount(pb.GetAccountRequest(id="acct_merge"), timeout=5) == upsert()
    with pytest.raises(grpc.RpcError) as info:
        upsert(attributes=to_struct({"x": float("nan")}))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert from_struct(upsert().attributes) == {}
    events.account_changes()


# -- subscriptions and members ---------------------------------------------------------------


def test_subscription_life_cycle(stubs: Stubs, events: Events) -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_life"), timeout=5)
    events.account_changes()
    sub = stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(
            account_id="acct_life",
            plan="pro",
            addons={"extra-seats": 2, "salesforce": 1},
            members=["acct_life_m1"],
            starts_at=PAST,
            ends_at=ts(NOW + 365 * DAY),
            trial_ends_at=ts(NOW - 20 * DAY),
        ),
        timeout=5,
    )
    events.expect("acct_life", "acct_life_m1")
    assert sub.id and sub.owner == "acct_life" and sub.plan == "pro"
    assert dict(sub.addons) == {"extra-seats": 2, "salesforce": 1}
    assert list(sub.members) == ["acct_life_m1"]
    assert sub.starts_at == PAST and sub.ends_at == ts(NOW + 365 * DAY)
    assert sub.trial_ends_at == ts(NOW - 20 * DAY)
    seats = value(stubs, "acct_life", "seats")
    assert (seats.metering.limit, seats.variant) == (15, "pro+extra-seats")  # 5 + 2 x 5
    integrations = value(stubs, "acct_life", "integrations").as_object.list_value
    assert {v.string_value for v in integrations.values} == {"slack", "github", "salesforce"}
    assert value(stubs, "acct_life_m1", "sso").as_boolean  # the member shares it

    # change plan: Enterprise does not take the Salesforce add-on, so first drop it
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.ChangePlan(
            pb.ChangePlanRequest(account_id="acct_life", subscription_id=sub.id, plan="enterprise")
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "salesforce" in (info.value.details() or "")
    assert events.account_changes() == []
    changed = stubs.admin.ChangeAddOns(
        pb.ChangeAddOnsRequest(
            account_id="acct_life",
            subscription_id=sub.id,
            addons={"extra-seats": 4, "salesforce": 0},
        ),
        timeout=5,
    )
    events.expect("acct_life", "acct_life_m1")
    assert dict(changed.addons) == {"extra-seats": 4}
    assert value(stubs, "acct_life", "seats").metering.limit == 25
    moved = stubs.admin.ChangePlan(
        pb.ChangePlanRequest(account_id="acct_life", subscription_id=sub.id, plan="enterprise"),
        timeout=5,
    )
    events.expect("acct_life", "acct_life_m1")
    assert moved.plan == "enterprise" and dict(moved.addons) == {"extra-seats": 4}
    assert value(stubs, "acct_life", "api-calls").unlimited
    assert value(stubs, "acct_life_m1", "support-tier").as_string == "priority"

    # members
    stubs.admin.AddMember(
        pb.MemberRequest(account_id="acct_life", subscription_id=sub.id, member_id="acct_life_m2"),
        timeout=5,
    )
    events.expect("acct_life", "acct_life_m2")
    assert value(stubs, "acct_life_m2", "sso").as_boolean
    after = stubs.admin.RemoveMember(
        pb.MemberRequest(account_id="acct_life", subscription_id=sub.id, member_id="acct_life_m1"),
        timeout=5,
    )
    # the member who left is told too: its cached entitlements are gone
    events.expect("acct_life", "acct_life_m1")
    assert list(after.members) == ["acct_life_m2"]
    gone = value(stubs, "acct_life_m1", "sso")
    assert (gone.as_boolean, gone.denial) == (False, "account_not_found")

    # cancel at a future time: still active until then; at a past time: over
    later = ts(NOW + 10 * DAY)
    cancelled = stubs.admin.CancelSubscription(
        pb.CancelSubscriptionRequest(account_id="acct_life", subscription_id=sub.id, at=later),
        timeout=5,
    )
    events.expect("acct_life", "acct_life_m2")
    assert cancelled.ends_at == later
    assert value(stubs, "acct_life", "sso").as_boolean
    stubs.admin.CancelSubscription(
        pb.CancelSubscriptionRequest(account_id="acct_life", subscription_id=sub.id), timeout=5
    )  # now
    events.expect("acct_life", "acct_life_m2")
    ended = value(stubs, "acct_life", "sso")
    assert (ended.as_boolean, ended.reason) == (False, "DEFAULT")
    assert not value(stubs, "acct_life_m2", "sso").as_boolean


def test_a_subscription_starting_later_is_not_active_yet(stubs: Stubs) -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_later"), timeout=5)
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id="acct_later", plan="pro", starts_at=FUTURE),
        timeout=5,
    )
    assert not value(stubs, "acct_later", "sso").as_boolean


# -- overrides, grants, usage reset ----------------------------------------------------------


def test_overrides_set_expire_and_clear(stubs: Stubs, events: Events) -> None:
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_ovr"), timeout=5)
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(account_id="acct_ovr", plan="pro"), timeout=5
    )
    events.account_changes()
    account = stubs.admin.SetOverride(
        pb.SetOverrideRequest(
            account_id="acct_ovr",
            feature="execution-concurrency",
            value=to_value(42),
            expires_at=FUTURE,
        ),
        timeout=5,
    )
    events.expect("acct_ovr")
    assert [(o.feature, o.value.number_value, o.expires_at) for o in account.overrides] == [
        ("execution-concurrency", 42, FUTURE)
    ]
    res = value(stubs, "acct_ovr", "execution-concurrency")
    assert (res.as_integer, res.variant) == (42, "override")
    # an override wins downwards too, and a metered one in catalog notation
    stubs.admin.SetOverride(
        pb.SetOverrideRequest(account_id="acct_ovr", feature="sso", value=to_value(False)),
        timeout=5,
    )
    stubs.admin.SetOverride(
        pb.SetOverrideRequest(
            account_id="acct_ovr", feature="api-calls", value=to_value({"limit": 10, "soft": True})
        ),
        timeout=5,
    )
    events.account_changes()
    assert not value(stubs, "acct_ovr", "sso").as_boolean
    api = value(stubs, "acct_ovr", "api-calls")
    assert (api.metering.limit, api.metering.soft_limit) == (10, True)
    # an expired override no longer applies
    stubs.admin.SetOverride(
        pb.SetOverrideRequest(
            account_id="acct_ovr",
            feature="execution-concurrency",
            value=to_value(42),
            expires_at=PAST,
        ),
        timeout=5,
    )
    events.expect("acct_ovr")
    assert value(stubs, "acct_ovr", "execution-concurrency").as_integer == 10
    cleared = stubs.admin.ClearOverride(
        pb.ClearOverrideRequest(account_id="acct_ovr", feature="sso"), timeout=5
    )
    events.expect("acct_ovr")
    assert "sso" not in {o.feature for o in cleared.overrides}
    assert value(stubs, "acct_ovr", "sso").as_boolean


def test_grants_create_and_revoke_also_on_declared_accounts(stubs: Stubs, events: Events) -> None:
    before = value(stubs, "acct_initech", "api-calls").metering.limit  # Free: 1000
    grant = stubs.admin.CreateGrant(
        pb.CreateGrantRequest(
            account_id="acct_initech",
            feature="api-calls",
            value=to_value(250_000),
            ends_at=FUTURE,
            id="promo-1",
        ),
        timeout=5,
    )
    events.expect("acct_initech")
    assert (grant.id, grant.feature, grant.value.number_value, grant.ends_at) == (
        "promo-1",
        "api-calls",
        250_000,
        FUTURE,
    )
    res = value(stubs, "acct_initech", "api-calls")
    assert (res.metering.limit, res.variant) == (250_000, "grant")
    account = stubs.admin.GetAccount(pb.GetAccountRequest(id="acct_initech"), timeout=5)
    assert account.declared and [g.id for g in account.grants] == ["promo-1"]
    # a grant that has not started yet does nothing (yet)
    stubs.admin.CreateGrant(
        pb.CreateGrantRequest(
            account_id="acct_initech", feature="sso", value=to_value(True), starts_at=FUTURE
        ),
        timeout=5,
    )
    events.expect("acct_initech")
    assert not value(stubs, "acct_initech", "sso").as_boolean
    stubs.admin.RevokeGrant(
        pb.RevokeGrantRequest(account_id="acct_initech", grant_id="promo-1"), timeout=5
    )
    events.expect("acct_initech")
    assert value(stubs, "acct_initech", "api-calls").metering.limit == before


def test_reset_usage_starts_a_fresh_count(stubs: Stubs, events: Events) -> None:
    report = pb.UsageReport(account_id="acct_globex", feature="exports", amount=7)
    stubs.usage.Report(pb.ReportRequest(reports=[report]), timeout=5)
    events.expect("acct_globex", cause="usage")
    assert value(stubs, "acct_globex", "exports").metering.used == 7
    reset = stubs.admin.ResetUsage(
        pb.ResetUsageRequest(account_id="acct_globex", feature="exports"), timeout=5
    )
    assert reset.previous_usage == 7
    events.expect("acct_globex", cause="usage")
    assert value(stubs, "acct_globex", "exports").metering.used == 0


# -- refusals: the right code, an actionable message, and no change at all ------------------


@pytest.fixture(scope="module")
def refusal_account(stubs: Stubs) -> None:
    """An account with a subscription, member, add-on, override, grant and usage to protect."""
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_ref_"), timeout=5)
    stubs.admin.CreateSubscription(
        pb.CreateSubscriptionRequest(
            account_id="acct_ref_", plan="pro", id="sub_ref", members=["acct_ref_member"],
            addons={"extra-seats": 1}, starts_at=PAST,
        ),
        timeout=5,
    )  # fmt: skip
    stubs.admin.SetOverride(
        pb.SetOverrideRequest(account_id="acct_ref_", feature="sso", value=to_value(False)),
        timeout=5,
    )
    stubs.admin.CreateGrant(
        pb.CreateGrantRequest(account_id="acct_ref_", feature="seats", value=to_value(3), id="g1"),
        timeout=5,
    )
    report = pb.UsageReport(account_id="acct_ref_", feature="api-calls", amount=12)
    stubs.usage.Report(pb.ReportRequest(reports=[report]), timeout=5)


A, S = "acct_ref_", "sub_ref"
INVALID, NOT_FOUND, DECLARED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
)
nan_struct = to_struct({"x": 1})
nan_struct.fields["x"].number_value = float("nan")
huge_ts = timestamp_pb2.Timestamp(seconds=2**60)

Call = Callable[[Stubs], Any]
REFUSALS: list[tuple[str, Call, grpc.StatusCode, str]] = [
    # (name, call, code, a fragment the message must contain)
    ("upsert/no id", lambda s: s.admin.UpsertAccount(pb.UpsertAccountRequest(name="x")), INVALID, "id is required"),
    ("upsert/blank id", lambda s: s.admin.UpsertAccount(pb.UpsertAccountRequest(id="  ")), INVALID, "id is required"),
    ("upsert/long id", lambda s: s.admin.UpsertAccount(pb.UpsertAccountRequest(id="a" * 257)), INVALID, "256"),
    ("upsert/declared", lambda s: s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_acme", name="x")), DECLARED, "catalog.yaml"),
    ("upsert/nan attribute", lambda s: s.admin.UpsertAccount(pb.UpsertAccountRequest(id=A, attributes=nan_struct)), INVALID, "attributes"),
    ("get/no id", lambda s: s.admin.GetAccount(pb.GetAccountRequest()), INVALID, "id is required"),
    ("get/unknown", lambda s: s.admin.GetAccount(pb.GetAccountRequest(id="acct_nope")), NOT_FOUND, "acct_nope"),
    ("list/negative", lambda s: s.admin.ListAccounts(pb.ListAccountsRequest(page_size=-1)), INVALID, "page_size"),
    ("list/too big", lambda s: s.admin.ListAccounts(pb.ListAccountsRequest(page_size=5000)), INVALID, "page_size"),
    ("delete/no id", lambda s: s.admin.DeleteAccount(pb.DeleteAccountRequest()), INVALID, "id is required"),
    ("delete/declared", lambda s: s.admin.DeleteAccount(pb.DeleteAccountRequest(id="acct_globex")), DECLARED, "catalog.yaml"),
    ("create-sub/no account", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(plan="pro")), INVALID, "account_id"),
    ("create-sub/unknown account", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id="acct_nope", plan="pro")), NOT_FOUND, "acct_nope"),
    ("create-sub/declared", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id="acct_acme", plan="pro")), DECLARED, "catalog.yaml"),
    ("create-sub/no plan", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id=A)), INVALID, "enterprise, free, pro"),
    ("create-sub/unknown plan", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id=A, plan="platinum")), INVALID, "unknown plan 'platinum'"),
    ("create-sub/unknown add-on", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id=A, plan="pro", addons={"turbo": 1})), INVALID, "unknown add-on 'turbo'"),
    ("create-sub/negative quantity", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id=A, plan="pro", addons={"extra-seats": -2})), INVALID, "quantity"),
    ("create-sub/over max quantity", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id=A, plan="pro", addons={"extra-seats": 51})), INVALID, "max_quantity"),
    ("create-sub/add-on not for plan", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id=A, plan="free", addons={"salesforce": 1})), INVALID, "requires"),
    ("create-sub/ends before start", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id=A, plan="pro", starts_at=FUTURE, ends_at=PAST)), INVALID, "ends_at must be after starts_at"),
    ("create-sub/duplicate id", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id=A, plan="pro", id=S)), INVALID, "already exists"),
    ("create-sub/blank member", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id=A, plan="pro", members=[""])), INVALID, "members"),
    ("create-sub/owner as member", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id=A, plan="pro", members=[A])), INVALID, "owner"),
    ("create-sub/time out of range", lambda s: s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id=A, plan="pro", ends_at=huge_ts)), INVALID, "ends_at"),
    ("change-plan/unknown sub", lambda s: s.admin.ChangePlan(pb.ChangePlanRequest(account_id=A, subscription_id="sub_nope", plan="free")), NOT_FOUND, "sub_nope"),
    ("change-plan/no plan", lambda s: s.admin.ChangePlan(pb.ChangePlanRequest(account_id=A, subscription_id=S)), INVALID, "plan"),
    ("change-plan/unknown plan", lambda s: s.admin.ChangePlan(pb.ChangePlanRequest(account_id=A, subscription_id=S, plan="gold")), INVALID, "unknown plan 'gold'"),
    ("change-plan/add-on does not fit", lambda s: s.admin.ChangePlan(pb.ChangePlanRequest(account_id=A, subscription_id=S, plan="free")), INVALID, "extra-seats"),
    ("change-plan/declared", lambda s: s.admin.ChangePlan(pb.ChangePlanRequest(account_id="acct_acme", subscription_id="acct_acme/0", plan="free")), DECLARED, "catalog.yaml"),
    ("change-addons/negative", lambda s: s.admin.ChangeAddOns(pb.ChangeAddOnsRequest(account_id=A, subscription_id=S, addons={"extra-seats": -1})), INVALID, "quantity"),
    ("change-addons/unknown", lambda s: s.admin.ChangeAddOns(pb.ChangeAddOnsRequest(account_id=A, subscription_id=S, addons={"turbo": 2})), INVALID, "turbo"),
    ("change-addons/over max", lambda s: s.admin.ChangeAddOns(pb.ChangeAddOnsRequest(account_id=A, subscription_id=S, addons={"extra-seats": 2**31 - 1})), INVALID, "max_quantity"),
    ("change-addons/unknown sub", lambda s: s.admin.ChangeAddOns(pb.ChangeAddOnsRequest(account_id=A, subscription_id="x", addons={})), NOT_FOUND, "'x'"),
    ("cancel/before start", lambda s: s.admin.CancelSubscription(pb.CancelSubscriptionRequest(account_id=A, subscription_id=S, at=ts(NOW - 3650 * DAY))), INVALID, "ends_at must be after starts_at"),
    ("cancel/unknown sub", lambda s: s.admin.CancelSubscription(pb.CancelSubscriptionRequest(account_id=A, subscription_id="x")), NOT_FOUND, "'x'"),
    ("cancel/no account", lambda s: s.admin.CancelSubscription(pb.CancelSubscriptionRequest(subscription_id=S)), INVALID, "account_id"),
    ("add-member/blank", lambda s: s.admin.AddMember(pb.MemberRequest(account_id=A, subscription_id=S)), INVALID, "member_id"),
    ("add-member/owner", lambda s: s.admin.AddMember(pb.MemberRequest(account_id=A, subscription_id=S, member_id=A)), INVALID, "owns"),
    ("add-member/unknown sub", lambda s: s.admin.AddMember(pb.MemberRequest(account_id=A, subscription_id="x", member_id="m")), NOT_FOUND, "'x'"),
    ("remove-member/not a member", lambda s: s.admin.RemoveMember(pb.MemberRequest(account_id=A, subscription_id=S, member_id="stranger")), NOT_FOUND, "stranger"),
    ("remove-member/declared", lambda s: s.admin.RemoveMember(pb.MemberRequest(account_id="acct_acme", subscription_id="acct_acme/0", member_id="user_ann")), DECLARED, "catalog.yaml"),
    ("override/no feature", lambda s: s.admin.SetOverride(pb.SetOverrideRequest(account_id=A, value=to_value(1))), INVALID, "feature"),
    ("override/unknown feature", lambda s: s.admin.SetOverride(pb.SetOverrideRequest(account_id=A, feature="warp", value=to_value(1))), INVALID, "unknown feature 'warp'"),
    ("override/no value", lambda s: s.admin.SetOverride(pb.SetOverrideRequest(account_id=A, feature="sso")), INVALID, "value is required"),
    ("override/wrong type", lambda s: s.admin.SetOverride(pb.SetOverrideRequest(account_id=A, feature="execution-concurrency", value=to_value("lots"))), INVALID, "execution-concurrency"),
    ("override/out of range", lambda s: s.admin.SetOverride(pb.SetOverrideRequest(account_id=A, feature="execution-concurrency", value=to_value(1000))), INVALID, "100"),
    ("override/not in enum", lambda s: s.admin.SetOverride(pb.SetOverrideRequest(account_id=A, feature="support-tier", value=to_value("platinum"))), INVALID, "community, email, priority"),
    ("override/negative limit", lambda s: s.admin.SetOverride(pb.SetOverrideRequest(account_id=A, feature="api-calls", value=to_value(-5))), INVALID, "limit"),
    ("override/nan", lambda s: s.admin.SetOverride(pb.SetOverrideRequest(account_id=A, feature="api-calls", value=nan_struct.fields["x"])), INVALID, "value"),
    ("override/declared", lambda s: s.admin.SetOverride(pb.SetOverrideRequest(account_id="acct_acme", feature="sso", value=to_value(False))), DECLARED, "catalog.yaml"),
    ("override/unknown account", lambda s: s.admin.SetOverride(pb.SetOverrideRequest(account_id="acct_nope", feature="sso", value=to_value(True))), NOT_FOUND, "acct_nope"),
    ("clear-override/none set", lambda s: s.admin.ClearOverride(pb.ClearOverrideRequest(account_id=A, feature="seats")), NOT_FOUND, "seats"),
    ("clear-override/no feature", lambda s: s.admin.ClearOverride(pb.ClearOverrideRequest(account_id=A)), INVALID, "feature"),
    ("clear-override/declared", lambda s: s.admin.ClearOverride(pb.ClearOverrideRequest(account_id="acct_acme", feature="execution-concurrency")), DECLARED, "catalog.yaml"),
    ("grant/unknown feature", lambda s: s.admin.CreateGrant(pb.CreateGrantRequest(account_id=A, feature="warp", value=to_value(1))), INVALID, "unknown feature 'warp'"),
    ("grant/no value", lambda s: s.admin.CreateGrant(pb.CreateGrantRequest(account_id=A, feature="seats")), INVALID, "value is required"),
    ("grant/wrong type", lambda s: s.admin.CreateGrant(pb.CreateGrantRequest(account_id=A, feature="sso", value=to_value(3))), INVALID, "true or false"),
    ("grant/ends before start", lambda s: s.admin.CreateGrant(pb.CreateGrantRequest(account_id=A, feature="seats", value=to_value(3), starts_at=FUTURE, ends_at=PAST)), INVALID, "ends_at"),
    ("grant/duplicate id", lambda s: s.admin.CreateGrant(pb.CreateGrantRequest(account_id=A, feature="seats", value=to_value(3), id="g1")), INVALID, "already exists"),
    ("grant/unknown account", lambda s: s.admin.CreateGrant(pb.CreateGrantRequest(account_id="acct_nope", feature="seats", value=to_value(3))), NOT_FOUND, "acct_nope"),
    ("grant/time out of range", lambda s: s.admin.CreateGrant(pb.CreateGrantRequest(account_id=A, feature="seats", value=to_value(3), starts_at=huge_ts)), INVALID, "starts_at"),
    ("revoke/unknown grant", lambda s: s.admin.RevokeGrant(pb.RevokeGrantRequest(account_id=A, grant_id="g_nope")), NOT_FOUND, "g_nope"),
    ("revoke/no grant id", lambda s: s.admin.RevokeGrant(pb.RevokeGrantRequest(account_id=A)), INVALID, "grant_id"),
    ("revoke/declared grant", lambda s: s.admin.RevokeGrant(pb.RevokeGrantRequest(account_id="acct_acme", grant_id="acct_acme/grant/0")), DECLARED, "catalog.yaml"),
    ("revoke/unknown grant on declared", lambda s: s.admin.RevokeGrant(pb.RevokeGrantRequest(account_id="acct_acme", grant_id="acct_acme/grants/9")), NOT_FOUND, "acct_acme"),
    ("grant/shadows a declared one", lambda s: s.admin.CreateGrant(pb.CreateGrantRequest(account_id="acct_acme", feature="seats", value=to_value(3), id="acct_acme/grant/0")), INVALID, "already exists"),
    ("reset/not metered", lambda s: s.admin.ResetUsage(pb.ResetUsageRequest(account_id=A, feature="sso")), INVALID, "not a metered feature"),
    ("reset/unknown account", lambda s: s.admin.ResetUsage(pb.ResetUsageRequest(account_id="acct_nope", feature="api-calls")), NOT_FOUND, "acct_nope"),
    ("reset/no feature", lambda s: s.admin.ResetUsage(pb.ResetUsageRequest(account_id=A)), INVALID, "feature"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "call", "code", "fragment"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
@pytest.mark.usefixtures("refusal_account")
def test_refused_requests_change_nothing(
    stubs: Stubs, name: str, call: Call, code: grpc.StatusCode, fragment: str
) -> None:
    before = fingerprint(stubs)
    with pytest.raises(grpc.RpcError) as info:
        call(stubs)
    details = info.value.details() or ""
    assert info.value.code() is code, details
    assert fragment in details, details
    assert details.split(":", 1)[0].isidentifier()  # names the RPC: "CreateSubscription: ..."
    assert fingerprint(stubs) == before
