"""Catalogs that load: every feature type and option, plans, add-ons, quotas, accounts, slugs."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from plangate.sidecar.catalog import (
    UNLIMITED,
    Account,
    Aggregation,
    Anchor,
    Catalog,
    CatalogError,
    FeatureType,
    MeteredLimit,
    Reset,
    Scope,
    Subscription,
    load_catalog,
    parse_catalog,
)
from plangate.sidecar.engine import Kind, StateView, evaluate, resolve_as

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog.yaml"

FULL = """
products:
  - name: Acme Analytics
    features:
      - name: SSO
        type: boolean
        default: false
        description: Single sign-on
      - name: Audit log
        type: boolean
        default: true
      - name: Beta dashboard
        type: flag
      - name: Execution concurrency
        type: integer
        default: 1
        min: 0
        max: 100
        step: 1
        infinite: -1
      - name: Storage GB
        type: integer
        default: 10
        min: 10
        max: 1000
        step: 10
        infinite: 999999
      - name: Support tier
        type: string
        values: [community, email, priority]
        default: community
      - name: Region
        type: string
        default: eu
      - name: Integrations
        type: list
        values: [slack, github, jira, salesforce]
        default: [slack]
      - name: Theme
        type: object
        default: {accent: blue, logo: false}
      - name: API calls
        type: metered
        unit: call
        aggregation: sum
        reset: monthly
        anchor: subscription
      - name: Monthly active users
        type: metered
        aggregation: unique
        reset: monthly
        anchor: calendar
      - name: Seats
        type: metered
        aggregation: gauge
        reset: never
        scope: subscription
      - name: Old reports
        type: boolean
        archived: true
    plans:
      - name: Free
        entitlements:
          api-calls: 1000
          execution-concurrency: 1
          seats: 1
          storage-gb: 10
      - name: Pro
        extends: free
        price: {amount: 49, currency: USD, interval: month}
        entitlements:
          sso: true
          beta-dashboard: true
          api-calls: {limit: 100000, soft: true, overage_cap: 20000}
          monthly-active-users: {limit: 500, soft: true}
          execution-concurrency: 10
          integrations: [slack, github]
          support-tier: email
          theme: {accent: green}
        quotas:
          - feature: api-calls
            at: [80%, 100%, 150000]
            actions:
              - webhook: https://hooks.example.com/plangate
                secret_env: HOOK_SECRET
              - override: {feature: sso, value: false}
              - change_plan: enterprise
      - name: Enterprise
        extends: pro
        entitlements:
          api-calls: unlimited
          execution-concurrency: unlimited
          support-tier: priority
    addons:
      - name: Extra seats
        requires: [pro, enterprise]
        max_quantity: 50
        entitlements:
          seats: 5
      - name: Salesforce
        requires: [pro]
        entitlements:
          integrations: [salesforce]
      - name: Jira
        entitlements:
          integrations: [jira]

accounts:
  - id: acct_acme
    name: Acme Inc
    attributes: {region: eu, crm_id: "0015g00000", tier: 3}
    subscriptions:
      - id: sub_1
        plan: pro
        addons: {extra-seats: 2, salesforce: 1}
        starts_at: 2026-01-15T00:00:00Z
        ends_at: 2027-01-15T00:00:00Z
        trial_ends_at: 2026-01-29T00:00:00Z
        members: [user_ann, user_bob]
      - plan: free
    overrides:
      execution-concurrency: 25
      sso: {value: true, expires_at: 2026-09-01T00:00:00Z}
      theme: {accent: red}
    grants:
      - feature: api-calls
        value: 500000
        ends_at: 2026-12-31T00:00:00Z
      - id: promo
        feature: beta-dashboard
        value: true
        starts_at: 2026-02-01T00:00:00+02:00
        ends_at: 2026-03-01
"""


@pytest.fixture(scope="module")
def full() -> Catalog:
    import textwrap

    return parse_catalog(textwrap.dedent(FULL), "full.yaml")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# -- features -------------------------------------------------------------------------------


def test_feature_keys_are_slugs_of_names(full: Catalog) -> None:
    assert list(full.features) == [
        "sso",
        "audit-log",
        "beta-dashboard",
        "execution-concurrency",
        "storage-gb",
        "support-tier",
        "region",
        "integrations",
        "theme",
        "api-calls",
        "monthly-active-users",
        "seats",
        "old-reports",
    ]
    assert full.features["execution-concurrency"].name == "Execution concurrency"
    assert full.features["sso"].product == "acme-analytics"
    assert list(full.products) == ["acme-analytics"]
    assert full.products["acme-analytics"].name == "Acme Analytics"


def test_boolean_and_flag_features(full: Catalog) -> None:
    sso, audit, beta = (
        full.features["sso"],
        full.features["audit-log"],
        full.features["beta-dashboard"],
    )
    assert (sso.type, sso.default, sso.description) == (
        FeatureType.BOOLEAN,
        False,
        "Single sign-on",
    )
    assert (audit.type, audit.default) == (FeatureType.BOOLEAN, True)
    assert (beta.type, beta.default) == (FeatureType.FLAG, False)
    assert full.features["old-reports"].archived is True
    assert sso.archived is False


def test_integer_feature_options(full: Catalog) -> None:
    conc = full.features["execution-concurrency"]
    assert conc.type is FeatureType.INTEGER
    assert (conc.default, conc.min, conc.max, conc.step, conc.infinite) == (1, 0, 100, 1, -1)
    storage = full.features["storage-gb"]
    assert (storage.default, storage.min, storage.max, storage.step) == (10, 10, 1000, 10)
    assert storage.infinite == 999999


def test_string_list_object_features(full: Catalog) -> None:
    tier = full.features["support-tier"]
    assert tier.type is FeatureType.STRING
    assert tier.values == ("community", "email", "priority")
    assert tier.default == "community"
    region = full.features["region"]
    assert region.values is None  # no enum: any string
    assert region.default == "eu"
    integrations = full.features["integrations"]
    assert integrations.type is FeatureType.LIST
    assert integrations.values == ("slack", "github", "jira", "salesforce")
    assert tuple(integrations.default) == ("slack",)
    theme = full.features["theme"]
    assert theme.type is FeatureType.OBJECT
    assert dict(theme.default) == {"accent": "blue", "logo": False}


def test_metered_feature_options(full: Catalog) -> None:
    api = full.features["api-calls"]
    assert api.type is FeatureType.METERED
    assert (api.unit, api.aggregation, api.reset, api.anchor, api.scope) == (
        "call",
        Aggregation.SUM,
        Reset.MONTHLY,
        Anchor.SUBSCRIPTION,
        Scope.ACCOUNT,
    )
    mau = full.features["monthly-active-users"]
    assert (mau.aggregation, mau.reset, mau.anchor) == (
        Aggregation.UNIQUE,
        Reset.MONTHLY,
        Anchor.CALENDAR,
    )
    seats = full.features["seats"]
    assert (seats.aggregation, seats.reset, seats.scope) == (
        Aggregation.GAUGE,
        Reset.NEVER,
        Scope.SUBSCRIPTION,
    )


# -- plans ----------------------------------------------------------------------------------


def test_plan_keys_and_extends(full: Catalog) -> None:
    assert list(full.plans) == ["free", "pro", "enterprise"]
    assert full.plans["free"].extends is None
    assert full.plans["pro"].extends == "free"
    assert full.plans["enterprise"].extends == "pro"


def test_plan_inherits_and_own_entitlements_win(full: Catalog) -> None:
    free, pro, ent = full.plans["free"], full.plans["pro"], full.plans["enterprise"]
    assert free.entitlements["api-calls"] == MeteredLimit(1000)
    # Pro overrides api-calls and inherits seats from Free.
    assert pro.entitlements["api-calls"] == MeteredLimit(100000, soft=True, overage_cap=20000)
    assert pro.entitlements["seats"] == MeteredLimit(1)
    assert "seats" not in pro.own
    # Enterprise: own values over two levels of inheritance.
    assert ent.entitlements["api-calls"] == MeteredLimit(None)
    assert ent.entitlements["api-calls"].unlimited
    assert ent.entitlements["execution-concurrency"] is UNLIMITED
    assert ent.entitlements["support-tier"] == "priority"
    assert ent.entitlements["sso"] is True  # from pro
    assert ent.entitlements["seats"] == MeteredLimit(1)  # from free
    assert ent.entitlements["storage-gb"] == 10  # from free
    assert tuple(ent.entitlements["integrations"]) == ("slack", "github")  # type: ignore[arg-type]
    assert dict(ent.entitlements["theme"]) == {"accent": "green"}  # type: ignore[arg-type]
    assert set(ent.own) == {"api-calls", "execution-concurrency", "support-tier"}


def test_soft_limit_without_cap(full: Catalog) -> None:
    assert full.plans["pro"].entitlements["monthly-active-users"] == MeteredLimit(500, soft=True)


def test_plan_price(full: Catalog) -> None:
    price = full.plans["pro"].price
    assert price is not None
    assert (price.amount, price.currency, price.interval) == (49, "USD", "month")
    assert full.plans["free"].price is None


def test_quotas(full: Catalog) -> None:
    (quota,) = full.plans["pro"].quotas
    assert quota.feature == "api-calls"
    assert [t.value_for(100000) for t in quota.thresholds] == [80000, 100000, 150000]
    kinds = [(a.kind, a.target, a.feature, a.value) for a in quota.actions]
    assert kinds == [
        ("webhook", "https://hooks.example.com/plangate", "", None),
        ("override", "", "sso", False),
        ("change_plan", "enterprise", "", None),
    ]
    assert quota.actions[0].secret_env == "HOOK_SECRET"
    assert full.plans["free"].quotas == ()


# -- add-ons --------------------------------------------------------------------------------


def test_addons(full: Catalog) -> None:
    assert list(full.addons) == ["extra-seats", "salesforce", "jira"]
    seats = full.addons["extra-seats"]
    assert seats.requires == frozenset({"pro", "enterprise"})
    assert seats.max_quantity == 50
    assert seats.entitlements["seats"] == MeteredLimit(5)
    salesforce = full.addons["salesforce"]
    assert salesforce.requires == frozenset({"pro"})
    assert salesforce.max_quantity == 1  # default: one unit
    assert tuple(salesforce.entitlements["integrations"]) == ("salesforce",)  # type: ignore[arg-type]
    assert full.addons["jira"].requires == frozenset()  # any plan of the product


# -- accounts -------------------------------------------------------------------------------


def test_account_attributes(full: Catalog) -> None:
    acme = full.accounts["acct_acme"]
    assert acme.name == "Acme Inc"
    assert dict(acme.attributes) == {"region": "eu", "crm_id": "0015g00000", "tier": 3}
    assert acme.declared is True


def test_account_subscriptions(full: Catalog) -> None:
    first, second = full.accounts["acct_acme"].subscriptions
    assert first.id == "sub_1"
    assert first.owner == "acct_acme"
    assert first.plan == "pro"
    assert dict(first.addons) == {"extra-seats": 2, "salesforce": 1}
    assert first.starts_at == utc(2026, 1, 15)
    assert first.ends_at == utc(2027, 1, 15)
    assert first.trial_ends_at == utc(2026, 1, 29)
    assert first.members == ("user_ann", "user_bob")
    # A subscription without dates is open-ended; without an id it gets a stable one.
    assert second.plan == "free"
    assert (second.starts_at, second.ends_at) == (None, None)
    assert second.id and second.id != first.id
    assert dict(second.addons) == {}


def test_account_overrides_plain_and_expiring(full: Catalog) -> None:
    overrides = full.accounts["acct_acme"].overrides
    assert overrides["execution-concurrency"].value == 25
    assert overrides["execution-concurrency"].expires_at is None
    assert overrides["sso"].value is True
    assert overrides["sso"].expires_at == utc(2026, 9, 1)
    # An object override that is not the `{value, expires_at}` form is the value itself.
    assert dict(overrides["theme"].value) == {"accent": "red"}  # type: ignore[arg-type]
    assert overrides["theme"].expires_at is None


def test_account_grants(full: Catalog) -> None:
    calls, promo = full.accounts["acct_acme"].grants
    assert calls.feature == "api-calls"
    assert calls.value == MeteredLimit(500000)
    assert calls.starts_at is None
    assert calls.ends_at == utc(2026, 12, 31)
    assert promo.id == "promo"
    assert promo.value is True
    assert promo.starts_at == utc(2026, 1, 31, 22)  # +02:00 normalised to UTC
    assert promo.ends_at == utc(2026, 3, 1)  # a bare date is midnight UTC
    assert calls.id != promo.id


def test_version_tracks_content(full: Catalog) -> None:
    import textwrap

    again = parse_catalog(textwrap.dedent(FULL), "full.yaml")
    changed = parse_catalog(textwrap.dedent(FULL).replace("max_quantity: 50", "max_quantity: 40"))
    assert again.version == full.version
    assert changed.version != full.version
    assert full.source == "full.yaml"


# -- slugs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Execution concurrency", "execution-concurrency"),
        ("SSO", "sso"),
        ("API calls", "api-calls"),
        ("  Storage (GB) / month!! ", "storage-gb-month"),
        ("Seats__per--team", "seats-per-team"),
        ("Version 2", "version-2"),
    ],
)
def test_slug_from_name(make_catalog: Callable[..., Catalog], name: str, slug: str) -> None:
    catalog = make_catalog(
        f"""
        products:
          - name: P
            features:
              - name: {json.dumps(name)}
                type: boolean
        """
    )
    assert list(catalog.features) == [slug]


def test_explicit_slug_wins(make_catalog: Callable[..., Catalog]) -> None:
    catalog = make_catalog(
        """
        products:
          - name: Acme Analytics
            slug: acme
            features:
              - name: Single sign-on
                slug: sso
                type: boolean
            plans:
              - name: Pro plan
                slug: pro
                entitlements: {sso: true}
        """
    )
    assert list(catalog.products) == ["acme"]
    assert list(catalog.features) == ["sso"]
    assert list(catalog.plans) == ["pro"]
    assert catalog.features["sso"].name == "Single sign-on"


def test_shared_slugs_across_products_are_qualified(make_catalog: Callable[..., Catalog]) -> None:
    catalog = make_catalog(
        """
        products:
          - name: Analytics
            features:
              - name: Seats
                type: integer
              - name: Dashboards
                type: boolean
            plans:
              - name: Pro
                entitlements: {seats: 5, dashboards: true}
          - name: Pipelines
            features:
              - name: Seats
                type: integer
              - name: Runs
                type: boolean
            plans:
              - name: Pro
                entitlements: {seats: 7, runs: true}
        accounts:
          - id: a
            overrides:
              pipelines/seats: 9
        """
    )
    assert set(catalog.features) == {"analytics/seats", "pipelines/seats", "dashboards", "runs"}
    assert catalog.features["analytics/seats"].slug == "seats"
    assert catalog.features["pipelines/seats"].product == "pipelines"
    # Plans shared by slug are qualified the same way; each plan's in-product slug resolves.
    assert set(catalog.plans) == {"analytics/pro", "pipelines/pro"}
    assert dict(catalog.plans["analytics/pro"].entitlements) == {
        "analytics/seats": 5,
        "dashboards": True,
    }
    assert dict(catalog.plans["pipelines/pro"].entitlements) == {"pipelines/seats": 7, "runs": True}
    assert catalog.accounts["a"].overrides["pipelines/seats"].value == 9


# -- JSON, files and the example ----------------------------------------------------------

JSON_CATALOG = {
    "products": [
        {
            "name": "Acme",
            "features": [
                {"name": "SSO", "type": "boolean", "default": False},
                {"name": "Seats", "type": "integer", "default": 1, "min": 0, "max": 10},
                {"name": "API calls", "type": "metered", "reset": "daily"},
            ],
            "plans": [
                {"name": "Free", "entitlements": {"seats": 1, "api-calls": 100}},
                {
                    "name": "Pro",
                    "extends": "free",
                    "entitlements": {
                        "sso": True,
                        "api-calls": {"limit": 1e6, "soft": True, "overage_cap": 2.5e3},
                    },
                },
            ],
            "addons": [
                {"name": "More seats", "max_quantity": 3, "entitlements": {"seats": 2}},
            ],
        }
    ],
    "accounts": [
        {
            "id": "acct_json",
            "subscriptions": [
                {
                    "plan": "pro",
                    "addons": {"more-seats": 3},
                    "starts_at": "2026-01-15T00:00:00Z",
                }
            ],
            "overrides": {"seats": {"value": 9, "expires_at": "2026-07-01T00:00:00Z"}},
        }
    ],
}


def _check_json_catalog(catalog: Catalog) -> None:
    assert list(catalog.features) == ["sso", "seats", "api-calls"]
    assert catalog.features["api-calls"].reset is Reset.DAILY
    assert catalog.plans["pro"].entitlements["seats"] == 1
    assert catalog.plans["pro"].entitlements["api-calls"] == MeteredLimit(
        1_000_000, soft=True, overage_cap=2500
    )
    assert catalog.addons["more-seats"].max_quantity == 3
    (sub,) = catalog.accounts["acct_json"].subscriptions
    assert sub.starts_at == utc(2026, 1, 15)
    assert dict(sub.addons) == {"more-seats": 3}
    override = catalog.accounts["acct_json"].overrides["seats"]
    assert (override.value, override.expires_at) == (9, utc(2026, 7, 1))


@pytest.mark.parametrize("indent", [None, 2, "\t"], ids=["compact", "spaces", "tabs"])
def test_json_catalog_loads(indent: int | str | None) -> None:
    text = json.dumps(JSON_CATALOG, indent=indent)
    _check_json_catalog(parse_catalog(text, "catalog.json"))


def test_json_errors_have_lines() -> None:
    data = json.loads(json.dumps(JSON_CATALOG))
    data["products"][0]["plans"][0]["entitlements"]["seats"] = 11
    text = json.dumps(data, indent=2)
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "catalog.json")
    (problem,) = info.value.problems
    expected_line = next(i for i, line in enumerate(text.splitlines(), 1) if '"seats": 11' in line)
    assert (problem.file, problem.line) == ("catalog.json", expected_line)
    assert problem.path == "products[0].plans[0].entitlements.seats"
    assert "outside seats's range 0..10" in problem.message


def test_load_catalog_from_files(tmp_path: Path) -> None:
    json_file = tmp_path / "catalog.json"
    json_file.write_text(json.dumps(JSON_CATALOG, indent=2))
    _check_json_catalog(load_catalog(json_file))
    yaml_file = tmp_path / "catalog.yaml"
    yaml_file.write_text(EXAMPLE.read_text())
    assert load_catalog(str(yaml_file)).source == str(yaml_file)


def test_load_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(CatalogError) as info:
        load_catalog(missing)
    (problem,) = info.value.problems
    assert problem.file == str(missing)
    assert "cannot read file" in problem.message


def test_example_catalog_loads() -> None:
    catalog = load_catalog(EXAMPLE)
    assert set(catalog.features) == {
        "sso",
        "beta-dashboard",
        "execution-concurrency",
        "support-tier",
        "integrations",
        "theme",
        "api-calls",
        "monthly-active-users",
        "seats",
        "exports",
        "legacy-reports",
        "pipeline-editor-v2",
        "scheduled-exports",
        "ai-credits",
        "ai-completions",
        "image-generations",
    }
    assert catalog.features["pipeline-editor-v2"].targeting is not None  # design §4.1
    types = {f.type for f in catalog.features.values()}
    # the example shows every feature type but `float` (decision 2000's flagd float flags), which
    # tests/unit/test_flagd_semantics.py and the flagd conformance suite's catalog carry: a
    # feature more in the example would change every surface's answers the tests pin; nor `rate`
    # (design §17), whose answers move with traffic: tests/unit/test_rate_windows.py has its own
    assert types == set(FeatureType) - {FeatureType.FLOAT, FeatureType.RATE}
    assert catalog.features["legacy-reports"].archived
    assert list(catalog.plans) == ["free", "pro", "enterprise"]
    assert catalog.plans["enterprise"].extends == "pro"
    assert catalog.plans["enterprise"].entitlements["seats"] == MeteredLimit(1 + 4)  # from pro
    assert catalog.plans["enterprise"].entitlements["execution-concurrency"] is UNLIMITED
    assert catalog.plans["pro"].quotas[0].feature == "api-calls"
    assert set(catalog.addons) == {"extra-seats", "salesforce"}
    assert catalog.addons["extra-seats"].requires == frozenset({"pro", "enterprise"})
    assert set(catalog.accounts) == {"acct_acme", "acct_globex", "acct_initech"}
    (acme_sub,) = catalog.accounts["acct_acme"].subscriptions
    assert acme_sub.plan == "pro"
    assert dict(acme_sub.addons) == {"extra-seats": 2, "salesforce": 1}
    assert acme_sub.members == ("user_ann", "user_bob")
    assert catalog.accounts["acct_acme"].overrides["execution-concurrency"].value == 25
    assert catalog.accounts["acct_globex"].subscriptions[0].plan == "enterprise"


def test_json_numbers_with_exponents() -> None:
    # Valid JSON numbers that YAML 1.1 would read as strings.
    text = """{"products": [{"name": "P",
      "features": [{"name": "Calls", "type": "metered"}],
      "plans": [
        {"name": "A", "entitlements": {"calls": 1e6}},
        {"name": "B", "entitlements": {"calls": {"limit": 1.5e3, "soft": true, "overage_cap": 2E2}}}
      ]}]}"""
    catalog = parse_catalog(text, "catalog.json")
    assert catalog.plans["a"].entitlements["calls"] == MeteredLimit(1_000_000)
    assert catalog.plans["b"].entitlements["calls"] == MeteredLimit(
        1500, soft=True, overage_cap=200
    )


def test_metered_feature_takes_its_own_infinite(make_catalog: Any) -> None:
    catalog = make_catalog(
        """
        products:
          - name: P
            features:
              - {name: Calls, type: metered, infinite: 999999}
            plans:
              - {name: Top, entitlements: {calls: unlimited}}
        """
    )
    assert catalog.features["calls"].infinite == 999999
    snapshot = StateView(
        catalog, {"a": Account("a", subscriptions=(Subscription("s", "a", "top"),))}
    )
    decision = evaluate(snapshot, "a", "calls", {}, datetime(2026, 1, 1, tzinfo=UTC))
    assert resolve_as(decision, catalog.features["calls"], Kind.INTEGER) == 999999
