"""The cached hot path: cache keys without `json.dumps` for empty contexts, resolutions
converted once per cache entry, and the metered cases that must still be re-derived.

Unit tests (no sidecar): the end-to-end equivalence with the sidecar's answers is covered by
test_provider_resolution.py and test_provider_cache.py, cache on and off.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import (
    FlagNotFoundError,
    GeneralError,
    TypeMismatchError,
)
from openfeature.flag_evaluation import FlagType
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_value
from plangate.provider.cache import Entry, ResolutionCache
from plangate.provider.evaluator import Evaluator, query
from plangate.provider.pending import PendingUsage

FEATURE = "api-calls"


def _canonical(shared: dict[str, Any]) -> str:
    """The cache key the provider has always used (it must not change meaning)."""
    return json.dumps(shared, sort_keys=True, separators=(",", ":"), default=str)


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"requested": 3},
        {"b": 1, "a": "x"},
        {"flag": True},
        {"flag": 1},
        {"region": "eu", "requested": 2, "when": datetime(2026, 1, 2, tzinfo=UTC)},
        {"tags": ["a", {"z": 1, "y": None}], "ratio": 0.5},
    ],
)
def test_the_cache_key_is_the_canonical_json_of_the_shared_context(attrs: dict[str, Any]) -> None:
    q = query(FEATURE, EvaluationContext("acct_a", attrs))
    shared = {
        k: v.isoformat() if isinstance(v, datetime) else v
        for k, v in attrs.items()
        if k != "requested"
    }
    expected = json.loads(_canonical(shared))
    assert q.key == ("acct_a", _canonical(shared))
    assert q.shared == expected
    assert q.requested == float(attrs.get("requested", 1))


def test_contexts_that_differ_only_in_type_get_different_keys() -> None:
    as_bool = query(FEATURE, EvaluationContext("acct_a", {"flag": True})).key
    as_int = query(FEATURE, EvaluationContext("acct_a", {"flag": 1})).key
    assert as_bool != as_int


def test_an_empty_context_gets_fresh_dicts_and_the_default_amount() -> None:
    first = query(FEATURE, EvaluationContext("acct_a"))
    second = query(FEATURE, EvaluationContext("acct_a"))
    assert first.key == second.key == ("acct_a", "{}")
    assert first.requested == 1.0
    assert first.context == first.shared == {}
    assert first.context is not second.context


def test_a_missing_targeting_key_is_left_to_the_sidecar() -> None:
    """Decision 2000: a feature with variants answers without a key, so the provider asks
    the sidecar (which answers TARGETING_KEY_MISSING for the others) and never caches it."""
    assert query(FEATURE, EvaluationContext(None, {"a": 1})).account == ""
    assert query(FEATURE, None).account == ""


def _boolean() -> pb.Resolution:
    res = pb.Resolution(
        feature="sso", feature_type="boolean", variant="pro", reason="TARGETING_MATCH"
    )
    res.has_access = True
    res.as_boolean = True
    res.as_object.CopyFrom(to_value({"enabled": True, "tags": ["x"]}))
    res.metadata.update({"plan": "pro", "weight": 2, "nested": {"dropped": True}})
    return res


def test_a_hit_replays_the_conversion_with_fresh_mutable_parts() -> None:
    entry = Entry("v1", {"sso": _boolean()})
    first = entry.outcome("sso", FlagType.BOOLEAN)
    assert first is not None
    assert entry.outcome("sso", FlagType.BOOLEAN) is first  # converted once

    a, b = first.details(), first.details()
    assert (a.value, a.variant, a.reason) == (True, "pro", "TARGETING_MATCH")
    assert a.flag_metadata == {"plan": "pro", "weight": 2}  # scalars only, ints as int
    assert type(a.flag_metadata) is dict
    a.flag_metadata["plan"] = "mutated"  # type: ignore[index]
    assert b.flag_metadata["plan"] == "pro"
    assert first.details().flag_metadata["plan"] == "pro"

    obj = entry.outcome("sso", FlagType.OBJECT)
    assert obj is not None
    x = obj.details().value
    assert x == {"enabled": True, "tags": ["x"]}
    x["tags"].append("leak")
    assert obj.details().value == {"enabled": True, "tags": ["x"]}


def test_errors_are_memoised_as_recipes_and_raised_afresh() -> None:
    failed = pb.Resolution(feature="x", error_code="PARSE_ERROR", error_message="bad")
    odd = pb.Resolution(feature="y", error_code="SOMETHING_NEW", error_message="huh")
    entry = Entry("v1", {"sso": _boolean(), "x": failed, "y": odd})

    mismatch = entry.outcome("sso", FlagType.STRING)
    assert mismatch is not None
    with pytest.raises(TypeMismatchError, match="resolve it as boolean, object") as one:
        mismatch.details()
    with pytest.raises(TypeMismatchError) as two:
        mismatch.details()
    assert one.value is not two.value

    parse = entry.outcome("x", FlagType.BOOLEAN)
    assert parse is not None
    with pytest.raises(Exception, match="bad") as err:
        parse.details()
    assert type(err.value).__name__ == "ParseError"

    general = entry.outcome("y", FlagType.BOOLEAN)
    assert general is not None
    with pytest.raises(GeneralError, match="SOMETHING_NEW: huh"):
        general.details()


def test_a_missing_feature_is_not_memoised() -> None:
    entry = Entry("v1", {})
    for _ in range(3):
        assert entry.outcome("nope", FlagType.BOOLEAN) is None
    assert not entry._outcomes


# -- metered: the adjusted path ---------------------------------------------------------------


def _metered(used: float, limit: float = 10.0) -> pb.Resolution:
    res = pb.Resolution(feature=FEATURE, feature_type="metered", reason="TARGETING_MATCH")
    res.metering.used = used
    res.metering.limit = limit
    res.metering.remaining = max(0.0, limit - used)
    res.has_access = used + 1 <= limit
    res.as_boolean = res.has_access
    res.as_integer = int(res.metering.remaining)
    res.as_float = res.metering.remaining
    res.metadata.update({"used": used, "remaining": res.metering.remaining})
    return res


def _evaluator(entries: dict[str, pb.Resolution]) -> tuple[Evaluator, PendingUsage]:
    """An evaluator whose cache already holds `entries` (account -> resolution).

    Its transport fails any call, so every answer below comes from the cache.
    """

    def no_rpc(*_: Any, **__: Any) -> Any:
        raise AssertionError("the cache should have answered")

    stub = SimpleNamespace(Evaluate=no_rpc, EvaluateAll=no_rpc)
    transport: Any = SimpleNamespace(
        config=SimpleNamespace(deadline=1.0, target="test"), evaluation=stub, metadata=()
    )
    cache = ResolutionCache(16)
    cache.activate()
    for account, res in entries.items():
        assert cache.put(cache.begin((account, "{}")), Entry("v1", {FEATURE: res}))
    pending = PendingUsage()
    return Evaluator(transport, cache, pending, SimpleNamespace(watch_id="")), pending


def _check(evaluator: Evaluator, account: str, **attrs: Any) -> tuple[bool, int]:
    ctx = EvaluationContext(account, attrs)
    allowed = evaluator.resolve(FEATURE, FlagType.BOOLEAN, ctx).value
    remaining = evaluator.resolve(FEATURE, FlagType.INTEGER, ctx).value
    return allowed, remaining


def test_metered_hits_follow_pending_usage_and_requested() -> None:
    evaluator, pending = _evaluator({"acct_a": _metered(used=8)})
    assert _check(evaluator, "acct_a") == (True, 2)
    assert _check(evaluator, "acct_a", requested=2) == (True, 2)
    assert _check(evaluator, "acct_a", requested=3) == (False, 2)

    pending.add(1, "acct_a", FEATURE, 2, is_set=False)  # tracked, not yet acknowledged
    details = evaluator.resolve(FEATURE, FlagType.BOOLEAN, EvaluationContext("acct_a"))
    assert details.value is False
    assert details.flag_metadata["used"] == 10
    assert _check(evaluator, "acct_a") == (False, 0)

    pending.settle(1, "acct_a", FEATURE)
    assert _check(evaluator, "acct_a") == (True, 2)  # back to the memoised answer


def test_hits_are_never_shared_across_accounts() -> None:
    evaluator, pending = _evaluator({"acct_a": _metered(used=8), "acct_b": _metered(used=10)})
    assert _check(evaluator, "acct_a") == (True, 2)
    assert _check(evaluator, "acct_b") == (False, 0)
    pending.add(1, "acct_b", FEATURE, 5, is_set=True)
    assert _check(evaluator, "acct_b") == (True, 5)
    assert _check(evaluator, "acct_a") == (True, 2)


def test_an_unknown_feature_on_a_hit_is_flag_not_found() -> None:
    evaluator, _ = _evaluator({"acct_a": _metered(used=0)})
    with pytest.raises(FlagNotFoundError, match="'nope' in catalog v1"):
        evaluator.resolve("nope", FlagType.BOOLEAN, EvaluationContext("acct_a"))
