"""The audit log over the wire (design §12): every Admin change appends one entry naming the
caller's token (`--token-file` lines `name:token`; a bare token is `token`; no token file is
`anonymous`), with the changed parts before and after; refused calls and reads append none;
`ListAuditLog` filters by account and time, pages newest first and refuses bad input. The
entries outlive `kill -9` of the sidecar right after the calls are acknowledged."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import from_struct
from support.sidecar import Stubs, SubprocessSidecar, copy_catalog, in_process

TOKENS = "# who may change what\nalice:tok-alice-0123456789\n\nci-bot:tok-bot-0123456789ab\nlegacy-secret-0123456\n"
Metadata = list[tuple[str, str]]
ALICE: Metadata = [("authorization", "Bearer tok-alice-0123456789")]
BOT: Metadata = [("authorization", "Bearer tok-bot-0123456789ab")]
LEGACY: Metadata = [("authorization", "Bearer legacy-secret-0123456")]
FUTURE = datetime.now(UTC) + timedelta(days=30)


def ts(at: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(at)
    return out


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("audit")
    tokens = d / "tokens"
    tokens.write_text(TOKENS)
    with in_process(copy_catalog(d), d / "state.db", token_file=str(tokens)) as sc:
        yield sc


def audit(stubs: Stubs, account: str = "", **fields: Any) -> list[pb.AuditEntry]:
    reply = stubs.admin.ListAuditLog(
        pb.ListAuditLogRequest(account_id=account, page_size=1000, **fields),
        metadata=ALICE,
        timeout=5,
    )
    return list(reply.entries)


def number(value: float) -> struct_pb2.Value:
    return struct_pb2.Value(number_value=value)


def test_every_admin_change_appends_one_entry_naming_the_token(stubs: Stubs) -> None:
    acct, sub, md = "acct_audited", "sub_audited", {"metadata": ALICE, "timeout": 5}
    a = stubs.admin
    a.UpsertAccount(pb.UpsertAccountRequest(id=acct, name="Audited"), **md)
    a.CreateSubscription(pb.CreateSubscriptionRequest(account_id=acct, plan="pro", id=sub), **md)
    a.ChangePlan(
        pb.ChangePlanRequest(account_id=acct, subscription_id=sub, plan="enterprise"), **md
    )
    a.ChangeAddOns(
        pb.ChangeAddOnsRequest(account_id=acct, subscription_id=sub, addons={"extra-seats": 2}),
        **md,
    )
    a.CancelSubscription(
        pb.CancelSubscriptionRequest(account_id=acct, subscription_id=sub, at=ts(FUTURE)), **md
    )
    a.ResumeSubscription(pb.ResumeSubscriptionRequest(account_id=acct, subscription_id=sub), **md)
    a.ChangePlan(
        pb.ChangePlanRequest(account_id=acct, subscription_id=sub, plan="pro", at=ts(FUTURE)), **md
    )
    a.CancelScheduledChange(
        pb.CancelScheduledChangeRequest(account_id=acct, subscription_id=sub), **md
    )
    a.AddMember(pb.MemberRequest(account_id=acct, subscription_id=sub, member_id="user_x"), **md)
    a.RemoveMember(pb.MemberRequest(account_id=acct, subscription_id=sub, member_id="user_x"), **md)
    a.SetOverride(pb.SetOverrideRequest(account_id=acct, feature="seats", value=number(9)), **md)
    a.ClearOverride(pb.ClearOverrideRequest(account_id=acct, feature="seats"), **md)
    a.CreateGrant(
        pb.CreateGrantRequest(account_id=acct, feature="exports", value=number(7), id="g1"), **md
    )
    a.RevokeGrant(pb.RevokeGrantRequest(account_id=acct, grant_id="g1"), **md)
    a.AddTopUp(pb.AddTopUpRequest(account_id=acct, feature="ai-credits", amount=50, id="t1"), **md)
    a.VoidTopUp(pb.VoidTopUpRequest(account_id=acct, topup_id="t1"), **md)
    stubs.usage.Report(
        pb.ReportRequest(reports=[pb.UsageReport(account_id=acct, feature="api-calls", amount=7)]),
        **md,
    )
    a.ResetUsage(pb.ResetUsageRequest(account_id=acct, feature="api-calls"), **md)
    # reads and refused changes append nothing
    a.GetAccount(pb.GetAccountRequest(id=acct), **md)
    with pytest.raises(grpc.RpcError) as info:
        a.SetOverride(pb.SetOverrideRequest(account_id=acct, feature="nope", value=number(1)), **md)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    a.DeleteAccount(pb.DeleteAccountRequest(id=acct), **md)
    assert not a.DeleteAccount(pb.DeleteAccountRequest(id=acct), **md).deleted  # nothing to log

    entries = audit(stubs, acct)
    assert [(e.action, e.target) for e in reversed(entries)] == [
        ("UpsertAccount", ""),
        ("CreateSubscription", sub),
        ("ChangePlan", sub),
        ("ChangeAddOns", sub),
        ("CancelSubscription", sub),
        ("ResumeSubscription", sub),
        ("ChangePlan", sub),
        ("CancelScheduledChange", sub),
        ("AddMember", sub),
        ("RemoveMember", sub),
        ("SetOverride", "seats"),
        ("ClearOverride", "seats"),
        ("CreateGrant", "g1"),
        ("RevokeGrant", "g1"),
        ("AddTopUp", "t1"),
        ("VoidTopUp", "t1"),
        ("ResetUsage", "api-calls"),
        ("DeleteAccount", ""),
    ]
    assert {e.actor for e in entries} == {"alice"}
    assert {e.account_id for e in entries} == {acct}
    assert [e.seq for e in entries] == sorted((e.seq for e in entries), reverse=True)
    by_action = {e.action: e for e in entries}  # the newest of each
    created, deleted = by_action["UpsertAccount"], by_action["DeleteAccount"]
    assert not created.HasField("before") and from_struct(created.after)["name"] == "Audited"
    assert from_struct(deleted.before)["id"] == acct and not deleted.HasField("after")
    override = by_action["SetOverride"]
    assert from_struct(override.before) == {"overrides": {}}
    assert from_struct(override.after) == {"overrides": {"seats": {"value": 9, "expires_at": None}}}
    reset = by_action["ResetUsage"]
    assert (from_struct(reset.before), from_struct(reset.after)) == ({"usage": 7}, {"usage": 0})


def test_each_token_is_named_and_a_bare_token_is_named_token(stubs: Stubs) -> None:
    for md in (BOT, LEGACY):
        stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_named"), metadata=md)
    assert [e.actor for e in audit(stubs, "acct_named")] == ["token", "ci-bot"]


def test_migrate_appends_one_entry_per_moved_subscription(stubs: Stubs) -> None:
    for acct in ("acct_mig_1", "acct_mig_2"):
        stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=acct), metadata=BOT)
        stubs.admin.CreateSubscription(
            pb.CreateSubscriptionRequest(account_id=acct, plan="free", id=f"{acct}-s"),
            metadata=BOT,
        )
    since = datetime.now(UTC)
    dry = pb.MigratePlanRequest(from_plan="free", to_plan="pro", at=ts(FUTURE), dry_run=True)
    stubs.admin.MigratePlan(dry, metadata=ALICE)
    assert audit(stubs, since=ts(since)) == []  # a dry run changes nothing
    reply = stubs.admin.MigratePlan(
        pb.MigratePlanRequest(from_plan="free", to_plan="pro", at=ts(FUTURE)), metadata=ALICE
    )
    moved = {(m.account_id, m.subscription_id) for m in reply.moves if not m.skipped}
    assert {("acct_mig_1", "acct_mig_1-s"), ("acct_mig_2", "acct_mig_2-s")} <= moved
    entries = audit(stubs, since=ts(since))
    assert {(e.account_id, e.target) for e in entries} == moved
    assert {(e.actor, e.action) for e in entries} == {("alice", "MigratePlan")}


def test_listing_filters_pages_newest_first_and_refuses_bad_input(stubs: Stubs) -> None:
    start = datetime.now(UTC)
    with pytest.raises(grpc.RpcError) as refused:  # a declared account: refused, logs nothing
        stubs.admin.SetOverride(
            pb.SetOverrideRequest(account_id="acct_acme", feature="seats", value=number(1)),
            metadata=ALICE,
        )
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    for i in range(5):
        stubs.admin.UpsertAccount(
            pb.UpsertAccountRequest(id="acct_pages", name=f"v{i}"), metadata=ALICE
        )
    assert audit(stubs, "acct_acme") == []
    everything = audit(stubs, "acct_pages", since=ts(start))
    assert len(everything) == 5
    assert [from_struct(e.after)["name"] for e in everything] == ["v4", "v3", "v2", "v1", "v0"]

    seen: list[int] = []
    token = ""
    while True:
        page = stubs.admin.ListAuditLog(
            pb.ListAuditLogRequest(account_id="acct_pages", page_size=2, page_token=token),
            metadata=ALICE,
        )
        assert len(page.entries) <= 2
        seen += [e.seq for e in page.entries]
        token = page.next_page_token
        if not token:
            break
    assert seen == [e.seq for e in everything]
    later = audit(stubs, since=everything[1].at)  # at or after the second newest
    assert [e.seq for e in later][:2] == [e.seq for e in everything[:2]]
    assert audit(stubs, since=ts(datetime.now(UTC) + timedelta(seconds=5))) == []

    for bad, words in (
        (pb.ListAuditLogRequest(page_token="seq-7"), "page_token"),
        (pb.ListAuditLogRequest(page_size=1001), "page_size"),
        (pb.ListAuditLogRequest(page_size=-1), "page_size"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stubs.admin.ListAuditLog(bad, metadata=ALICE)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert words in (info.value.details() or "")
    with pytest.raises(grpc.RpcError) as info:
        stubs.admin.ListAuditLog(pb.ListAuditLogRequest())  # no token: the log is protected
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_without_a_token_file_the_actor_is_anonymous(tmp_path: Path) -> None:
    with (
        in_process(copy_catalog(tmp_path), tmp_path / "state.db") as sc,
        Stubs(f"127.0.0.1:{sc.port}") as s,
    ):
        s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_open"))
        [entry] = s.admin.ListAuditLog(pb.ListAuditLogRequest()).entries
        assert (entry.actor, entry.action, entry.account_id) == (
            "anonymous",
            "UpsertAccount",
            "acct_open",
        )


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("alice:one\nalice:two\n", "name 'alice' is already used"),
        ("alice:same\nbob:same\n", "line 2: this token is already listed"),
        ("bad name:tok\n", "line 1: expected 'name:token'"),
        ("alice:\n", "line 1: expected 'name:token'"),
        ("# only a comment\n", "empty"),
    ],
)
def test_a_token_file_that_cannot_name_its_tokens_stops_start_up(
    tmp_path: Path, content: str, words: str
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(content)
    with (
        pytest.raises(ValueError, match=words),
        in_process(copy_catalog(tmp_path), tmp_path / "s.db", token_file=str(tokens)),
    ):
        pass


@pytest.mark.slow
def test_entries_of_acknowledged_changes_survive_kill_9(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    changes = 20
    sidecar = SubprocessSidecar(
        copy_catalog(tmp_path), tmp_path / "state.db", "--token-file", str(tokens)
    )
    with sidecar:
        with Stubs(sidecar.target) as s:
            for i in range(changes):
                s.admin.UpsertAccount(
                    pb.UpsertAccountRequest(id=f"acct_k{i % 3}", name=f"n{i}"),
                    metadata=BOT if i % 2 else ALICE,
                    timeout=10,
                )
        sidecar.kill()  # SIGKILL right after the last acknowledgement
        sidecar.start()
        with Stubs(sidecar.target) as s:
            entries = s.admin.ListAuditLog(
                pb.ListAuditLogRequest(page_size=1000), metadata=ALICE, timeout=10
            ).entries
    assert [from_struct(e.after)["name"] for e in reversed(entries)] == [
        f"n{i}" for i in range(changes)
    ]
    assert [e.actor for e in reversed(entries)] == [
        "ci-bot" if i % 2 else "alice" for i in range(changes)
    ]
