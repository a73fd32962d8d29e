"""The event hub hands a change only to the streams that need it, and a stream that is never
read keeps a bounded backlog (issue 22 item 2, decision 1310)."""

from __future__ import annotations

from plangate.sidecar.runtime.live.events import (
    ID_LIMIT,
    PENDING_LIMIT,
    AccountChanged,
    CatalogChanged,
    EventHub,
)


def test_a_change_reaches_only_the_streams_interested_in_its_account() -> None:
    hub = EventHub()
    others = [hub.subscribe(5.0, [f"acct_{i}"]) for i in range(1000)]
    wanting = hub.subscribe(5.0, ["acct_x"])
    hub.publish(AccountChanged(("acct_x", "acct_y"), "usage"))
    assert wanting.pending() == [AccountChanged(("acct_x",), "usage")]
    assert all(sub.pending() == [] for sub in others)


def test_catalog_and_every_account_events_reach_every_stream() -> None:
    hub = EventHub()
    subs = [hub.subscribe(5.0, []), hub.subscribe(5.0)]
    catalog = CatalogChanged("v2", ("sso",), ("sso",))
    period = AccountChanged((), "time", all_accounts=True)
    hub.publish(catalog)
    hub.publish(period)
    assert all(sub.pending() == [catalog, period] for sub in subs)


def test_interest_added_by_id_takes_effect_and_ends_with_the_stream() -> None:
    hub = EventHub()
    sub = hub.subscribe(5.0, [])
    assert hub.add_interest(sub.watch_id, "acct_a")
    hub.publish(AccountChanged(("acct_a",), "admin"))
    assert sub.pending() == [AccountChanged(("acct_a",), "admin")]
    sub.close()
    assert not hub.add_interest(sub.watch_id, "acct_b")


def test_a_stream_never_read_keeps_a_short_merged_backlog() -> None:
    hub = EventHub()
    broad = hub.subscribe(5.0)
    narrow = hub.subscribe(5.0, ["acct_0"])
    for i in range(10_000):
        hub.publish(AccountChanged((f"acct_{i % 50}",), "usage"))
    hub.publish(AccountChanged(("acct_0",), "admin"))
    assert len(narrow._events) <= PENDING_LIMIT + 1
    assert len(broad._events) <= PENDING_LIMIT + 1
    merged = broad.pending()
    usage = [e for e in merged if isinstance(e, AccountChanged) and e.cause == "usage"]
    assert {a for e in usage for a in e.account_ids} == {f"acct_{i}" for i in range(50)}
    assert {e.cause for e in narrow.pending() if isinstance(e, AccountChanged)} == {
        "usage",
        "admin",
    }


def test_a_merged_backlog_naming_too_many_accounts_says_every_account() -> None:
    hub = EventHub()
    broad = hub.subscribe(5.0)
    for i in range(ID_LIMIT + PENDING_LIMIT + 1):
        hub.publish(AccountChanged((f"acct_{i}",), "usage"))
    assert AccountChanged((), "usage", all_accounts=True) in broad.pending()
