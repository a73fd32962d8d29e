"""`connections: stripe:` (design §18): what a valid section reads as, and what a bad one says.

Each bad case names the file, the line and the path of the offending entry, like every other
catalog error: a price mapped to nothing would otherwise grant nothing when a customer pays.
"""

from __future__ import annotations

import pytest
from plangate.sidecar.catalog import CatalogError, parse_catalog
from plangate.sidecar.catalog.model import StripeTopUp

BASE = """\
products:
  - name: Acme
    features:
      - name: API calls
        type: metered
      - name: Seats
        type: metered
        aggregation: gauge
      - name: SSO
        type: boolean
    plans:
      - name: Free
        entitlements: {api-calls: 100}
      - name: Pro
        extends: free
    addons:
      - name: Extra seats
        requires: [pro]
        max_quantity: 3
connections:
  stripe:
    webhook_secret_env: STRIPE_WEBHOOK_SECRET
    account_id: metadata.plangate_account
    attributes: {region: metadata.region, email: email}
    prices:
      price_pro: {plan: pro}
      price_seats: {addon: extra-seats}
"""
# an appended line is line 28


def test_a_full_section_reads_as_written() -> None:
    catalog = parse_catalog(
        BASE
        + "      price_calls: {topup: {feature: api-calls, amount: 1000, expires_days: 30}}\n"
        + "    past_due: end\n"
        + "    usage_export: {api_key_env: STRIPE_API_KEY, meters: {api-calls: api_calls}}\n"
    )
    stripe = catalog.stripe
    assert stripe is not None
    assert stripe.webhook_secret_env == "STRIPE_WEBHOOK_SECRET"
    assert stripe.account_id == "metadata.plangate_account"
    assert dict(stripe.attributes) == {"region": "metadata.region", "email": "email"}
    assert stripe.prices["price_pro"].plan == "pro"
    assert stripe.prices["price_seats"].addon == "extra-seats"
    assert stripe.prices["price_calls"].topup == StripeTopUp("api-calls", 1000.0, 30)
    assert stripe.past_due == "end"
    assert stripe.export_api_key_env == "STRIPE_API_KEY"
    assert dict(stripe.export_meters) == {"api-calls": "api_calls"}


def test_no_section_means_no_connection() -> None:
    assert parse_catalog(BASE.split("connections:")[0]).stripe is None


@pytest.mark.parametrize(
    ("extra", "line", "path", "message"),
    [
        (
            "      price_x: {plan: gold}\n",
            28,
            "connections.stripe.prices.price_x.plan",
            "unknown plan 'gold'",
        ),
        (
            "      price_x: {addon: wings}\n",
            28,
            "connections.stripe.prices.price_x.addon",
            "unknown add-on 'wings'",
        ),
        (
            "      price_x: {topup: {feature: nope, amount: 5}}\n",
            28,
            "connections.stripe.prices.price_x.topup.feature",
            "unknown feature 'nope'",
        ),
        (
            "      price_x: {topup: {feature: seats, amount: 5}}\n",
            28,
            "connections.stripe.prices.price_x.topup.feature",
            "sum",
        ),
        (
            "      price_x: {plan: pro, addon: extra-seats}\n",
            28,
            "connections.stripe.prices.price_x",
            "exactly one",
        ),
        ("    past_due: later\n", 28, "connections.stripe.past_due", "keep or end"),
        (
            "    usage_export: {api_key_env: K, meters: {seats: seats}}\n",
            28,
            "connections.stripe.usage_export.meters.seats",
            "only sums export",
        ),
        (
            "    usage_export: {meters: {api-calls: x}}\n",
            28,
            "connections.stripe.usage_export",
            "api_key_env",
        ),
    ],
)
def test_bad_entries_name_file_line_and_path(
    extra: str, line: int, path: str, message: str
) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(BASE + extra, "catalog.yaml")
    text = str(caught.value)
    assert f"catalog.yaml:{line} {path}:" in text, text
    assert message in text, text
