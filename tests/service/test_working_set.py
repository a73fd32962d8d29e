"""The working set (design §19): `--max-accounts N` holds at most N stored accounts and reads
the others from the store on first use, with the same answers as a sidecar holding them all."""

from __future__ import annotations

import http.client
import json
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_timestamp, to_value
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2 as flagd_pb
from plangate.sidecar.protocol.flagd.evaluation.v2 import evaluation_pb2_grpc as flagd_grpc
from support.sidecar import Stubs, copy_catalog, in_process, wait_for

PLANS = ("free", "pro", "enterprise")
METERED = ("api-calls", "seats", "exports", "ai-credits")


def stubs_of(sidecar: Any) -> Stubs:
    return Stubs(f"127.0.0.1:{sidecar.port}")


def metrics_of(sidecar: Any) -> dict[str, float]:
    url = f"http://127.0.0.1:{sidecar.management_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("plangate_working_set_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def answers(stubs: Stubs, account_id: str) -> list[tuple[Any, ...]]:
    """Every feature's answer, without what depends on the instant of asking."""
    res = stubs.evaluation.EvaluateAll(pb.EvaluateAllRequest(account_id=account_id), timeout=30)
    out: list[tuple[Any, ...]] = [(res.error_code,)]
    for key in sorted(res.resolutions):
        r = res.resolutions[key]
        out.append(
            (
                key,
                r.value.SerializeToString(deterministic=True),
                r.variant,
                r.reason,
                r.has_access,
                r.denial,
                r.error_code,
                r.metering.used,
                r.metering.limit,
                r.metering.remaining,
            )
        )
    return out


def populate(stubs: Stubs, count: int, rng: random.Random) -> list[str]:
    """`count` stored accounts with random plans, overrides, pools and usage."""
    ids = [f"acct_ws_{i:05d}" for i in range(count)]
    reports: list[pb.UsageReport] = []
    for i, account_id in enumerate(ids):
        stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account_id), timeout=10)
        members = [ids[i - 1]] if i % 7 == 3 else []  # some pools: the previous account is a member
        stubs.admin.CreateSubscription(
            pb.CreateSubscriptionRequest(
                account_id=account_id, plan=rng.choice(PLANS), members=members
            ),
            timeout=10,
        )
        if rng.random() < 0.2:
            stubs.admin.SetOverride(
                pb.SetOverrideRequest(account_id=account_id, feature="sso", value=to_value(True)),
                timeout=10,
            )
        for feature in rng.sample(METERED, 2):
            amount = float(rng.randint(0, 40))
            reports.append(pb.UsageReport(account_id=account_id, feature=feature, amount=amount))
    for start in range(0, len(reports), 500):
        stubs.usage.Report(pb.ReportRequest(reports=reports[start : start + 500]), timeout=60)
    return ids


def test_start_up_reads_no_accounts_and_the_set_stays_bounded(tmp_path: Path) -> None:
    catalog, db = copy_catalog(tmp_path), tmp_path / "state.db"
    with in_process(catalog, db) as full, stubs_of(full) as stubs:
        ids = populate(stubs, 40, random.Random(1))
        before = {i: answers(stubs, i) for i in ids}
    with in_process(catalog, db, max_accounts=5) as ws:
        assert ws.state.working.held == 0  # nothing read at start-up
        assert len(ws.state.records) == 0
        with stubs_of(ws) as stubs:
            for account_id in ids:
                assert answers(stubs, account_id) == before[account_id]
                assert len(ws.state.working) <= 5 + 1  # an owner loaded with its member
            assert answers(stubs, ids[-1]) == before[ids[-1]]  # held: a hit
        seen = metrics_of(ws)
        ready, detail = ws.readiness()
    assert ready and detail["working_set"]["max_accounts"] == 5
    assert seen["plangate_working_set_held_accounts"] <= 6
    assert seen["plangate_working_set_misses_total"] >= 30  # owners come with their members
    assert seen["plangate_working_set_hits_total"] >= 1
    assert seen["plangate_working_set_evictions_total"] >= 30
    assert seen["plangate_working_set_load_seconds_count"] >= 30


def test_answers_are_the_same_as_with_every_account_held(tmp_path: Path) -> None:
    """The differential test: thousands of random accounts, every feature, through a
    working-set sidecar and an unlimited one on the same store, also after admin changes
    and usage made through the working-set one."""
    rng = random.Random(19)
    catalog, db = copy_catalog(tmp_path), tmp_path / "state.db"
    with in_process(catalog, db) as full, stubs_of(full) as stubs:
        ids = populate(stubs, 2000, rng)
        expected = {i: answers(stubs, i) for i in ids}
    order = ids[:]
    rng.shuffle(order)
    changed = rng.sample(ids, 200)
    with in_process(catalog, db, max_accounts=100) as ws:
        with stubs_of(ws) as stubs:
            for account_id in order:
                assert answers(stubs, account_id) == expected[account_id], account_id
            for account_id in changed:  # edits and usage of accounts mostly not held
                stubs.admin.SetOverride(
                    pb.SetOverrideRequest(
                        account_id=account_id, feature="beta-dashboard", value=to_value(True)
                    ),
                    timeout=10,
                )
                stubs.usage.Consume(
                    pb.ConsumeRequest(account_id=account_id, feature="api-calls", amount=3),
                    timeout=10,
                )
            rng.shuffle(order)
            after = {i: answers(stubs, i) for i in order}
        assert ws.state.working.held <= 100 + 2
    with in_process(catalog, db) as full, stubs_of(full) as stubs:
        for account_id in ids:
            assert answers(stubs, account_id) == after[account_id], account_id
    assert any(after[i] != expected[i] for i in changed)


def test_consume_stays_exact_under_eviction_pressure(tmp_path: Path) -> None:
    catalog, db = copy_catalog(tmp_path), tmp_path / "state.db"
    with in_process(catalog, db) as full, stubs_of(full) as stubs:
        ids = populate(stubs, 300, random.Random(3))
        stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_hot"), timeout=10)
        stubs.admin.CreateSubscription(
            pb.CreateSubscriptionRequest(account_id="acct_hot", plan="free"), timeout=10
        )
        limit = stubs.evaluation.Evaluate(
            pb.EvaluateRequest(account_id="acct_hot", feature="api-calls"), timeout=10
        ).metering.limit
    assert 0 < limit < 5000
    granted: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    with in_process(catalog, db, max_accounts=3) as ws:

        def consumer() -> None:
            mine = 0
            try:
                with stubs_of(ws) as stubs:
                    for _ in range(int(limit) // 16 + 10):
                        res = stubs.usage.Consume(
                            pb.ConsumeRequest(account_id="acct_hot", feature="api-calls"),
                            timeout=30,
                        )
                        mine += res.granted
            except BaseException as exc:
                failures.append(exc)
            with lock:
                granted.append(mine)

        def sweeper(offset: int) -> None:
            try:
                with stubs_of(ws) as stubs:
                    for account_id in ids[offset::2]:
                        answers(stubs, account_id)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=consumer) for _ in range(16)]
        threads += [threading.Thread(target=sweeper, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert not failures, failures
        with stubs_of(ws) as stubs:
            used = stubs.evaluation.Evaluate(
                pb.EvaluateRequest(account_id="acct_hot", feature="api-calls"), timeout=10
            ).metering.used
        assert ws.state.working.stats.evictions > 100
    assert sum(granted) == limit
    assert used == limit


def test_an_unknown_account_is_remembered_and_a_load_failure_is_unavailable(
    tmp_path: Path,
) -> None:
    catalog, db = copy_catalog(tmp_path), tmp_path / "state.db"
    with in_process(catalog, db, max_accounts=10) as ws, stubs_of(ws) as stubs:
        res = stubs.evaluation.Evaluate(
            pb.EvaluateRequest(account_id="acct_nobody", feature="sso"), timeout=10
        )
        again = stubs.evaluation.Evaluate(
            pb.EvaluateRequest(account_id="acct_nobody", feature="sso"), timeout=10
        )
        assert res.denial == again.denial == "account_not_found"
        assert ws.state.working.stats.misses == 1  # the second is a hit on "unknown"
        stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_nobody"), timeout=10)
        stubs.admin.CreateSubscription(
            pb.CreateSubscriptionRequest(account_id="acct_nobody", plan="enterprise"),
            timeout=10,
        )
        created = stubs.evaluation.Evaluate(
            pb.EvaluateRequest(account_id="acct_nobody", feature="sso"), timeout=10
        )
        assert created.has_access
        ws.store._conn.execute("DROP TABLE usage")  # the store cannot answer a load
        with pytest.raises(grpc.RpcError) as failed:
            stubs.evaluation.Evaluate(
                pb.EvaluateRequest(account_id="acct_other", feature="sso"), timeout=10
            )
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
        held = stubs.evaluation.Evaluate(  # held accounts keep answering from memory
            pb.EvaluateRequest(account_id="acct_nobody", feature="sso"), timeout=10
        )
        assert held.has_access


def ofrep_post(sidecar: Any, path: str, account_id: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"context": {"targetingKey": account_id}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{sidecar.ofrep_port}/ofrep/v1/evaluate/flags{path}",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_flagd_and_ofrep_read_accounts_that_are_not_held(tmp_path: Path) -> None:
    catalog, db = copy_catalog(tmp_path), tmp_path / "state.db"
    with in_process(catalog, db) as full, stubs_of(full) as stubs:
        ids = populate(stubs, 12, random.Random(5))
        stubs.admin.CreateSubscription(
            pb.CreateSubscriptionRequest(account_id=ids[0], plan="enterprise"), timeout=10
        )
    with in_process(catalog, db, max_accounts=2) as ws:
        channel = grpc.insecure_channel(f"127.0.0.1:{ws.port}")
        flagd = flagd_grpc.ServiceStub(channel)
        context = struct_pb2.Struct()
        context.update({"targetingKey": ids[0]})
        res = flagd.ResolveBoolean(flagd_pb.ResolveBooleanRequest(flag_key="sso", context=context))
        assert res.value is True and res.reason == "TARGETING_MATCH"
        for account_id in ids[1:]:  # evicts ids[0]
            status, _ = ofrep_post(ws, "/sso", account_id)
            assert status == 200
        assert not ws.state.working.holds(ids[0])
        status, data = ofrep_post(ws, "/sso", ids[0])
        assert status == 200 and data["value"] is True
        status, data = ofrep_post(ws, "", ids[1])
        assert status == 200 and {f["key"] for f in data["flags"]} >= {"sso", "api-calls"}
        ws.store._conn.execute("DROP TABLE usage")  # the store cannot answer a load
        status, data = ofrep_post(ws, "/sso", "acct_not_held")
        assert status == 503, data
        context.update({"targetingKey": "acct_not_held_either"})
        with pytest.raises(grpc.RpcError) as failed:
            flagd.ResolveBoolean(flagd_pb.ResolveBooleanRequest(flag_key="sso", context=context))
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
        channel.close()


def _range(request: Any, start: datetime, end: datetime) -> Any:
    getattr(request, "from").CopyFrom(to_timestamp(start))
    request.to.CopyFrom(to_timestamp(end))
    return request


def test_lists_history_and_export_do_not_stop_at_the_held_accounts(tmp_path: Path) -> None:
    catalog, db = copy_catalog(tmp_path), tmp_path / "state.db"
    with in_process(catalog, db) as full, stubs_of(full) as stubs:
        ids = populate(stubs, 25, random.Random(7))
        everyone = list(stubs.admin.ListAccounts(pb.ListAccountsRequest(page_size=1000)).accounts)
    with in_process(catalog, db, max_accounts=3) as ws, stubs_of(ws) as stubs:
        listed: list[pb.Account] = []
        token = ""
        while True:  # pages of 7, each read from the store
            page = stubs.admin.ListAccounts(
                pb.ListAccountsRequest(page_size=7, page_token=token), timeout=10
            )
            listed.extend(page.accounts)
            token = page.next_page_token
            if not token:
                break
        assert [a.id for a in listed] == [a.id for a in everyone]
        assert listed == everyone
        assert ws.state.account_count() == len(everyone)
        now = datetime.now(UTC)
        history = stubs.usage.History(
            _range(
                pb.HistoryRequest(account_id=ids[0], feature="api-calls", window="day"),
                now - timedelta(days=1),
                now + timedelta(hours=1),
            ),
            timeout=10,
        )
        assert len(history.points) >= 1
        with pytest.raises(grpc.RpcError) as refused:
            list(stubs.usage.Export(_range(pb.ExportRequest(), now - timedelta(days=1), now)))
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "--max-accounts" in (refused.value.details() or "")


def test_an_account_with_an_open_ofrep_stream_stays_held(tmp_path: Path) -> None:
    catalog, db = copy_catalog(tmp_path), tmp_path / "state.db"
    with in_process(catalog, db) as full, stubs_of(full) as stubs:
        ids = populate(stubs, 8, random.Random(11))
    with in_process(catalog, db, max_accounts=2) as ws:
        status, data = ofrep_post(ws, "", ids[0])
        assert status == 200
        url = urllib.parse.urlsplit(data["eventStreams"][0]["url"])
        conn = http.client.HTTPConnection("127.0.0.1", ws.ofrep_port, timeout=10)
        conn.request("GET", f"{url.path}?{url.query}")
        stream = conn.getresponse()
        assert stream.status == 200
        assert stream.readline() == b": ready\n"
        for account_id in ids[1:]:
            assert ofrep_post(ws, "/sso", account_id)[0] == 200
        assert ws.state.working.holds(ids[0])  # the stream keeps it
        assert ws.state.working.stats.evictions >= 5
        conn.close()  # seen at the next keep-alive (at most 15 s): then it may be evicted
        wait_for(lambda: not ws.state.working.pinned(ids[0]), timeout=60, interval=0.2)
