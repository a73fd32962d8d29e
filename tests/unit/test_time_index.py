"""Per-account and global time boundaries (the timekeeper's index), and the provider cache's
`valid_until` check."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from plangate.provider.cache import Entry, ResolutionCache
from plangate.sidecar.catalog import parse_catalog
from plangate.sidecar.catalog.model import Reset
from plangate.sidecar.engine.boundaries import (
    account_change,
    calendar_change,
    subscription_resets,
)

NOW = datetime(2026, 6, 15, 12, 20, tzinfo=UTC)

CATALOG = """\
products:
  - name: Acme
    features:
      - {name: SSO, type: boolean}
      - {name: Calls, type: metered, reset: monthly, anchor: calendar}
      - {name: Jobs, type: metered, reset: daily, anchor: subscription}
      - {name: Storage, type: metered, reset: never}
    plans:
      - name: Free
        entitlements: {sso: true}
accounts:
  - {id: plain, subscriptions: [{plan: free}]}
  - id: timed
    subscriptions: [{plan: free, starts_at: "2026-01-01T06:00:00Z", ends_at: "2026-06-30T00:00:00Z"}]
    overrides: {sso: {value: false, expires_at: "2026-06-15T13:00:00Z"}}
    grants: [{feature: sso, value: true, starts_at: "2026-06-15T12:40:00Z"}]
  - id: future
    subscriptions: [{plan: free, starts_at: "2026-07-01T00:00:00Z"}]
"""

catalog = parse_catalog(CATALOG)
features = catalog.features.values()


def test_subscription_resets_are_the_anchored_metered_ones() -> None:
    assert subscription_resets(features) == (Reset.DAILY,)


def test_calendar_change_is_the_next_calendar_period_end() -> None:
    # monthly (calendar) and daily (calendar fallback for accounts without a subscription)
    assert calendar_change(features, NOW) == datetime(2026, 6, 16, tzinfo=UTC)


def test_account_change_is_its_earliest_timed_thing() -> None:
    resets = subscription_resets(features)
    timed = catalog.accounts["timed"]
    assert account_change(timed, resets, NOW) == datetime(2026, 6, 15, 12, 40, tzinfo=UTC)
    at = datetime(2026, 6, 15, 12, 40, tzinfo=UTC)
    assert account_change(timed, resets, at) == datetime(2026, 6, 15, 13, 0, tzinfo=UTC)
    later = datetime(2026, 6, 15, 13, 0, tzinfo=UTC)  # then the anchored day ends at 06:00
    assert account_change(timed, resets, later) == datetime(2026, 6, 16, 6, 0, tzinfo=UTC)
    assert account_change(catalog.accounts["plain"], resets, NOW) is None
    future = catalog.accounts["future"]
    assert account_change(future, resets, NOW) == datetime(2026, 7, 1, tzinfo=UTC)


def test_cache_treats_an_entry_past_valid_until_as_a_miss() -> None:
    cache = ResolutionCache(10)
    cache.activate()
    assert cache.put(cache.begin(("a", "{}")), Entry("v1", {}, valid_until=time.time() + 0.05))
    assert cache.put(cache.begin(("b", "{}")), Entry("v1", {}))
    assert cache.get(("a", "{}")) is not None
    time.sleep(0.06)
    assert cache.get(("a", "{}")) is None
    assert len(cache) == 1  # dropped, not just hidden
    assert cache.get(("b", "{}")) is not None  # no valid_until: good until told otherwise
