"""The provider's re-derivation of a cached metered answer agrees with the engine (design §15)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from plangate.provider.metering import adjusted
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.engine import StateView, evaluate
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
