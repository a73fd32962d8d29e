"""Evaluation sources (design §4): override, subscriptions (plan + add-ons), grants, default."""

from __future__ import annotations

import math
import textwrap
from datetime import UTC, datetime
from typing import Any

import pytest
from plangate.protocol.metering import Denial
from plangate.sidecar.catalog import CatalogError, parse_catalog
from plangate.sidecar.engine import (
    Decision,
    ErrorCode,
    EvaluationError,
    Reason,
    StateView,
    evaluate,
    metadata,
)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)

CATALOG = """\
products:
  - name: Acme
    features:
      - name: SSO
        type: boolean
        default: false
      - name: Audit log
        type: boolean
        default: true
      - name: Beta dashboard
        type: flag
      - name: Execution concurrency
        type: integer
        default: 1
        min: 0
        max: 1000
        infinite: -1
      - name: Support tier
        type: string
        values: [community, email, priority]
        default: community
      - name: Integrations
        type: list
        values: [slack, github, jira, salesforce]
      - name: Theme
        type: object
        default: {accent: blue}
      - name: API calls
        type: metered
        reset: monthly
        anchor: calendar
      - name: Seats
        type: metered
        aggregation: gauge
        reset: never
        scope: subscription
      - name: Legacy reports
        type: boolean
        default: true
        archived: true
    plans:
      - name: Free
        entitlements:
          api-calls: 1000
          execution-concurrency: 2
          seats: 1
          audit-log: false
      - name: Pro
        extends: free
        entitlements:
          sso: true
          beta-dashboard: true
          api-calls: 10000
          execution-concurrency: 10
          integrations: [slack]
          support-tier: email
          theme: {accent: green}
      - name: Enterprise
        extends: pro
        entitlements:
          execution-concurrency: unlimited
          support-tier: priority
      - name: Starter
        entitlements:
          sso: false
          support-tier: priority
          integrations: [github]
          theme: {accent: red}
          execution-concurrency: 5
    addons:
      - name: Extra seats
        requires: [pro, enterprise]
        max_quantity: 10
        entitlements:
          seats: 5
          api-calls: 2500
      - name: Concurrency pack
        requires: [pro]
        max_quantity: 5
        entitlements:
          execution-concurrency: 3
      - name: Jira
        entitlements:
          integrations: [jira]
      - name: Priority support
        entitlements:
          support-tier: priority
          sso: true
"""


def snap(accounts: str = "") -> StateView:
    text = CATALOG
    if accounts:
        text += "accounts:\n" + textwrap.indent(textwrap.dedent(accounts).strip("\n"), "  ") + "\n"
    return StateView.of(parse_catalog(text, "catalog.yaml"))


def ev(
    snapshot: StateView, account: str | None, key: str, at: datetime = NOW, **context: Any
) -> Decision:
    return evaluate(snapshot, account, key, context, at)


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# -- overrides ------------------------------------------------------------------------------


def test_override_beats_plan_upwards_and_downwards() -> None:
    s = snap(
        """
        - id: up
          subscriptions: [{plan: pro}]
          overrides: {execution-concurrency: 25}
        - id: down
          subscriptions: [{plan: pro}]
          overrides: {execution-concurrency: 1, sso: false, integrations: []}
        - id: plain
          subscriptions: [{plan: pro}]
        """
    )
    assert ev(s, "plain", "execution-concurrency").value == 10
    up = ev(s, "up", "execution-concurrency")
    assert (up.value, up.variant, up.reason) == (25, "override", Reason.TARGETING_MATCH)
    down = ev(s, "down", "execution-concurrency")
    assert (down.value, down.variant) == (1, "override")
    sso = ev(s, "down", "sso")
    assert (sso.value, sso.has_access, sso.variant) == (False, False, "override")
    assert sso.denial is Denial.NO_ENTITLEMENT
    assert ev(s, "down", "integrations").value == []


def test_override_beats_more_generous_grants_and_subscriptions() -> None:
    s = snap(
        """
        - id: a
          subscriptions: [{plan: enterprise}, {plan: pro}]
          overrides: {execution-concurrency: 3, api-calls: 5}
          grants:
            - {feature: execution-concurrency, value: 900}
        """
    )
    conc = ev(s, "a", "execution-concurrency")
    assert (conc.value, conc.unlimited, conc.variant) == (3, False, "override")
    calls = ev(s, "a", "api-calls")
    assert calls.metering is not None
    assert (calls.metering.limit, calls.variant) == (5, "override")


def test_override_expires() -> None:
    s = snap(
        """
        - id: a
          subscriptions: [{plan: pro}]
          overrides:
            execution-concurrency: {value: 50, expires_at: 2026-07-01T00:00:00Z}
        """
    )
    before = ev(s, "a", "execution-concurrency", at(2026, 6, 30, 23, 59, 59))
    assert (before.value, before.variant) == (50, "override")
    for later in (at(2026, 7, 1), at(2027, 1, 1)):
        after = ev(s, "a", "execution-concurrency", later)
        assert (after.value, after.variant, after.reason) == (10, "pro", Reason.TARGETING_MATCH)


# -- plans and add-ons ----------------------------------------------------------------------


def test_plan_inheritance_over_three_levels() -> None:
    s = snap("- {id: a, subscriptions: [{plan: enterprise}]}")
    # Enterprise's own values win over Pro's and Free's...
    conc = ev(s, "a", "execution-concurrency")
    assert (conc.value, conc.unlimited, conc.variant) == (-1, True, "enterprise")
    assert ev(s, "a", "support-tier").value == "priority"
    # ...inherited from Pro (which itself beats Free)...
    assert ev(s, "a", "sso").value is True
    assert ev(s, "a", "api-calls").metering.limit == 10000
    assert ev(s, "a", "theme").value == {"accent": "green"}
    # ...and from Free, two levels up.
    assert ev(s, "a", "seats").metering.limit == 1
    audit = ev(s, "a", "audit-log")
    assert (audit.value, audit.variant, audit.reason) == (
        False,
        "enterprise",
        Reason.TARGETING_MATCH,
    )


def test_addons_add_times_quantity() -> None:
    s = snap(
        """
        - id: a
          subscriptions:
            - {plan: pro, addons: {extra-seats: 3, concurrency-pack: 2}}
        """
    )
    seats = ev(s, "a", "seats")
    assert seats.metering.limit == 1 + 5 * 3  # metered: plan + per-unit × quantity
    assert seats.variant == "pro+extra-seats"
    assert ev(s, "a", "api-calls").metering.limit == 10000 + 2500 * 3
    conc = ev(s, "a", "execution-concurrency")
    assert (conc.value, conc.variant) == (10 + 3 * 2, "pro+concurrency-pack")
    # A feature no add-on touches keeps the plan as its source.
    assert ev(s, "a", "sso").variant == "pro"


def test_addon_onto_unlimited_stays_unlimited() -> None:
    s = snap("- {id: a, subscriptions: [{plan: enterprise, addons: {extra-seats: 2}}]}")
    conc = ev(s, "a", "execution-concurrency")
    assert conc.unlimited
    assert ev(s, "a", "seats").metering.limit == 1 + 10


def test_addons_union_lists_or_booleans_replace_strings() -> None:
    s = snap(
        """
        - id: a
          subscriptions: [{plan: pro, addons: {jira: 1, priority-support: 1}}]
        - id: b
          subscriptions: [{plan: free, addons: {priority-support: 1, jira: 1}}]
        """
    )
    integrations = ev(s, "a", "integrations")
    assert integrations.value == ["slack", "jira"]
    assert integrations.variant == "pro+jira"
    assert ev(s, "a", "support-tier").value == "priority"  # strings replace
    sso = ev(s, "b", "sso")  # free has no sso: the add-on's true
    assert (sso.value, sso.variant) == (True, "free+priority-support")
    assert ev(s, "b", "integrations").value == ["jira"]


def test_addons_end_with_their_subscription() -> None:
    s = snap(
        """
        - id: a
          subscriptions:
            - plan: pro
              addons: {extra-seats: 4, jira: 1}
              starts_at: 2026-01-01T00:00:00Z
              ends_at: 2026-06-01T00:00:00Z
        """
    )
    during = ev(s, "a", "seats", at(2026, 5, 31))
    assert during.metering.limit == 21
    for when in (at(2026, 6, 1), NOW, at(2025, 12, 31)):
        seats = ev(s, "a", "seats", when)
        assert (seats.variant, seats.reason) == ("default", Reason.DEFAULT)
        assert seats.metering.limit == 0
        assert seats.denial is Denial.NO_ENTITLEMENT
        integrations = ev(s, "a", "integrations", when)
        assert (integrations.value, integrations.reason) == ([], Reason.DEFAULT)
        assert ev(s, "a", "execution-concurrency", when).value == 1  # the feature default


def test_addon_refused_on_a_plan_outside_requires() -> None:
    with pytest.raises(CatalogError) as info:
        snap("- {id: a, subscriptions: [{plan: enterprise, addons: {concurrency-pack: 1}}]}")
    assert "cannot be attached to plan 'enterprise'" in str(info.value)


# -- several sources ------------------------------------------------------------------------


def test_two_subscriptions_most_generous_number_wins() -> None:
    s = snap(
        """
        - id: a
          subscriptions: [{plan: starter}, {plan: pro}]
        - id: b
          subscriptions: [{plan: pro}, {plan: starter}]
        """
    )
    for account in ("a", "b"):
        conc = ev(s, account, "execution-concurrency")
        assert (conc.value, conc.variant) == (10, "pro")
        sso = ev(s, account, "sso")  # true beats false
        assert (sso.value, sso.variant) == (True, "pro")


def test_unlimited_beats_any_number() -> None:
    s = snap(
        "- {id: a, subscriptions: [{plan: pro, addons: {concurrency-pack: 5}}, {plan: enterprise}]}"
    )
    conc = ev(s, "a", "execution-concurrency")
    assert (conc.value, conc.unlimited, conc.variant) == (-1, True, "enterprise")


def test_lists_union_across_subscriptions() -> None:
    s = snap("- {id: a, subscriptions: [{plan: pro}, {plan: starter, addons: {jira: 1}}]}")
    integrations = ev(s, "a", "integrations")
    assert sorted(integrations.value) == ["github", "jira", "slack"]
    assert integrations.has_access


def test_strings_and_objects_first_subscription_wins() -> None:
    s = snap(
        """
        - id: a
          subscriptions: [{plan: starter}, {plan: pro}]
        - id: b
          subscriptions: [{plan: pro}, {plan: starter}]
        """
    )
    assert ev(s, "a", "support-tier").value == "priority"
    assert ev(s, "b", "support-tier").value == "email"
    assert ev(s, "a", "theme").value == {"accent": "red"}
    assert ev(s, "b", "theme").value == {"accent": "green"}
    assert ev(s, "b", "theme").variant == "pro"


def test_grants_are_active_between_start_and_end() -> None:
    s = snap(
        """
        - id: a
          subscriptions: [{plan: pro}]
          grants:
            - feature: execution-concurrency
              value: 50
              starts_at: 2026-06-01T00:00:00Z
              ends_at: 2026-07-01T00:00:00Z
        """
    )
    inside = ev(s, "a", "execution-concurrency")
    assert (inside.value, inside.variant, inside.reason) == (50, "grant", Reason.TARGETING_MATCH)
    assert ev(s, "a", "execution-concurrency", at(2026, 6, 1)).value == 50
    for outside in (at(2026, 5, 31, 23, 59), at(2026, 7, 1), at(2026, 8, 1)):
        plan = ev(s, "a", "execution-concurrency", outside)
        assert (plan.value, plan.variant) == (10, "pro")


def test_grant_smaller_than_the_plan_does_not_lower_it() -> None:
    s = snap(
        """
        - id: a
          subscriptions: [{plan: pro}]
          grants: [{feature: execution-concurrency, value: 3}, {feature: api-calls, value: 50000}]
        """
    )
    assert ev(s, "a", "execution-concurrency").value == 10
    calls = ev(s, "a", "api-calls")
    assert (calls.metering.limit, calls.variant) == (50000, "grant")


def test_grant_without_subscription_and_list_grants_union() -> None:
    s = snap(
        """
        - id: solo
          grants: [{feature: beta-dashboard, value: true}]
        - id: a
          subscriptions: [{plan: pro}]
          grants: [{feature: integrations, value: [salesforce]}]
        """
    )
    beta = ev(s, "solo", "beta-dashboard")
    assert (beta.value, beta.variant, beta.has_access) == (True, "grant", True)
    assert ev(s, "a", "integrations").value == ["slack", "salesforce"]


# -- members --------------------------------------------------------------------------------


MEMBERS = """
- id: owner
  subscriptions:
    - id: team
      plan: pro
      addons: {extra-seats: 1}
      members: [user_m, user_k]
  overrides: {execution-concurrency: 99}
- id: user_k
  subscriptions: [{plan: starter}]
"""


def test_member_gets_the_owners_plan_values() -> None:
    s = snap(MEMBERS)
    sso = ev(s, "user_m", "sso")  # user_m is not declared itself
    assert (sso.value, sso.variant, sso.reason) == (True, "pro", Reason.TARGETING_MATCH)
    assert sso.denial is None
    assert ev(s, "user_m", "seats").metering.limit == 6
    # The owner's override is the owner's, not the members'.
    assert ev(s, "owner", "execution-concurrency").value == 99
    assert ev(s, "user_m", "execution-concurrency").value == 10


def test_member_with_own_subscription_gets_the_most_generous() -> None:
    s = snap(MEMBERS)
    assert ev(s, "user_k", "execution-concurrency").value == 10  # pro (shared) > starter (own)
    assert ev(s, "user_k", "support-tier").value == "priority"  # own subscription listed first
    assert sorted(ev(s, "user_k", "integrations").value) == ["github", "slack"]


def test_subscription_scope_pools_usage_between_owner_and_members() -> None:
    s = snap(MEMBERS)
    owner, member = ev(s, "owner", "seats"), ev(s, "user_m", "seats")
    assert owner.metering.scope_key == member.metering.scope_key == "sub:team"
    # Account-scoped features are counted per account.
    assert ev(s, "owner", "api-calls").metering.scope_key == "acct:owner"
    assert ev(s, "user_m", "api-calls").metering.scope_key == "acct:user_m"


def test_member_of_an_ended_subscription_is_unknown_again() -> None:
    s = snap(
        """
        - id: owner
          subscriptions: [{plan: pro, ends_at: 2026-01-01T00:00:00Z, members: [user_m]}]
        """
    )
    sso = ev(s, "user_m", "sso")
    assert (sso.value, sso.reason, sso.variant) == (False, Reason.DEFAULT, "default")
    assert ev(s, "user_m", "sso", at(2025, 12, 1)).value is True


# -- defaults -------------------------------------------------------------------------------


def test_flag_is_false_unless_listed_boolean_uses_its_default() -> None:
    s = snap(
        """
        - {id: starter, subscriptions: [{plan: starter}]}
        - {id: free, subscriptions: [{plan: free}]}
        - {id: pro, subscriptions: [{plan: pro}]}
        """
    )
    flag = ev(s, "starter", "beta-dashboard")
    assert (flag.value, flag.reason, flag.variant) == (False, Reason.DEFAULT, "default")
    assert (flag.has_access, flag.denial) == (False, Denial.NO_ENTITLEMENT)
    assert ev(s, "pro", "beta-dashboard").value is True
    # Boolean "audit-log" defaults to true: a plan that does not list it gets true...
    audit = ev(s, "starter", "audit-log")
    assert (audit.value, audit.reason, audit.has_access, audit.denial) == (
        True,
        Reason.DEFAULT,
        True,
        None,
    )
    # ...and a plan listing false gets false.
    assert ev(s, "free", "audit-log").value is False


def test_integer_unlimited_returns_infinite() -> None:
    s = snap("- {id: a, subscriptions: [{plan: enterprise}]}")
    d = ev(s, "a", "execution-concurrency")
    assert d.value == s.catalog.features["execution-concurrency"].infinite == -1
    assert d.unlimited and d.has_access
    assert metadata(d)["unlimited"] is True
    assert metadata(ev(s, "a", "support-tier")).get("unlimited") in (None, False)


def test_known_account_without_source_gets_default() -> None:
    s = snap("- {id: nobody}")
    d = ev(s, "nobody", "support-tier")
    assert (d.value, d.reason, d.variant) == ("community", Reason.DEFAULT, "default")
    assert d.denial is None
    assert ev(s, "nobody", "theme").value == {"accent": "blue"}


def test_unknown_account_gets_default_with_denial() -> None:
    s = snap("- {id: a, subscriptions: [{plan: pro}]}")
    for key, default in [
        ("sso", False),
        ("execution-concurrency", 1),
        ("support-tier", "community"),
    ]:
        d = ev(s, "acct_ghost", key)
        assert (d.value, d.reason, d.variant) == (default, Reason.DEFAULT, "default")
        assert d.denial is Denial.ACCOUNT_NOT_FOUND
        assert d.has_access is False
        assert metadata(d)["denial"] == "account_not_found"


def test_archived_feature_is_disabled() -> None:
    s = snap("- {id: a, subscriptions: [{plan: pro}], overrides: {legacy-reports: false}}")
    d = ev(s, "a", "legacy-reports")
    assert d.reason is Reason.DISABLED
    # decision 2002: the caller's default — no value, an empty variant (flagd 2026's DISABLED)
    assert d.value is None and d.caller_default
    assert d.variant == ""
    assert d.has_access is False


# -- errors ---------------------------------------------------------------------------------


def test_unknown_feature_is_flag_not_found() -> None:
    s = snap("- {id: a, subscriptions: [{plan: pro}]}")
    with pytest.raises(EvaluationError) as info:
        ev(s, "a", "teleport")
    assert info.value.code is ErrorCode.FLAG_NOT_FOUND
    assert "teleport" in info.value.message


@pytest.mark.parametrize("account", [None, ""])
def test_missing_account_id_is_targeting_key_missing(account: str | None) -> None:
    s = snap("- {id: a, subscriptions: [{plan: pro}]}")
    with pytest.raises(EvaluationError) as info:
        ev(s, account, "sso")
    assert info.value.code is ErrorCode.TARGETING_KEY_MISSING


@pytest.mark.parametrize("requested", ["abc", -1, math.nan, True, None, [1]])
def test_bad_requested_is_invalid_context(requested: Any) -> None:
    s = snap("- {id: a, subscriptions: [{plan: pro}]}")
    with pytest.raises(EvaluationError) as info:
        ev(s, "a", "api-calls", requested=requested)
    assert info.value.code is ErrorCode.INVALID_CONTEXT
    assert "requested" in info.value.message


def test_variants_name_the_winning_source() -> None:
    s = snap(
        """
        - id: a
          subscriptions: [{plan: pro, addons: {extra-seats: 1}}]
          overrides: {support-tier: priority}
          grants: [{feature: execution-concurrency, value: 500}]
        """
    )
    variants = {
        key: ev(s, "a", key).variant
        for key in ("sso", "seats", "support-tier", "execution-concurrency", "legacy-reports")
    }
    assert variants == {
        "sso": "pro",
        "seats": "pro+extra-seats",
        "support-tier": "override",
        "execution-concurrency": "grant",
        "legacy-reports": "",  # disabled: the caller's default names no variant
    }
    assert ev(s, "ghost", "sso").variant == "default"
