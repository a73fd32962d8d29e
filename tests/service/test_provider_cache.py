"""The provider's cache (design §8): per account, invalidated by Watch events within
milliseconds, updated at once by `track`, bounded, and never serving one account's answer
to another. "Served from the cache" is checked on the sidecar's own /metrics counters.
"""

from __future__ import annotations

import time
from typing import Any

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.track import TrackingEventDetails
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.provider.cache import Entry, ResolutionCache
from support.provider import native_used, new_account, provider, rpc_count
from support.sidecar import Stubs, wait_for


def _calls(sidecar: Any) -> tuple[int, int]:
    port = sidecar.management_port
    return rpc_count(port, "EvaluateAll"), rpc_count(port, "Evaluate")


def test_repeated_checks_are_answered_from_the_cache(sidecar: Any) -> None:
    with provider(f"127.0.0.1:{sidecar.port}"):
        client = api.get_client()
        ctx = EvaluationContext("acct_acme")
        assert client.get_boolean_value("sso", False, ctx) is True
        before = _calls(sidecar)
        for _ in range(200):
            assert client.get_boolean_value("sso", False, ctx) is True
            assert client.get_integer_value("execution-concurrency", 0, ctx) == 25
        assert _calls(sidecar) == before, "cached evaluations must not call the sidecar"


def test_cache_off_asks_the_sidecar_every_time(sidecar: Any) -> None:
    with provider(f"127.0.0.1:{sidecar.port}", env={"PLANGATE_CACHE": "off"}):
        client = api.get_client()
        ctx = EvaluationContext("acct_acme")
        all_before, one_before = _calls(sidecar)
        for _ in range(20):
            assert client.get_boolean_value("sso", False, ctx) is True
        all_after, one_after = _calls(sidecar)
        assert one_after - one_before == 20 and all_after == all_before


def test_admin_change_is_visible_within_100_ms(sidecar: Any, stubs: Stubs) -> None:
    sub = new_account(stubs, "acct_upgrade", plan="free")
    with provider(f"127.0.0.1:{sidecar.port}"):
        client = api.get_client()
        ctx = EvaluationContext("acct_upgrade")
        assert client.get_boolean_value("sso", True, ctx) is False
        assert client.get_boolean_value("sso", True, ctx) is False  # now cached
        for plan, sso in (("pro", True), ("free", False), ("enterprise", True)):
            stubs.admin.ChangePlan(
                pb.ChangePlanRequest(account_id="acct_upgrade", subscription_id=sub, plan=plan),
                timeout=5,
            )
            changed_at = time.monotonic()
            while client.get_boolean_value("sso", not sso, ctx) is not sso:
                assert time.monotonic() - changed_at < 1.0, f"{plan} never became visible"
            elapsed = time.monotonic() - changed_at
            assert elapsed < 0.1, f"{plan}: took {elapsed * 1000:.0f} ms"


def test_one_accounts_answer_never_serves_another(sidecar: Any, stubs: Stubs) -> None:
    expected = {
        "acct_acme": ("email", True),
        "acct_globex": ("priority", True),
        "acct_initech": ("community", False),
        "user_ann": ("email", True),
        "acct_stranger": ("community", False),
    }
    with provider(f"127.0.0.1:{sidecar.port}"):
        client = api.get_client()
        for _ in range(3):  # interleaved, so a shared entry would show up
            for account, (tier, sso) in expected.items():
                ctx = EvaluationContext(account)
                assert client.get_string_value("support-tier", "?", ctx) == tier, account
                assert client.get_boolean_value("sso", not sso, ctx) is sso, account

        # An event about one account leaves the others cached.
        before = _calls(sidecar)
        new_account(stubs, "acct_bystander", plan="pro")
        time.sleep(0.05)  # let the account_changed event arrive
        ctx = EvaluationContext("acct_acme")
        for _ in range(20):
            assert client.get_string_value("support-tier", "?", ctx) == "email"
        assert _calls(sidecar) == before


def test_same_account_with_different_context_is_not_shared(sidecar: Any) -> None:
    with provider(f"127.0.0.1:{sidecar.port}"):
        client = api.get_client()
        plain = EvaluationContext("acct_initech")
        asks_much = EvaluationContext("acct_initech", {"requested": 5000})
        assert client.get_boolean_value("api-calls", False, plain) is True
        assert client.get_boolean_value("api-calls", True, asks_much) is False
        assert client.get_boolean_value("api-calls", False, plain) is True


def test_track_updates_cached_usage_at_once(sidecar: Any, stubs: Stubs) -> None:
    new_account(stubs, "acct_tracked", plan="free")  # api-calls: hard limit 1000
    with provider(f"127.0.0.1:{sidecar.port}") as p:
        client = api.get_client()
        ctx = EvaluationContext("acct_tracked")
        assert client.get_integer_value("api-calls", -1, ctx) == 1000

        client.track("api-calls", ctx, TrackingEventDetails(value=7))
        details = client.get_integer_details("api-calls", -1, ctx)  # no waiting at all
        assert details.value == 993
        assert details.flag_metadata["used"] == 7 and details.flag_metadata["remaining"] == 993

        client.track("api-calls", ctx, TrackingEventDetails(value=993))
        assert client.get_boolean_value("api-calls", True, ctx) is False
        denied = client.get_boolean_details("api-calls", True, ctx)
        assert denied.flag_metadata["denial"] == "usage_limit_reached"

        # Once delivered, the sidecar's number takes over: counted once, not twice.
        wait_for(lambda: p.pending_reports == 0, timeout=5)
        wait_for(lambda: native_used(stubs, "acct_tracked", "api-calls") == 1000, timeout=5)
        wait_for(lambda: client.get_integer_value("api-calls", -1, ctx) == 0, timeout=2)
        stable = [client.get_integer_details("api-calls", -1, ctx) for _ in range(50)]
        assert {d.flag_metadata["used"] for d in stable} == {1000}


def test_lru_keeps_at_most_max_entries_and_evicts_the_oldest() -> None:
    cache = ResolutionCache(max_entries=2)
    cache.activate()
    for account in ("a", "b", "c"):
        cache.put(cache.begin((account, "{}")), Entry("v1", {}))
    assert len(cache) == 2
    assert cache.get(("a", "{}")) is None
    assert cache.get(("b", "{}")) is not None  # b is now the most recent
    cache.put(cache.begin(("d", "{}")), Entry("v1", {}))
    assert cache.get(("c", "{}")) is None and cache.get(("b", "{}")) is not None


def test_a_fetch_overtaken_by_an_invalidation_is_not_stored() -> None:
    cache = ResolutionCache(max_entries=10)
    cache.activate()
    fetch = cache.begin(("a", "{}"))
    cache.invalidate_accounts(["a"])  # arrives while the EvaluateAll is in flight
    assert cache.put(fetch, Entry("v1", {})) is False
    other = cache.begin(("b", "{}"))
    cache.invalidate_accounts(["a"])
    assert cache.put(other, Entry("v1", {})) is True
    cache.deactivate()
    assert len(cache) == 0
    assert cache.put(cache.begin(("b", "{}")), Entry("v1", {})) is False


def test_small_cache_stays_correct_under_eviction(sidecar: Any) -> None:
    with provider(f"127.0.0.1:{sidecar.port}", cache_size=1):
        client = api.get_client()
        for _ in range(5):
            assert client.get_boolean_value("sso", False, EvaluationContext("acct_acme"))
            assert not client.get_boolean_value("sso", True, EvaluationContext("acct_initech"))
