"""The plain-shape pass over stored records (`read_plain_account`, what start-up uses) builds
exactly the account the catalog's reader builds, and leaves every record the reader refuses
to the reader, so a catalog change or a bad row is refused with the reader's own words."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plangate.sidecar.catalog import Catalog, parse_catalog
from plangate.sidecar.catalog.accounts import read_plain_account
from plangate.sidecar.catalog.model import Account
from plangate.sidecar.runtime.edits import records as rec

CATALOG = """\
products:
  - name: Acme
    features:
      - name: SSO
        type: boolean
      - name: Seats
        type: integer
        default: 1
      - name: Calls
        type: metered
        unit: call
        aggregation: sum
        reset: monthly
    plans:
      - name: Free
        entitlements: {seats: 2, calls: 100}
      - name: Pro
        entitlements: {sso: true, seats: 10, calls: 1000}
    addons:
      - name: Extra seats
        max_quantity: 5
        requires: [pro]
        entitlements: {seats: 5}
"""

START, LATER, EARLY = "2026-01-31T10:00:00Z", "2026-03-01T00:00:00+02:00", "2025-01-01T00:00:00"


def _pick(good: list[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly one of `good` (so most records are valid but for one or two values, where a
    pass that misses a rule would accept what the reader refuses), sometimes one of `bad`."""
    return st.integers(0, 7).flatmap(lambda n: st.sampled_from(good if n else bad))


_TIME = _pick([None, START, LATER, EARLY], ["2026-02-30T00:00:00Z", "soon", 5, ""])
_PHASES = _pick(
    [None, [], [{"starts_at": LATER, "plan": "free"}]],
    [
        [{"starts_at": LATER, "plan": "nope"}],
        [{"starts_at": EARLY, "plan": "pro"}],
        [{"starts_at": LATER, "plan": "free", "addons": {"extra-seats": 1}}],
        "x",
        {},
        "",
    ],
)
_SUBSCRIPTION = st.fixed_dictionaries(
    {
        "id": _pick(["s1", "s2", "", None], [7]),
        "plan": _pick(["pro", "free"], ["Pro", "nope", None, 3, ""]),
    },
    optional={
        "addons": _pick(
            [None, {}, {"extra-seats": 2}],
            [{"extra-seats": 0}, {"extra-seats": 9}, {"nope": 1}, {"extra-seats": True}, [], ""],
        ),
        "starts_at": _TIME,
        "ends_at": _TIME,
        "trial_ends_at": _TIME,
        "members": _pick([None, [], ["m1"], ["m1", "m2"]], [[""], [" "], [3], "m1", {}, ""]),
        "phases": _PHASES,
        "bogus": st.just(1),
    },
)
_RECORD = st.fixed_dictionaries(
    {"id": _pick(["a1"], ["", " ", 5, None])},
    optional={
        "name": _pick(["", "Ann", None], [3]),
        "attributes": _pick([None, {}, {"region": "eu", "tags": ["x"]}], [[], "x", ""]),
        "subscriptions": _pick([None], ["x", {}, ""])
        | st.lists(_SUBSCRIPTION | _pick([{"plan": "free"}], ["x", 4, None]), max_size=3),
        "overrides": _pick(
            [None, {}, {"sso": True}, {"seats": {"value": 3, "expires_at": START}}],
            [{"sso": "yes"}, {"nope": 1}, [], ""],
        ),
        "grants": _pick(
            [None, [], [{"feature": "seats", "value": 3}]],
            [[{"feature": "nope", "value": 1}], [{"feature": "seats"}], "", {}],
        ),
        "topups": _pick(
            [None, [], [{"id": "t", "feature": "calls", "amount": 50}]],
            [[{"feature": "sso", "amount": 1}], [{"feature": "calls", "amount": -1}], "", {}],
        ),
        "bogus": st.just(1),
    },
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return parse_catalog(CATALOG)


def _by_reader(record: dict[str, Any], catalog: Catalog) -> Account | None:
    try:
        return replace(rec.validate(record, catalog), declared=False)
    except rec.AdminError:
        return None


@settings(max_examples=1500, deadline=None)
@given(record=_RECORD)
def test_the_plain_pass_agrees_with_the_reader(record: dict[str, Any]) -> None:
    catalog = parse_catalog(CATALOG)
    plain = read_plain_account(record, catalog.plans, catalog.addons, catalog.features)
    if plain is not None:
        assert repr(plain) == repr(_by_reader(record, catalog))  # repr: time zones too


_BASE: dict[str, Any] = {
    "id": "a1",
    "name": "Ann",
    "attributes": {"region": "eu"},
    "subscriptions": [
        {"id": "s1", "plan": "pro", "addons": {"extra-seats": 2}, "starts_at": START},
        {"id": "s2", "plan": "free", "starts_at": START, "members": ["m1"]},
    ],
}
_SUB_CHANGES: list[dict[str, Any]] = [
    {"bogus": 1},
    {"plan": "Pro"},
    {"plan": "nope"},
    {"plan": 3},
    {"addons": {"extra-seats": 0}},
    {"addons": {"extra-seats": 9}},
    {"addons": {"nope": 1}},
    {"addons": {"extra-seats": True}},
    {"addons": []},
    {"starts_at": "2026-02-30T00:00:00Z"},
    {"starts_at": 5},
    {"ends_at": EARLY},
    {"ends_at": START},
    {"trial_ends_at": "soon"},
    {"members": [" "]},
    {"members": [""]},
    {"members": [3]},
    {"members": ""},
    {"members": "m1"},
    {"phases": ""},
    {"phases": {}},
    {"phases": [{"starts_at": EARLY, "plan": "free"}]},
    {"phases": [{"starts_at": LATER, "plan": "nope"}]},
    {"phases": [{"starts_at": LATER, "plan": "free", "addons": {"extra-seats": 1}}]},
    {"id": "s2"},
]
_ACCOUNT_CHANGES: list[dict[str, Any]] = [
    {"id": " "},
    {"id": 5},
    {"bogus": 1},
    {"attributes": []},
    {"attributes": ""},
    {"subscriptions": ""},
    {"subscriptions": {}},
    {"subscriptions": [None]},
    {"overrides": []},
    {"overrides": ""},
    {"overrides": {"sso": "yes"}},
    {"grants": ""},
    {"grants": {}},
    {"grants": [{"feature": "nope", "value": 1}]},
    {"topups": ""},
    {"topups": [{"feature": "sso", "amount": 1}]},
]


@pytest.mark.parametrize(
    "change",
    [("subscription", c) for c in _SUB_CHANGES] + [("account", c) for c in _ACCOUNT_CHANGES],
    ids=repr,
)
def test_each_thing_the_reader_refuses_is_left_to_it(
    catalog: Catalog, change: tuple[str, dict[str, Any]]
) -> None:
    where, values = change
    record = copy.deepcopy(_BASE)
    (record["subscriptions"][0] if where == "subscription" else record).update(values)
    assert _by_reader(record, catalog) is None
    assert read_plain_account(record, catalog.plans, catalog.addons, catalog.features) is None


def test_the_common_shapes_take_the_plain_pass(catalog: Catalog) -> None:
    """What start-up reads most: subscriptions by plan key, add-ons, members, phases, and the
    odd grant, override or top-up. A pass that declined all of them would be no faster."""
    records: list[dict[str, Any]] = [
        rec.new_record("a1"),
        _BASE,
        {
            "id": "a2",
            "name": "Ann",
            "attributes": {"region": "eu"},
            "subscriptions": [
                {"id": "s", "plan": "pro", "addons": {"extra-seats": 2}, "starts_at": LATER},
                {
                    "plan": "free",
                    "starts_at": START,
                    "ends_at": LATER,
                    "members": ["m1"],
                    "phases": [{"starts_at": "2026-02-15T00:00:00Z", "plan": "pro"}],
                },
            ],
            "overrides": {"sso": False},
            "grants": [{"id": "g", "feature": "seats", "value": 3}],
            "topups": [{"id": "t", "feature": "calls", "amount": 50}],
        },
    ]
    for record in records:
        plain = read_plain_account(record, catalog.plans, catalog.addons, catalog.features)
        assert plain is not None
        assert repr(plain) == repr(_by_reader(record, catalog))


def test_a_refused_record_is_left_to_the_reader(catalog: Catalog) -> None:
    record = {"id": "a1", "subscriptions": [{"plan": "free", "addons": {"extra-seats": 1}}]}
    assert read_plain_account(record, catalog.plans, catalog.addons, catalog.features) is None
    with pytest.raises(rec.AdminError, match="cannot be attached to plan 'free'"):
        rec.validate_stored(record, catalog)
