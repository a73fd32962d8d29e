"""Catalogs that must not load: every error names the file, the line, the path and the cause.

Each case marks its offending line with `# <-`; the expected line number is written out as
well, and the test checks both agree, so a miscounted case cannot pass by accident.
"""

from __future__ import annotations

import textwrap

import pytest
from plangate.sidecar.catalog import CatalogError, parse_catalog

# A product used by most cases; `{extra}` is appended inside the product (plans/add-ons) and
# `{accounts}` after it. Lines 1-29 are fixed, so case line numbers are easy to check.
BASE = """\
products:
  - name: Acme
    features:
      - name: SSO
        type: boolean
      - name: Beta
        type: flag
      - name: Execution concurrency
        type: integer
        min: 0
        max: 100
        step: 5
      - name: Support tier
        type: string
        values: [community, email, priority]
      - name: Integrations
        type: list
        values: [slack, github]
      - name: API calls
        type: metered
    plans:
      - name: Free
        entitlements: {api-calls: 100}
      - name: Pro
        extends: free
    addons:
      - name: Extra seats
        requires: [pro]
        max_quantity: 3
"""


def with_plan(entitlements: str) -> str:
    """BASE plus a plan "Test" (line 26) whose entitlements start on line 28."""
    return BASE.replace(
        "    addons:\n",
        "      - name: Test\n        entitlements:\n"
        + textwrap.indent(textwrap.dedent(entitlements).strip("\n"), " " * 10)
        + "\n    addons:\n",
    )


def with_accounts(accounts: str) -> str:
    """BASE plus an `accounts:` section on line 30; the first account starts on line 31."""
    return BASE + "accounts:\n" + textwrap.dedent(accounts).strip("\n") + "\n"


def with_webhooks(webhooks: str) -> str:
    """BASE plus a `webhooks:` section on line 30; the first endpoint starts on line 31."""
    return BASE + "webhooks:\n" + textwrap.dedent(webhooks).strip("\n") + "\n"


CASES = [
    (
        "unknown-feature-in-plan",
        with_plan("sso: true\nsuper-power: true  # <-"),
        29,
        "products[0].plans[2].entitlements.super-power",
        "unknown feature 'super-power'",
    ),
    (
        "integer-above-max",
        with_plan("execution-concurrency: 150  # <-"),
        28,
        "products[0].plans[2].entitlements.execution-concurrency",
        "150 is outside execution-concurrency's range 0..100",
    ),
    (
        "integer-below-min",
        with_plan("execution-concurrency: -5  # <-"),
        28,
        "products[0].plans[2].entitlements.execution-concurrency",
        "-5 is outside execution-concurrency's range 0..100",
    ),
    (
        "integer-off-step",
        with_plan("execution-concurrency: 12  # <-"),
        28,
        "products[0].plans[2].entitlements.execution-concurrency",
        "12 is not on execution-concurrency's step of 5",
    ),
    (
        "integer-not-a-number",
        with_plan("execution-concurrency: lots  # <-"),
        28,
        "products[0].plans[2].entitlements.execution-concurrency",
        'expected an integer or "unlimited"',
    ),
    (
        "metered-negative-limit",
        with_plan("api-calls: -1  # <-"),
        28,
        "products[0].plans[2].entitlements.api-calls",
        'limit must be a non-negative number or "unlimited"',
    ),
    (
        "metered-bad-limit-in-mapping",
        with_plan("api-calls:\n  limit: plenty  # <-\n  soft: true"),
        29,
        "products[0].plans[2].entitlements.api-calls.limit",
        'limit must be a non-negative number or "unlimited"',
    ),
    (
        "metered-nan-limit",
        with_plan("api-calls: .nan  # <-"),
        28,
        "products[0].plans[2].entitlements.api-calls",
        'limit must be a non-negative number or "unlimited"',
    ),
    (
        "overage-cap-without-soft",
        with_plan("api-calls:\n  limit: 1000\n  overage_cap: 100  # <-"),
        30,
        "products[0].plans[2].entitlements.api-calls.overage_cap",
        "only a soft limit can have an overage cap",
    ),
    (
        "boolean-not-a-bool",
        with_plan('sso: "yes please"  # <-'),
        28,
        "products[0].plans[2].entitlements.sso",
        "sso is a boolean feature: expected true or false",
    ),
    (
        "string-not-in-values",
        with_plan("support-tier: platinum  # <-"),
        28,
        "products[0].plans[2].entitlements.support-tier",
        "'platinum' is not one of support-tier's values: community, email, priority",
    ),
    (
        "list-item-not-in-values",
        with_plan("integrations: [slack, teams]  # <-"),
        28,
        "products[0].plans[2].entitlements.integrations",
        "'teams' not among integrations's values",
    ),
    (
        "flag-default-true",
        BASE.replace("        type: flag\n", "        type: flag\n        default: true  # <-\n"),
        8,
        "products[0].features[1].default",
        "its default must be false",
    ),
    (
        "unknown-feature-type",
        BASE.replace("type: flag", "type: toggle  # <-"),
        7,
        "products[0].features[1].type",
        "must be one of boolean, flag, integer",
    ),
    (
        "unknown-feature-option",
        BASE.replace("        type: flag\n", "        type: flag\n        max: 3  # <-\n"),
        8,
        "products[0].features[1].max",
        "unknown key 'max'",
    ),
    (
        "duplicate-feature-slug",
        BASE.replace("      - name: Beta\n", "      - name: sso  # <-\n"),
        6,
        "products[0].features[1].name",
        "feature slug 'sso' is already used in product 'acme'",
    ),
    (
        "duplicate-yaml-key",
        BASE.replace(
            "        type: boolean\n", "        type: boolean\n        type: flag  # <-\n", 1
        ),
        6,
        "products[0].features[0].type",
        "duplicate key",
    ),
    (
        "extends-itself",
        BASE.replace("        extends: free", "        extends: pro  # <-"),
        25,
        "products[0].plans[1].extends",
        "cycle: pro -> pro",
    ),
    (
        "unknown-extends",
        BASE.replace("        extends: free", "        extends: gold  # <-"),
        25,
        "products[0].plans[1].extends",
        "unknown plan 'gold'",
    ),
    (
        "addon-requires-unknown-plan",
        BASE.replace("requires: [pro]", "requires: [pro, premium]  # <-"),
        28,
        "products[0].addons[0].requires[1]",
        "unknown plan 'premium'",
    ),
    (
        "addon-bad-max-quantity",
        BASE.replace("max_quantity: 3", "max_quantity: 0  # <-"),
        29,
        "products[0].addons[0].max_quantity",
        "must be a positive integer, got 0",
    ),
    (
        "addon-on-plan-outside-requires",
        with_accounts(
            """
            - id: acct_1
              subscriptions:
                - plan: free
                  addons:
                    extra-seats: 1  # <-
            """
        ),
        35,
        "accounts[0].subscriptions[0].addons.extra-seats",
        "add-on 'extra-seats' cannot be attached to plan 'free' (requires one of: pro)",
    ),
    (
        "addon-quantity-over-max",
        with_accounts(
            """
            - id: acct_1
              subscriptions:
                - plan: pro
                  addons:
                    extra-seats: 4  # <-
            """
        ),
        35,
        "accounts[0].subscriptions[0].addons.extra-seats",
        "quantity 4 of 'extra-seats' exceeds its max_quantity 3",
    ),
    (
        "unknown-addon",
        with_accounts(
            """
            - id: acct_1
              subscriptions:
                - plan: pro
                  addons: {gpu: 1}  # <-
            """
        ),
        34,
        "accounts[0].subscriptions[0].addons.gpu",
        "unknown add-on 'gpu'",
    ),
    (
        "unknown-plan-in-subscription",
        with_accounts(
            """
            - id: acct_1
              subscriptions:
                - plan: platinum  # <-
            """
        ),
        33,
        "accounts[0].subscriptions[0].plan",
        "unknown plan 'platinum'",
    ),
    (
        "ends-before-starts",
        with_accounts(
            """
            - id: acct_1
              subscriptions:
                - plan: pro
                  starts_at: 2026-03-01T00:00:00Z
                  ends_at: 2026-02-01T00:00:00Z  # <-
            """
        ),
        35,
        "accounts[0].subscriptions[0].ends_at",
        "ends_at must be after starts_at",
    ),
    (
        "bad-timestamp",
        with_accounts(
            """
            - id: acct_1
              subscriptions:
                - plan: pro
                  starts_at: next tuesday  # <-
            """
        ),
        34,
        "accounts[0].subscriptions[0].starts_at",
        "expected an ISO-8601 timestamp such as 2026-01-15T00:00:00Z, got 'next tuesday'",
    ),
    (
        "impossible-date",
        with_accounts(
            """
            - id: acct_1
              grants:
                - feature: sso
                  value: true
                  ends_at: 2026-02-30T00:00:00Z  # <-
            """
        ),
        35,
        "accounts[0].grants[0].ends_at",
        "expected an ISO-8601 timestamp",
    ),
    (
        "override-wrong-type",
        with_accounts(
            """
            - id: acct_1
              overrides:
                execution-concurrency: {value: many, expires_at: 2026-09-01T00:00:00Z}  # <-
            """
        ),
        33,
        "accounts[0].overrides.execution-concurrency.value",
        "execution-concurrency is an integer feature",
    ),
    (
        "grant-unknown-feature",
        with_accounts(
            """
            - id: acct_1
              grants:
                - feature: teleport  # <-
                  value: true
            """
        ),
        33,
        "accounts[0].grants[0].feature",
        "unknown feature 'teleport'",
    ),
    (
        "duplicate-account",
        with_accounts(
            """
            - id: acct_1
            - id: acct_1  # <-
            """
        ),
        32,
        "accounts[1].id",
        "account 'acct_1' is declared twice",
    ),
    (
        "unknown-top-level-key",
        BASE + "plans:  # <-\n  - name: Orphan\n",
        30,
        "plans",
        "unknown key 'plans' (expected one of: accounts, connections, evaluators, meters, products,"
        " webhooks)",
    ),
    (
        "bad-quota-threshold",
        BASE.replace(
            "        extends: free\n",
            "        extends: free\n"
            "        quotas:\n"
            "          - feature: api-calls\n"
            "            at: [80%, 0%]  # <-\n"
            "            actions: [{webhook: 'https://example.com/hook'}]\n",
        ),
        28,
        "products[0].plans[1].quotas[0].at[1]",
        "a threshold is a percentage like \"80%\" or a positive number, got '0%'",
    ),
    (
        "quota-on-non-metered-feature",
        BASE.replace(
            "        extends: free\n",
            "        extends: free\n"
            "        quotas:\n"
            "          - feature: sso  # <-\n"
            "            at: [80%]\n",
        ),
        27,
        "products[0].plans[1].quotas[0].feature",
        "quotas apply to metered features; sso is boolean",
    ),
    (
        "invalid-yaml-syntax",
        "products:\n  - name: Acme\n      type: boolean  # <-\n",
        3,
        "(document)",
        "not valid YAML/JSON: a `key: value` where none can start: is this line indented too "
        "far, or does a value contain `: ` (then quote it)? [mapping values are not allowed here]",
    ),
    (
        "yaml-indented-too-little",
        "products:\n  - key: acme\n   name: Acme  # <-\n",
        3,
        "(document)",
        "not valid YAML/JSON: this line's indentation does not match the lines above it",
    ),
    (
        "webhook-unknown-event",
        with_webhooks("""
            - url: https://hooks.example.com/plangate
              events: [subscription.created, trial.endng]  # <-
            """),
        32,
        "webhooks[0].events[1]",
        "unknown event 'trial.endng' (known: subscription.created, subscription.updated",
    ),
    (
        "webhook-no-events",
        with_webhooks("""
            - url: https://hooks.example.com/plangate  # <-
            """),
        31,
        "webhooks[0].events",
        "needs at least one event",
    ),
    (
        "webhook-not-a-url",
        with_webhooks("""
            - url: hooks.example.com  # <-
              events: [trial.ended]
            """),
        31,
        "webhooks[0].url",
        "must be an http:// or https:// URL, got 'hooks.example.com'",
    ),
    (
        "webhook-unknown-key",
        with_webhooks("""
            - url: https://hooks.example.com/plangate
              events: [trial.ended]
              secret: hunter2  # <-
            """),
        33,
        "webhooks[0].secret",
        "unknown key 'secret' (expected one of: events, secret_env, secret_file, url)",
    ),
    (
        "webhook-secret-env-not-a-name",
        with_webhooks("""
            - url: https://hooks.example.com/plangate
              events: [trial.ended]
              secret_env: 12  # <-
            """),
        33,
        "webhooks[0].secret_env",
        "expected a non-empty string, got 12",
    ),
    (
        "not-a-mapping",
        "- just  # <-\n- a list\n",
        1,
        "(document)",
        "a catalog is a mapping with `products:`",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "path", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_invalid_catalog(text: str, line: int, path: str, message: str) -> None:
    marked = [i for i, row in enumerate(text.splitlines(), 1) if "# <-" in row]
    assert marked, "case must mark its offending line"
    assert marked == [line], "the case's line number disagrees with its marker"
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "catalog.yaml")
    problems = info.value.problems
    assert len(problems) == 1, [str(p) for p in problems]
    problem = problems[0]
    assert (problem.file, problem.line, problem.path) == ("catalog.yaml", line, path)
    assert message in problem.message
    assert str(problem) == f"catalog.yaml:{line} {path}: {problem.message}"
    assert str(info.value) == str(problem)


def test_extends_cycle_is_reported_on_every_plan_in_it() -> None:
    text = BASE.replace("      - name: Free\n", "      - name: Free\n        extends: pro\n")
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "catalog.yaml")
    got = [(p.line, p.path, p.message) for p in info.value.problems]
    assert got == [
        (
            23,
            "products[0].plans[0].extends",
            "plans extend each other in a cycle: free -> pro -> free",
        ),
        (
            26,
            "products[0].plans[1].extends",
            "plans extend each other in a cycle: pro -> free -> pro",
        ),
    ]


def test_distinct_cases() -> None:
    assert len({case[0] for case in CASES}) == len(CASES) >= 15
    assert len({case[1] for case in CASES}) == len(CASES)


def test_design_example_message_format() -> None:
    text = with_plan("api-calls: {limit: -3}")
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "catalog.yaml")
    assert str(info.value) == (
        "catalog.yaml:28 products[0].plans[2].entitlements.api-calls.limit: "
        'limit must be a non-negative number or "unlimited"'
    )


def test_every_problem_is_reported_at_once() -> None:
    text = BASE.replace("type: flag", "type: flag\n        default: true").replace(
        "        extends: free\n", "        extends: gold\n"
    ) + textwrap.dedent(
        """\
        accounts:
          - id: acct_1
            subscriptions:
              - plan: pro
                addons: {extra-seats: 9}
                starts_at: soon
            overrides:
              support-tier: platinum
        """
    )
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "many.yaml")
    got = [(p.line, p.path) for p in info.value.problems]
    assert got == [
        (8, "products[0].features[1].default"),
        (26, "products[0].plans[1].extends"),
        (35, "accounts[0].subscriptions[0].addons.extra-seats"),
        (36, "accounts[0].subscriptions[0].starts_at"),
        (38, "accounts[0].overrides.support-tier"),
    ]
    message = str(info.value)
    assert message.count("many.yaml:") == 5
    assert "unknown plan 'gold'" in message
    assert "exceeds its max_quantity 3" in message


def test_a_valid_base() -> None:
    # The cases above only fail because of their one change.
    catalog = parse_catalog(BASE)
    assert set(catalog.plans) == {"free", "pro"}
    parse_catalog(with_plan("sso: true"))
    parse_catalog(with_accounts("- id: acct_1\n  subscriptions: [{plan: pro}]"))
