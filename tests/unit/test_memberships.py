"""The member index kept one account at a time equals the index built from scratch."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from plangate.sidecar.catalog import Account, Subscription
from plangate.sidecar.engine import memberships_of, reindex_members

IDS = ["a", "b", "c", "d", "e"]


@st.composite
def accounts(draw: st.DrawFn) -> Account:
    owner = draw(st.sampled_from(IDS))
    subs = tuple(
        Subscription(
            id=f"{owner}/{i}",
            owner=owner,
            plan="pro",
            members=tuple(draw(st.lists(st.sampled_from(IDS), max_size=3, unique=True))),
        )
        for i in range(draw(st.integers(0, 2)))
    )
    return Account(owner, subscriptions=subs)


# (account, True) upserts it; (account, False) deletes the account with that id
changes = st.lists(st.tuples(accounts(), st.booleans()), max_size=25)


@settings(max_examples=200, deadline=None)
@given(changes)
def test_incremental_index_equals_full_rebuild(steps: list[tuple[Account, bool]]) -> None:
    live: dict[str, Account] = {}
    index: dict[str, list[Subscription]] = {}
    for account, upsert in steps:
        old = live.get(account.id)
        if upsert:
            live[account.id] = account
            reindex_members(index, old, account)
        elif old is not None:
            del live[account.id]
            reindex_members(index, old, None)
        assert index == memberships_of(live.values())


def test_a_member_lists_shared_subscriptions_by_owner_then_id() -> None:
    z = Account("z", subscriptions=(Subscription("z/0", "z", "pro", members=("m",)),))
    a = Account("a", subscriptions=(Subscription("a/1", "a", "pro", members=("m",)),))
    index = memberships_of([z, a])
    assert [s.id for s in index["m"]] == ["a/1", "z/0"]
    reindex_members(index, a, None)
    assert [s.id for s in index["m"]] == ["z/0"]
    reindex_members(index, z, Account("z"))
    assert "m" not in index
