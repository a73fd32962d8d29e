"""The provider's re-derivation of a cached metered answer agrees with the engine (design §15).

The plain-limit table below checks every combination of a few limits; the property at the end
draws allowances, top-ups, credit pools, stored usage and `track` overlays at random, and
checks that what the provider derives from its cached answer is what the engine answers once
that usage is written through the real write rule.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.provider.metering import adjusted
from plangate.provider.pending import PendingUsage
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.catalog.model import Catalog
from plangate.sidecar.engine import StateView, UsageReport, evaluate
from plangate.sidecar.engine.write_rule import BatchReads, CounterKey, apply_batch
from plangate.sidecar.runtime.live.state import Counters
from plangate.sidecar.runtime.writes.usage_write import usage_write
from plangate.sidecar.server.convert import resolution

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


class Used:
    """A usage view with one level for every counter."""

    def __init__(self, level: float) -> None:
        self.level = level

    def used(self, scope_key: str, feature: str, period_start: datetime) -> float:
        return self.level


def limit_text(limit: int | None, soft: bool, cap: int | None) -> str:
    if limit is None:
        return "unlimited"
    fields = [f"limit: {limit}", f"soft: {str(soft).lower()}"]
    if cap is not None:
        fields.append(f"overage_cap: {cap}")
    return "{" + ", ".join(fields) + "}"


LIMITS = [
    (None, False, None),
    (0, False, None),
    (10, False, None),
    (10, True, None),
    (10, True, 0),
    (10, True, 5),
]


@pytest.mark.parametrize(("limit", "soft", "cap"), LIMITS)
def test_provider_rederivation_matches_engine(
    limit: int | None, soft: bool, cap: int | None
) -> None:
    catalog = parse_catalog(
        f"""\
products:
  - name: Acme
    features:
      - {{name: API calls, type: metered, reset: monthly}}
    plans:
      - name: Plan
        entitlements: {{api-calls: {limit_text(limit, soft, cap)}}}
accounts:
  - {{id: acct, subscriptions: [{{plan: plan}}]}}
"""
    )
    feature = catalog.features["api-calls"]
    cached = resolution(
        evaluate(StateView.of(catalog, Used(0)), "acct", "api-calls", {}, NOW), feature
    )
    for used, requested in itertools.product(
        [0, 4, 9, 10, 11, 14, 15, 16, 30], [0, 1, 5, 6, 11, 16]
    ):
        truth = evaluate(
            StateView.of(catalog, Used(used)), "acct", "api-calls", {"requested": requested}, NOW
        )
        derived = adjusted(cached, used=float(used), requested=float(requested), computed_for=1.0)
        case = (limit, soft, cap, used, requested)
        assert derived.has_access == truth.has_access, case
        assert derived.denial == (truth.denial.value if truth.denial else ""), case
        assert truth.metering is not None
        assert derived.metering.used == truth.metering.used, case
        if truth.metering.remaining is not None:
            assert derived.metering.remaining == truth.metering.remaining, case


# -- the property: top-ups, pools and `track` overlays ---------------------------------------

Limit = tuple[int, bool, int | None] | None  # (limit, soft, overage_cap); None: unlimited
TopUps = list[tuple[int, int]]  # (amount, priority)


def limits(most: int, caps: int) -> st.SearchStrategy[Limit]:
    """Unlimited, or a hard or soft limit up to `most` (soft ones with or without a cap)."""
    soft = st.tuples(st.integers(0, most), st.just(True), st.none() | st.integers(0, caps))
    hard = st.tuples(st.integers(0, most), st.just(False), st.none())
    return st.none() | hard | soft


LIMIT = limits(30, 10)
POOL_LIMIT = limits(120, 20)
TOPUPS: st.SearchStrategy[TopUps] = st.lists(
    st.tuples(st.integers(1, 20), st.integers(1, 3)), max_size=3
)


def balances_catalog(
    own: Limit, topups: TopUps, per_unit: float | None, pool: Limit, pool_topups: TopUps
) -> Catalog:
    """One account on one plan: `chat` (credit-priced when `per_unit` is given) and its pool."""
    price = "" if per_unit is None else f", credits: {{pool: credits, per_unit: {per_unit}}}"
    listed = [("chat", i, a, p) for i, (a, p) in enumerate(topups)]
    listed += [("credits", i, a, p) for i, (a, p) in enumerate(pool_topups)]
    lines = "".join(
        f"      - {{id: {f}-{i}, feature: {f}, amount: {a}, priority: {p}}}\n"
        for f, i, a, p in listed
    )
    return parse_catalog(
        f"""\
products:
  - name: Acme
    features:
      - {{name: Credits, type: credits, reset: monthly}}
      - {{name: Chat, type: metered, reset: monthly{price}}}
    plans:
      - name: Plan
        entitlements:
          credits: {limit_text(*pool) if pool else "unlimited"}
          chat: {limit_text(*own) if own else "unlimited"}
accounts:
  - id: acct
    subscriptions: [{{plan: plan}}]
"""
        + (f"    topups:\n{lines}" if lines else "")
    )


def written(
    catalog: Catalog, values: dict[CounterKey, float], reports: list[tuple[str, int]]
) -> None:
    """`reports` ((feature, amount), in order) written into `values` as Report writes them:
    the one usage-write builder, then the engine's per-write rule (burns, pool moves)."""
    for feature, amount in reports:
        snap = StateView.of(catalog, Counters(values))
        report = UsageReport("acct", feature, float(amount))
        write = usage_write(
            snap, report, catalog.features[feature], at=NOW, now=NOW, environment="test"
        )
        values.update(apply_batch([write], BatchReads({}, values)).values)


def shown(res: pb.Resolution) -> dict[str, Any]:
    """Everything a caller reads from a resolution but each top-up's own detail entry (the
    provider does not re-derive those; the totals it does)."""
    out = json_format.MessageToDict(res)
    out.get("asObject", {}).pop("topups", None)
    return out


@settings(max_examples=300, deadline=None)
@given(
    own=LIMIT,
    topups=TOPUPS,
    per_unit=st.one_of(st.none(), st.sampled_from([0.5, 1.0, 2.0, 5.0])),
    pool=POOL_LIMIT,
    pool_topups=TOPUPS,
    stored=st.lists(
        st.tuples(st.sampled_from(["chat", "credits"]), st.integers(-6, 25)), max_size=5
    ),
    tracked=st.lists(
        st.tuples(st.sampled_from(["chat", "credits"]), st.integers(0, 15)), max_size=3
    ),
    requested=st.sampled_from([0.0, 1.0, 2.0, 5.0, 11.0, 40.0]),
)
def test_provider_rederivation_matches_engine_with_balances(
    own: Limit,
    topups: TopUps,
    per_unit: float | None,
    pool: Limit,
    pool_topups: TopUps,
    stored: list[tuple[str, int]],
    tracked: list[tuple[str, int]],
    requested: float,
) -> None:
    catalog = balances_catalog(own, topups, per_unit, pool, pool_topups)
    feature = catalog.features["chat"]
    values: dict[CounterKey, float] = {}
    written(catalog, values, stored)
    cached = resolution(
        evaluate(StateView.of(catalog, Counters(dict(values))), "acct", "chat", {}, NOW), feature
    )
    pending = PendingUsage()  # what the provider's `track` queued, priced as it learns
    m = cached.metering
    if m.pool:
        pending.learn_price("chat", m.pool, m.per_unit)
    for seq, (key, amount) in enumerate(tracked):
        pending.add(seq, "acct", key, float(amount), False)
    derived = adjusted(
        cached,
        used=pending.used("acct", "chat", m.used),
        requested=requested,
        computed_for=1.0,
        pool_used=pending.used("acct", m.pool, m.pool_used) if m.pool else None,
    )
    written(catalog, values, tracked)  # the sidecar, once the tracked reports arrive
    truth = resolution(
        evaluate(
            StateView.of(catalog, Counters(values)), "acct", "chat", {"requested": requested}, NOW
        ),
        feature,
    )
    assert shown(derived) == shown(truth)
