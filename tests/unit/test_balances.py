"""Balances (design §5.1): credit pools and top-ups, over the real live state and SQLite store.

No servers: `Decisions` (the runtime facade every surface calls) over `LiveState` over a
`SqliteStore` file, with a hand-driven clock, so burn order, period resets, refunds, expiry
and durability are checked exactly. The catalog rules are checked through `parse_catalog`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plangate.sidecar.catalog import CatalogError, parse_catalog
from plangate.sidecar.catalog.model import TopUp
from plangate.sidecar.engine import UsageReport
from plangate.sidecar.engine.balances import Balance
from plangate.sidecar.engine.lifecycle_events import LifecycleEvent, topup_data
from plangate.sidecar.runtime.edits import records as rec
from plangate.sidecar.runtime.live.state import LiveState
from plangate.sidecar.runtime.serve.decisions import Decisions
from plangate.sidecar.runtime.writes.balances import topup_balances
from plangate.sidecar.runtime.writes.webhooks import body
from plangate.sidecar.store.base import OutboxEntry, UsageWrite
from plangate.sidecar.store.sqlite import SqliteStore

JUNE = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
JULY = datetime(2026, 7, 10, 12, 0, tzinfo=UTC)

CATALOG = """
products:
  - name: Acme
    features:
      - {name: Credits, type: credits, reset: monthly, anchor: calendar}
      - {name: Chat, type: metered, credits: {pool: credits, per_unit: 2}}
      - {name: Images, type: metered, credits: {pool: credits, per_unit: 5}}
      - {name: Search, type: metered, credits: {pool: credits, per_unit: 1}}
      - {name: Calls, type: metered, reset: monthly, anchor: calendar}
      - {name: Seats, type: metered, aggregation: gauge}
    plans:
      - name: Basic
        entitlements: {credits: 20, chat: 100, images: unlimited, search: 3, calls: 10, seats: 3}
        quotas:
          - feature: credits
            at: [50%]
            actions:
              - webhook: http://127.0.0.1:9/credits
"""


class World:
    """A live state on one SQLite file, with a clock the test moves."""

    def __init__(self, directory: Path, catalog: str = CATALOG) -> None:
        self.directory = directory
        self.text = textwrap.dedent(catalog)
        self.now = JUNE
        self.state = self._open()
        self.decisions = Decisions(self.state)

    def _open(self) -> LiveState:
        store = SqliteStore(self.directory / "state.db")
        return LiveState(parse_catalog(self.text), store, clock=lambda: self.now)

    def reopen(self) -> None:
        self.state.store.close()  # type: ignore[attr-defined]
        self.state = self._open()
        self.decisions = Decisions(self.state)

    def account(self, account_id: str = "a") -> None:
        r = rec.new_record(account_id)
        r, _ = rec.add_subscription(
            r, "basic", {}, datetime(2026, 1, 1, tzinfo=UTC), None, None, [], ""
        )
        self.state.commit(r)

    def topup(
        self,
        feature: str,
        amount: float,
        topup_id: str,
        priority: int = 10,
        expires_at: datetime | None = None,
        effective_at: datetime | None = None,
        account_id: str = "a",
    ) -> None:
        r, _ = rec.add_topup(
            self.state.record_of(account_id),
            feature,
            amount,
            priority,
            effective_at,
            expires_at,
            topup_id,
        )
        self.state.commit(r)

    def void(self, topup_id: str, account_id: str = "a") -> None:
        self.state.commit(rec.void_topup(self.state.record_of(account_id), topup_id, self.now))

    def consume(self, feature: str, amount: float = 1, key: str = "") -> tuple[bool, str]:
        c = self.decisions.consume(UsageReport("a", feature, amount, idempotency_key=key))
        return c.granted, c.denial

    def report(self, feature: str, amount: float, key: str = "") -> None:
        self.decisions.report([UsageReport("a", feature, amount, idempotency_key=key)])

    def metering(self, feature: str) -> tuple[float | None, float, float | None]:
        """(limit, used, remaining) as an evaluation sees them."""
        m = self.decisions.evaluate("a", feature, {}).decision.metering
        assert m is not None
        return m.limit, m.used, m.remaining

    def burned(self) -> dict[str, float]:
        return {s.topup.id: s.burned for s in topup_balances(self.state.snapshot, "a", self.now)}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    w.account()
    yield w
    w.state.store.close()  # type: ignore[attr-defined]


# -- the catalog ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feature", "where", "message"),
    [
        (
            "{name: X, type: metered, credits: {pool: nope, per_unit: 1}}",
            "products[0].features[1].credits.pool",
            "unknown pool 'nope'",
        ),
        (
            "{name: X, type: metered, credits: {pool: calls, per_unit: 1}}",
            "products[0].features[1].credits.pool",
            "a pool must be a `credits` feature",
        ),
        (
            "{name: X, type: metered, credits: {pool: credits, per_unit: 0}}",
            "products[0].features[1].credits.per_unit",
            "must be a positive number",
        ),
        (
            "{name: X, type: metered, aggregation: unique, credits: {pool: credits}}",
            "products[0].features[1].credits",
            "only `sum` features can be priced in credits",
        ),
        (
            "{name: X, type: metered, aggregation: gauge, credits: {pool: credits}}",
            "products[0].features[1].credits",
            "only `sum` features can be priced in credits",
        ),
        (
            "{name: X, type: credits, credits: {pool: credits, per_unit: 1}}",
            "products[0].features[1].credits",
            "a credits pool cannot draw from another pool",
        ),
    ],
)
def test_a_bad_credit_price_names_file_line_and_path(
    feature: str, where: str, message: str
) -> None:
    text = (
        "products:\n"
        "  - name: Acme\n"
        "    features:\n"
        "      - {name: Credits, type: credits}\n"
        f"      - {feature}\n"
        "      - {name: Calls, type: metered}\n"
    )
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, "cat.yaml")
    shown = str(info.value)
    assert f"cat.yaml:5 {where}: " in shown, shown
    assert message in shown


def test_catalog_topups_on_declared_accounts_are_checked() -> None:
    base = textwrap.dedent(CATALOG)
    ok = parse_catalog(
        base + "accounts:\n  - id: d\n    topups:\n"
        "      - {id: p1, feature: credits, amount: 50, priority: 1}\n"
    )
    (topup,) = ok.accounts["d"].topups
    assert (topup.id, topup.feature, topup.amount, topup.priority) == ("p1", "credits", 50, 1)
    for bad, message in [
        ("{feature: credits, amount: 0}", "amount: must be a positive number"),
        ("{feature: nope, amount: 5}", "unknown feature 'nope'"),
        ("{feature: chat, amount: 5, priority: x}", "priority: must be an integer"),
    ]:
        with pytest.raises(CatalogError) as info:
            parse_catalog(base + f"accounts:\n  - id: d\n    topups:\n      - {bad}\n", "c.yaml")
        assert message in str(info.value)
        assert "accounts[0].topups[0]" in str(info.value)


# -- top-ups --------------------------------------------------------------------------------


def test_a_topup_adds_to_the_allowance_and_burns_in_order(world: World) -> None:
    world.topup("calls", 5, "late", priority=10)
    world.topup("calls", 3, "first", priority=1)
    world.topup("calls", 2, "expiring", priority=10, expires_at=JUNE + timedelta(days=5))
    assert world.metering("calls") == (20.0, 0.0, 20.0)  # 10 + 5 + 3 + 2
    for _ in range(14):
        assert world.consume("calls") == (True, "")
    # the allowance first, then priority 1, then the earlier expiry, then the rest
    assert world.burned() == {"first": 3.0, "expiring": 1.0, "late": 0.0}
    for _ in range(6):
        assert world.consume("calls") == (True, "")
    assert world.consume("calls") == (False, "usage_limit_reached")
    assert world.burned() == {"first": 3.0, "expiring": 2.0, "late": 5.0}


def test_a_topup_survives_the_period_reset_and_is_durable(world: World) -> None:
    world.topup("calls", 5, "t")
    world.report("calls", 12)  # 2 beyond the allowance: burns 2
    world.reopen()  # the burn came back from the store, not from memory
    assert world.burned() == {"t": 2.0}
    assert world.metering("calls") == (15.0, 12.0, 3.0)
    world.now = JULY  # a fresh period: the allowance again, plus what the top-up has left
    assert world.metering("calls") == (13.0, 0.0, 13.0)


def test_reset_usage_starts_a_period_with_nothing_covered_yet(world: World) -> None:
    world.topup("calls", 5, "t")
    world.report("calls", 12)  # 2 burned
    assert world.state.reset_usage("a", "calls") == 12.0
    assert world.metering("calls") == (13.0, 0.0, 13.0)  # 10 + the 3 left, not + 2 again
    assert world.burned() == {"t": 2.0}
    world.reopen()  # the store reset the burn row with the counter, not only memory
    assert world.metering("calls") == (13.0, 0.0, 13.0)


def test_a_refund_unburns_the_last_burned_first(world: World) -> None:
    world.topup("calls", 3, "a1", priority=1)
    world.topup("calls", 3, "a2", priority=2)
    world.report("calls", 15)  # burns a1: 3, a2: 2
    assert world.burned() == {"a1": 3.0, "a2": 2.0}
    world.report("calls", -3)
    assert world.burned() == {"a1": 2.0, "a2": 0.0}
    world.report("calls", -10)  # back within the allowance: nothing burned
    assert world.burned() == {"a1": 0.0, "a2": 0.0}


def test_expiry_and_void_end_the_remainder(world: World) -> None:
    world.topup("calls", 5, "exp", expires_at=JUNE + timedelta(days=1))
    world.topup("calls", 5, "vd")
    world.report("calls", 11)  # burns 1 of "exp" (earlier expiry first)
    world.void("vd")
    assert world.metering("calls") == (15.0, 11.0, 4.0)  # vd gone, exp still has 4
    world.now = JUNE + timedelta(days=2)  # exp expired: what it burned stays covered
    assert world.metering("calls") == (11.0, 11.0, 0.0)
    assert world.consume("calls") == (False, "usage_limit_reached")


def test_a_topup_not_yet_effective_does_not_count(world: World) -> None:
    world.topup("calls", 5, "soon", effective_at=JUNE + timedelta(days=1))
    assert world.metering("calls") == (10.0, 0.0, 10.0)
    d = world.decisions.evaluate("a", "calls", {}).decision
    assert d.valid_until == JUNE + timedelta(days=1)  # a time boundary (design §8)
    world.now = JUNE + timedelta(days=1)
    assert world.metering("calls") == (15.0, 0.0, 15.0)


def test_an_admin_topup_on_a_non_sum_feature_is_refused(world: World) -> None:
    with pytest.raises(rec.AdminError, match="top-ups apply to sum metered and credits"):
        world.topup("seats", 5, "x")
    with pytest.raises(rec.AdminError, match="unknown feature 'nope'"):
        world.topup("nope", 5, "y")
    assert world.state.account("a").topups == ()  # nothing changed


# -- credit pools ---------------------------------------------------------------------------


def test_a_credit_priced_consume_draws_on_the_pool(world: World) -> None:
    for _ in range(10):  # 10 × 2 = the pool's 20
        assert world.consume("chat") == (True, "")
    assert world.metering("credits") == (20.0, 20.0, 0.0)
    assert world.metering("chat") == (100.0, 10.0, 0.0)  # own 90 left, the pool none
    assert world.consume("chat") == (False, "credits_exhausted")
    assert world.consume("search") == (False, "credits_exhausted")
    world.topup("credits", 7, "pack")
    assert world.metering("chat")[2] == 3.0  # 7 credits ÷ 2, rounded down
    assert world.metering("images")[2] == 1.0  # 7 ÷ 5
    assert world.consume("images") == (True, "")
    assert world.consume("images") == (False, "credits_exhausted")
    assert world.burned() == {"pack": 5.0}


def test_the_own_limit_is_checked_before_the_pool(world: World) -> None:
    for _ in range(3):
        assert world.consume("search") == (True, "")
    assert world.consume("search") == (False, "usage_limit_reached")
    assert world.metering("credits")[1] == 3.0


def test_reports_count_on_the_pool_and_straight_onto_it(world: World) -> None:
    world.report("chat", 4)  # 8 credits
    world.report("credits", 5)  # straight onto the pool
    assert world.metering("credits")[1] == 13.0
    world.report("chat", -10)  # a refund below zero refunds what was counted: 4 units
    assert world.metering("chat")[1] == 0.0
    assert world.metering("credits")[1] == 5.0


def test_a_duplicate_key_moves_neither_counter(world: World) -> None:
    assert world.consume("chat", 3, key="k1") == (True, "")
    assert world.consume("chat", 3, key="k1") == (True, "")
    world.reopen()
    assert world.metering("chat")[1] == 3.0
    assert world.metering("credits")[1] == 6.0


def test_a_quota_on_the_pool_fires_from_a_priced_feature(world: World) -> None:
    world.topup("credits", 100, "big")  # percentages stay relative to the allowance (20)
    for _ in range(4):
        world.consume("chat")  # 8 credits: below 50% of 20
    assert world.state.store.list_deliveries(None, 10) == []
    world.consume("chat")  # 10 credits: 50% of the allowance, not of 120
    (delivery,) = world.state.store.list_deliveries(None, 10)
    event = delivery.payload["event"]
    assert (event["feature"], event["threshold"]["at"], event["limit"]) == ("credits", "50%", 20)


def test_a_used_up_topup_can_enqueue_topup_exhausted_once(tmp_path: Path) -> None:
    """The hook the lifecycle webhooks (design §7.1) plug into: the write that uses a top-up
    up enqueues its `topup.exhausted` entries in its own transaction, once."""
    catalog = parse_catalog(textwrap.dedent(CATALOG))
    store = SqliteStore(tmp_path / "s.db")
    topup = TopUp("pack", "calls", 5.0)
    balance = Balance(10.0, (topup,), JUNE)
    period = datetime(2026, 6, 1, tzinfo=UTC)

    def hook(t: TopUp, at: datetime) -> list[OutboxEntry]:
        event = body(
            LifecycleEvent("topup.exhausted", "a", at, topup_data(t)), "default", f"d-{t.id}"
        )
        return [OutboxEntry(f"d-{t.id}", "webhook", "a", "http://127.0.0.1:9/t", {"event": event})]

    def write(amount: float) -> None:
        report = UsageReport("a", "calls", amount)
        feature = catalog.features["calls"]
        store.record_usage(
            [UsageWrite("acct:a", feature, period, report, balance=balance, on_exhausted=hook)]
        )

    try:
        write(14)  # 4 of 5 burned
        assert store.list_deliveries(None, 10) == []
        write(1)  # the last unit: used up
        write(3)  # beyond: overage, no second event
        write(-4)  # a refund un-burns; using it up again does not fire again either
        write(4)
        (delivery,) = store.list_deliveries(None, 10)
        assert delivery.payload["event"]["type"] == "topup.exhausted"
        assert delivery.payload["event"]["topup"]["id"] == "pack"
    finally:
        store.close()


# -- against a reference model --------------------------------------------------------------


class Model:
    """The design's rule written the simplest way: a list of top-ups and one counter."""

    def __init__(self, allowance: float) -> None:
        self.allowance = allowance
        self.used = 0.0
        self.topups: list[
            list[float | int | str | bool]
        ] = []  # [id, amount, prio, burned, now, live]

    def add(self, topup_id: str, amount: float, priority: int) -> None:
        self.topups.append([topup_id, amount, priority, 0.0, 0.0, True])

    def order(self) -> list[list[float | int | str | bool]]:
        return sorted(self.topups, key=lambda t: (t[2], t[0]))

    def write(self, amount: float) -> None:
        self.used = max(0.0, self.used + amount)
        need = max(0.0, self.used - self.allowance)
        covered = sum(float(t[4]) for t in self.topups)
        if need > covered:
            for t in self.order():
                left = float(t[1]) - float(t[3]) if t[5] else 0.0
                take = min(left, need - covered)
                if take > 0:
                    t[3], t[4] = float(t[3]) + take, float(t[4]) + take
                    covered += take
        else:
            for t in reversed(self.order()):
                give = min(float(t[4]), covered - need)
                if give > 0:
                    t[3], t[4] = float(t[3]) - give, float(t[4]) - give
                    covered -= give

    def reset_period(self) -> None:
        self.used = 0.0
        for t in self.topups:
            t[4] = 0.0


OPS = st.lists(
    st.tuples(
        st.sampled_from(["report", "report", "topup", "void", "month"]),
        st.integers(-6, 12),
        st.integers(1, 3),
    ),
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_stored_balances_equal_a_reference_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, int]]
) -> None:
    w = World(tmp_path_factory.mktemp("model"))
    w.account()
    model = Model(10.0)
    months = 0
    try:
        for kind, n, priority in ops:
            if kind == "report":
                w.report("calls", float(n))
                model.write(float(n))
            elif kind == "topup" and n > 0:
                tid = f"t{len(model.topups)}"
                w.topup("calls", float(n), tid, priority=priority)
                model.add(tid, float(n), priority)
            elif kind == "void" and 0 <= n < len(model.topups) and model.topups[n][5]:
                w.void(str(model.topups[n][0]))
                model.topups[n][5] = False
            elif kind == "month":
                months += 1
                w.now = JUNE + timedelta(days=31 * months)
                model.reset_period()
        assert w.metering("calls")[1] == model.used
        assert w.burned() == {str(t[0]): float(t[3]) for t in model.topups}
        w.reopen()
        assert w.burned() == {str(t[0]): float(t[3]) for t in model.topups}
    finally:
        w.state.store.close()  # type: ignore[attr-defined]
