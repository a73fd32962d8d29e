"""Account search of the console: matches by id, name or attribute value, pages by the last id
shown, and never answers from the text of an account's older version."""

from __future__ import annotations

from plangate.sidecar.catalog.model import Account, freeze
from plangate.sidecar.server.console.search import AccountSearch


def accounts(n: int) -> dict[str, Account]:
    out = {}
    for i in range(n):
        a = Account(
            id=f"acct_{i:03d}",
            name=f"Customer {i} {'GmbH' if i % 2 else 'Inc'}",
            attributes=freeze({"region": "eu" if i % 3 == 0 else "us", "tier": i}),
        )
        out[a.id] = a
    return out


def test_matches_id_name_and_attribute_values_case_insensitively() -> None:
    found = accounts(30)
    search = AccountSearch()
    assert [a.id for a in search.find(found, "ACCT_007").accounts] == ["acct_007"]
    assert {a.id for a in search.find(found, "customer 12 ").accounts} == {"acct_012"}
    assert search.find(found, "gmbh").total == 15
    assert search.find(found, "EU").total == 10  # an attribute value
    assert search.find(found, "region").total == 0  # attribute names are not values


def test_pages_follow_the_last_id_shown() -> None:
    found = accounts(25)
    search = AccountSearch()
    first = search.find(found, "", size=10)
    assert [a.id for a in first.accounts] == [f"acct_{i:03d}" for i in range(10)]
    assert first.next_after == "acct_009" and first.total == 25
    second = search.find(found, "", after=first.next_after or "", size=10)
    assert second.accounts[0].id == "acct_010"
    last = search.find(found, "", after="acct_019", size=10)
    assert [a.id for a in last.accounts] == [f"acct_{i:03d}" for i in range(20, 25)]
    assert last.next_after is None


def test_a_changed_account_is_found_by_its_new_name_only() -> None:
    found = accounts(5)
    search = AccountSearch()
    assert search.find(found, "customer 3").total == 1  # caches the text
    found["acct_003"] = Account(id="acct_003", name="Renamed Ltd")
    assert search.find(found, "customer 3").total == 0
    assert [a.id for a in search.find(found, "renamed").accounts] == ["acct_003"]
    del found["acct_003"]
    assert search.find(found, "renamed").total == 0
