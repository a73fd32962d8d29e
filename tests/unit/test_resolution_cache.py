"""`server.resolution_cache`: EvaluateAll from cached encodings is exactly the uncached answer.

The cache is keyed on the whole decision; these check that every way a decision can change
(usage, time zone of an instant, a value equal in Python but rendered differently) gives the
freshly converted resolution and never a neighbour's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta, timezone
from typing import Any

import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.engine import ErrorCode, EvaluationError, StateView, evaluate, kinds_of
from plangate.sidecar.runtime.serve.decisions import Evaluated
from plangate.sidecar.server.convert import error_resolution, resolution
from plangate.sidecar.server.resolution_cache import ResolutionCache, _key
from support.typed_table import CATALOG, JUNE, NOW, TABLE


@pytest.fixture
def snap(usage: Any) -> StateView:
    usage.set("acct:pro", "calls", JUNE, 30.5)
    return StateView.of(parse_catalog(CATALOG), usage)


def uncached(results: Mapping[str, Evaluated | EvaluationError]) -> dict[str, pb.Resolution]:
    return {
        key: error_resolution(key, r)
        if isinstance(r, EvaluationError)
        else resolution(r.decision, r.feature)
        for key, r in results.items()
    }


def response(
    cache: ResolutionCache, account: str, version: str, results: dict[str, Any]
) -> pb.EvaluateAllResponse:
    """The response as a client reads it (the cache hands out its encoding)."""
    return pb.EvaluateAllResponse.FromString(cache.encoded(account, version, results))


def every_feature(snap: StateView, account: str) -> dict[str, Evaluated | EvaluationError]:
    return {
        key: Evaluated(evaluate(snap, account, key, {}, NOW), snap.catalog.features[key])
        for key in TABLE
    }


def test_cached_responses_equal_converted_ones_for_every_feature(snap: StateView) -> None:
    cache = ResolutionCache()
    results = every_feature(snap, "pro")
    results["gone"] = EvaluationError(ErrorCode.FLAG_NOT_FOUND, "no feature 'gone'")
    for _ in range(3):  # the first call fills the cache, the others read it
        out = response(cache, "pro", "v1", results)
        assert out.account_id == "pro" and out.catalog_version == "v1"
        assert dict(out.resolutions) == uncached(results)


def test_a_changed_decision_is_converted_anew(snap: StateView, usage: Any) -> None:
    cache = ResolutionCache()
    before = every_feature(snap, "pro")
    response(cache, "pro", "v1", before)
    usage.set("acct:pro", "calls", JUNE, 31.5)  # usage moved: the metered decision differs
    after = every_feature(snap, "pro")
    assert dict(response(cache, "pro", "v1", after).resolutions) == uncached(after)
    assert uncached(after) != uncached(before)


def test_equal_but_differently_rendered_decisions_are_kept_apart(snap: StateView) -> None:
    cache = ResolutionCache()
    key = next(k for k in TABLE if snap.catalog.features[k].type.value == "metered")
    found = evaluate(snap, "pro", key, {}, NOW)
    feature = snap.catalog.features[key]
    utc = Evaluated(replace(found, valid_until=NOW + timedelta(days=3)), feature)
    plus_one = timezone(timedelta(hours=1))
    # the same instant in another zone: == in Python, another ISO text in the metadata
    other_zone = Evaluated(
        replace(found, valid_until=(NOW + timedelta(days=3)).astimezone(plus_one)), feature
    )
    for results in ({key: utc}, {key: other_zone}):
        assert dict(response(cache, "pro", "v1", results).resolutions) == uncached(results)
    # 1 == True in Python (and hash alike): the key tells them apart
    plain = replace(found, metering=None, valid_until=None)
    assert _key(key, replace(plain, value=1)) != _key(key, replace(plain, value=True))
    assert _key(key, replace(found, value=1)) != _key(key, replace(found, value=True))


def test_list_decisions_differing_in_any_field_are_kept_apart(snap: StateView) -> None:
    cache = ResolutionCache()
    key = next(k for k in TABLE if snap.catalog.features[k].type.value == "list")
    feature = snap.catalog.features[key]
    found = evaluate(snap, "pro", key, {}, NOW)
    variants = [
        replace(found, value=["a"]),
        replace(found, value=["a", "b"]),
        replace(found, value=["a", "b"], valid_until=NOW + timedelta(days=1)),
        replace(found, value=["a", "b"], valid_until=NOW + timedelta(days=2)),
    ]
    for decision in variants:
        results: dict[str, Evaluated | EvaluationError] = {key: Evaluated(decision, feature)}
        assert dict(response(cache, "pro", "v1", results).resolutions) == uncached(results)


def test_a_new_catalog_version_drops_the_entries(snap: StateView) -> None:
    cache = ResolutionCache()
    response(cache, "pro", "v1", every_feature(snap, "pro"))
    assert len(cache._entries) > 0
    response(cache, "pro", "v2", {})
    assert cache._entries == {}


def test_the_cache_is_bounded(snap: StateView) -> None:
    cache = ResolutionCache(max_entries=3)
    response(cache, "pro", "v1", every_feature(snap, "pro"))
    assert len(cache._entries) > 3  # one response may exceed it; the next one starts afresh
    other = every_feature(snap, "nobody")
    assert dict(response(cache, "nobody", "v1", other).resolutions) == uncached(other)
    # only the unknown account's resolutions are left
    wanted = set()
    for key, res in uncached(other).items():
        one = pb.EvaluateAllResponse()
        one.resolutions[key].CopyFrom(res)
        wanted.add(one.SerializeToString())
    assert set(cache._entries.values()) <= wanted


def test_single_resolutions_equal_converted_ones_for_every_kind(snap: StateView) -> None:
    """`Evaluate`'s path: the cached encoding of (decision, kind asked) is the conversion of
    that decision to that kind, never another kind's or another account's."""
    cache = ResolutionCache()
    for account in ("pro", "nobody", "pro"):  # the second "pro" reads what the first filled
        for key, found in every_feature(snap, account).items():
            assert isinstance(found, Evaluated)
            for kind in (None, *kinds_of(found.feature.type)):
                got = pb.Resolution.FromString(cache.encoded_one("v1", found, kind, False))
                assert got == resolution(found.decision, found.feature, kind), (key, kind)
    assert cache._singles


def test_a_context_dependent_single_is_marked_and_not_kept(snap: StateView) -> None:
    cache = ResolutionCache()
    key = next(k for k in TABLE if snap.catalog.features[k].type.value == "metered")
    found = Evaluated(evaluate(snap, "pro", key, {}, NOW), snap.catalog.features[key])
    assert not pb.Resolution.FromString(
        cache.encoded_one("v1", found, None, False)
    ).context_dependent
    marked = pb.Resolution.FromString(cache.encoded_one("v1", found, None, True))
    assert marked.context_dependent
    assert not pb.Resolution.FromString(
        cache.encoded_one("v1", found, None, False)
    ).context_dependent


def test_singles_are_dropped_with_a_new_catalog_version(snap: StateView) -> None:
    cache = ResolutionCache()
    key = next(iter(TABLE))
    found = Evaluated(evaluate(snap, "pro", key, {}, NOW), snap.catalog.features[key])
    cache.encoded_one("v1", found, None, False)
    assert cache._singles
    cache.encoded_one(
        "v2", replace(found, decision=replace(found.decision, variant="other")), None, False
    )
    assert len(cache._singles) <= 1 and cache._version == "v2"
