"""Rate windows (design §17) without a server: the catalog's `type: rate`, the sliding-window
counter, the sidecar's in-memory windows and the evaluation of a rate feature."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from plangate.sidecar.catalog import CatalogError, parse_catalog
from plangate.sidecar.catalog.model import Catalog
from plangate.sidecar.engine import StateView, evaluate, rates
from plangate.sidecar.engine.typed import Kind, resolve_as
from plangate.sidecar.runtime.live.rates import RateWindows

CATALOG = """\
products:
  - name: Acme
    features:
      - name: API rate
        type: rate
        window: minute
    plans:
      - {name: Free, entitlements: {api-rate: 60}}
    addons:
      - {name: Burst, max_quantity: 3, entitlements: {api-rate: 30}}
accounts:
  - {id: free, subscriptions: [{plan: free}]}
  - {id: burst, subscriptions: [{plan: free, addons: {burst: 2}}]}
  - id: vip
    subscriptions: [{plan: free}]
    overrides: {api-rate: 1000}
  - {id: nobody}
"""


def problem_of(text: str) -> str:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "catalog.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        (
            "window: minute",
            "window: day",
            "catalog.yaml:6 products[0].features[0].window",
            "second, minute, hour",
        ),
        (
            "        window: minute\n",
            "",
            "catalog.yaml:4 products[0].features[0].window",
            "is required",
        ),
        (
            "window: minute",
            "window: minute\n        reset: monthly",
            "catalog.yaml:7 products[0].features[0].reset",
            "applies to metered",
        ),
        (
            "window: minute",
            "window: minute\n        credits: {pool: x}",
            "catalog.yaml:7 products[0].features[0].credits",
            "applies to metered",
        ),
        (
            "{api-rate: 60}",
            "{api-rate: {limit: 60, soft: true}}",
            "catalog.yaml:8 products[0].plans[0].entitlements.api-rate",
            "no soft limit",
        ),
        (
            "{api-rate: 60}}",
            "{api-rate: 60}, quotas: [{feature: api-rate, at: [80]}]}",
            "catalog.yaml:8 products[0].plans[0].quotas[0].feature",
            "quotas apply to metered features",
        ),
        (
            "window: minute",
            "window: minute\n        variants: {a: 1}",
            "catalog.yaml:7 products[0].features[0].variants",
            "cannot have variants or targeting",
        ),
    ],
    ids=["bad-window", "no-window", "reset", "credits", "soft", "quotas", "variants"],
)
def test_catalog_errors_name_file_line_and_path(
    old: str, new: str, where: str, message: str
) -> None:
    text = CATALOG.replace(old, new, 1)
    assert text != CATALOG
    problem = problem_of(text)
    assert problem.startswith(where), problem
    assert message in problem


def test_a_rate_feature_takes_no_top_ups() -> None:
    text = CATALOG.replace(
        "  - {id: nobody}", "  - {id: nobody, topups: [{feature: api-rate, amount: 5}]}"
    )
    assert "top-ups apply to sum metered" in problem_of(text)


def test_the_window_counts_the_previous_bucket_by_its_share_of_the_sliding_window() -> None:
    b = rates.counted(None, 60.0, 60.0, 40)  # bucket [60, 120)
    b = rates.counted(b, 60.0, 119.0, 20)
    assert rates.count(b, 60.0, 119.0) == 60
    assert rates.count(b, 60.0, 150.0) == pytest.approx(30)  # half of [60,120) still covered
    assert rates.count(b, 60.0, 180.0) == 0  # a whole window later: nothing
    assert rates.stale(b, 60.0, 180.0) and not rates.stale(b, 60.0, 179.0)
    assert rates.remaining(59.5, 60) == 0 and rates.remaining(10.2, 60) == 49


def test_admits_up_to_the_limit_then_recovers_as_the_window_slides() -> None:
    windows = RateWindows()
    key = ("a", "api-rate")
    granted = [windows.admit(key, 60.0, 120.0 + i * 0.1, 1, 10)[0].granted for i in range(12)]
    assert granted == [True] * 10 + [False, False]
    refused = windows.admit(key, 60.0, 121.5, 1, 10)[0]
    assert refused.denial == "rate_limited" and refused.used == 10
    # at 186 the bucket [120,180) counts (1 - 6/60) * 10 = 9: one more fits
    assert windows.admit(key, 60.0, 186.0, 1, 10)[0].granted
    assert not windows.admit(key, 60.0, 186.0, 1, 10)[0].granted
    assert windows.admit(key, 60.0, 300.0, 10, 10)[0].granted  # a fresh window
    assert not windows.admit(key, 60.0, 300.0, 11, None)[0].denial  # unlimited


def test_an_idle_window_is_dropped_and_a_repeated_key_answers_the_first_result() -> None:
    windows = RateWindows()
    windows.admit(("a", "api-rate"), 1.0, 10.0, 1, 5)
    assert len(windows) == 1
    windows.admit(("b", "api-rate"), 1.0, 12.0, 1, 5)  # a's window is two seconds old
    assert len(windows) == 1
    first, dup = windows.admit(("b", "api-rate"), 1.0, 12.1, 5, 5, "k1")
    assert not first.granted and not dup
    again, dup = windows.admit(("b", "api-rate"), 1.0, 12.5, 1, 5, "k1")
    assert again == first and dup
    later, dup = windows.admit(("b", "api-rate"), 1.0, 13.2, 1, 5, "k1")  # a window later
    assert later.granted and not dup


def _view(catalog: Catalog, windows: RateWindows) -> StateView:
    plain = StateView.of(catalog)
    return StateView(plain.catalog, plain.accounts, plain.memberships, rates=windows)


@pytest.mark.parametrize(("account", "limit"), [("free", 60), ("burst", 120), ("vip", 1000)])
def test_evaluation_answers_the_window_with_the_most_generous_limit(
    account: str, limit: int
) -> None:
    windows = RateWindows()
    now = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    windows.admit((account, "api-rate"), 60.0, now.timestamp(), 45, limit)
    decision = evaluate(
        _view(parse_catalog(CATALOG, "c.yaml"), windows), account, "api-rate", {}, now
    )
    assert decision.has_access and decision.metering is not None
    assert decision.metering.limit == limit and decision.metering.used == 45
    feature = parse_catalog(CATALOG, "c.yaml").features["api-rate"]
    assert resolve_as(decision, feature, Kind.INTEGER) == limit - 45
    assert resolve_as(decision, feature, Kind.BOOLEAN) is True
    assert feature.volatile


def test_a_full_window_is_rate_limited_and_no_entitlement_is_no_entitlement() -> None:
    catalog = parse_catalog(CATALOG, "c.yaml")
    windows = RateWindows()
    now = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    windows.admit(("free", "api-rate"), 60.0, now.timestamp(), 60, 60)
    view = _view(catalog, windows)
    full = evaluate(view, "free", "api-rate", {}, now)
    assert not full.has_access and full.denial is not None and full.denial.value == "rate_limited"
    none = evaluate(view, "nobody", "api-rate", {}, now)
    assert none.denial is not None and none.denial.value == "no_entitlement"
