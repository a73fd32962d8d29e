"""The one runtime facade every face calls for decisions (design §15).

Evaluate, EvaluateAll, Report and Consume each read the live snapshot ONCE and work from it
to the end, and hand back the decision together with its feature, so the native, flagd and
OFREP servicers only translate. A catalog reload in the middle of a request can then never
pair a decision with a feature of another catalog (EvaluateAll used to look features up
again in the newer catalog and fail with a KeyError), and a Consume runs source selection
once instead of three or four times: its counter, its period and the decision after the
write all come from the one evaluation before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ....protocol.metering import FIXED_DENIALS, Denial, metered_answer
from ...catalog.model import Aggregation, Catalog, Feature, FeatureType
from ...engine import (
    Decision,
    ErrorCode,
    EvaluationError,
    StateView,
    UsageRejected,
    UsageReport,
    account_at,
    check_rate_consume,
    evaluate,
    explain,
    rates,
)
from ...engine.events import Event
from ...store.base import Status, UsageOutcome, UsageWrite
from ..live.loads import Loads
from ..live.state import LiveState, countable
from ..writes.usage_write import needs_balance, usage_write
from .events import IngestResult, ingest


@dataclass(frozen=True, slots=True)
class Evaluated:
    """A decision and the feature (of the same catalog) it decides."""

    decision: Decision
    feature: Feature


@dataclass(frozen=True, slots=True)
class EvaluatedAll:
    catalog_version: str
    results: dict[str, Evaluated | EvaluationError]  # every feature of that catalog, in order


@dataclass(frozen=True, slots=True)
class Consumed:
    granted: bool
    usage: float
    denial: str
    duplicate: bool
    after: Evaluated  # the decision once this Consume is counted (or refused)


class Decisions:
    def __init__(self, state: LiveState) -> None:
        self.state = state
        self.loads = Loads(state)  # design §19: faces hold an account before they read it

    @property
    def catalog(self) -> Catalog:
        return self.state.catalog

    def evaluate(self, account_id: str, key: str, context: Mapping[str, Any]) -> Evaluated:
        snap = self.state.snapshot
        decision = evaluate(snap, account_id, key, context, self.state.clock())
        return Evaluated(decision, snap.catalog.features[key])

    def explain(
        self, account_id: str, key: str, context: Mapping[str, Any]
    ) -> tuple[Evaluated | EvaluationError, dict[str, Any]]:
        """`evaluate` with its trail (design §4.1 "Explain"); the feature must exist."""
        snap = self.state.snapshot
        result, trail = explain(snap, account_id, key, context, self.state.clock())
        if isinstance(result, EvaluationError):
            return result, trail
        return Evaluated(result, snap.catalog.features[key]), trail

    def evaluate_all(
        self, account_id: str, context: Mapping[str, Any], flag_set: str | None = None
    ) -> EvaluatedAll:
        """Every feature (of product `flag_set` only, when given: flagd's flag sets, decision
        2007); per-feature errors are results — without a targeting key, those of the features
        that need an account (decision 2000) — and a bad context raises."""
        snap, now = self.state.snapshot, self.state.clock()
        out: dict[str, Evaluated | EvaluationError] = {}
        at = account_at(snap, account_id, now)  # the account's side, once for every feature
        for key, feature in snap.catalog.features.items():
            if flag_set is not None and feature.product != flag_set:
                continue
            try:
                out[key] = Evaluated(evaluate(snap, account_id, key, context, now, at), feature)
            except EvaluationError as exc:
                if exc.code is ErrorCode.INVALID_CONTEXT:
                    raise
                out[key] = exc
        return EvaluatedAll(snap.catalog.version, out)

    def report(self, reports: Sequence[UsageReport]) -> list[UsageOutcome]:
        """Record a batch (resolved against one snapshot); blocks until durable."""
        return self.state.report(reports)

    def ingest(self, events: Sequence[Event]) -> list[IngestResult]:
        """Count each event toward the features its meters feed (design §16); blocks until
        durable."""
        return ingest(self.state, events)

    def consume(self, report: UsageReport) -> Consumed:
        """Count `report.amount` only if access is granted for exactly that amount.

        Raises `UsageRejected` for a report that cannot be counted at all; blocks until durable.
        """
        step = self._consume_write(report)
        if isinstance(step, Consumed):
            return step
        return self._consumed(step, self.state.write_usage([step.write]))

    def start_consume(self, report: UsageReport, executor: Executor) -> Consumed | PendingConsume:
        """`consume` for a caller on the event loop: the evaluation runs here, the write is
        grouped and stored on `executor`. A refusal that needs no write is answered at once;
        otherwise await `stored` and pass its outcomes to `finish_consume`."""
        step = self._consume_write(report)
        if isinstance(step, Consumed):
            return step
        return PendingConsume(step, self.state.write_usage_later([step.write], executor))

    def finish_consume(self, pending: PendingConsume, stored: list[UsageOutcome]) -> Consumed:
        """The answer to a `start_consume` once its write is durable."""
        self.state.usage_written([pending.step.write], stored)
        return self._consumed(pending.step, stored)

    def _consume_write(self, report: UsageReport) -> Consumed | _ConsumeStep:
        """The write a Consume makes, or its answer when no write is to be made."""
        state = self.state
        snap, now = state.snapshot, state.clock()
        rate = snap.catalog.features.get(report.feature)
        if rate is not None and rate.type is FeatureType.RATE:
            return self._consume_rate(snap, report, rate, now)  # design §17: never the store
        feature = countable(snap, report, now, state.report_ahead)
        requested = 1.0 if feature.aggregation is Aggregation.UNIQUE else report.amount
        if requested < 0:
            raise UsageRejected("consume takes a non-negative amount; report refunds instead")
        at = report.timestamp or now
        context = {**report.context(feature), "requested": requested}
        decision = evaluate(snap, report.account, feature.key, context, at)
        m = decision.metering
        if m is None or decision.denial in FIXED_DENIALS:  # no usage level changes these
            denial = decision.denial.value if decision.denial else Denial.NO_ENTITLEMENT.value
            return Consumed(
                False, m.used if m else 0.0, denial, False, Evaluated(decision, feature)
            )
        # The limit comes from the snapshot; the check runs in the store transaction against the
        # stored (locked) counter, in order with the writes grouped with it: exact, even when
        # other Consume and Report calls (or other sidecars) write the same counter. Top-ups and
        # the credit pool are checked there too, from their stored burn and pool counters.
        write = usage_write(
            snap,
            report,
            feature,
            at=at,
            now=now,
            environment=state.store.environment,
            decision=decision,
            requested=requested,
        )
        balanced = needs_balance(snap, report.account, feature)
        return _ConsumeStep(write, decision, at, balanced)

    def _consume_rate(
        self, snap: StateView, report: UsageReport, feature: Feature, now: datetime
    ) -> Consumed:
        """Design §17: admit `report.amount` into the sidecar's in-memory window if the count
        over the sliding window ending now plus it stays within the limit. No store write, no
        usage, no change event."""
        check_rate_consume(report)
        if report.account not in snap.accounts and report.account not in snap.memberships:
            raise UsageRejected(
                f"unknown account {report.account!r}; create it first (Admin.UpsertAccount)"
            )
        context = {"requested": report.amount}
        decision = evaluate(snap, report.account, feature.key, context, now)
        m = decision.metering
        if m is None or decision.denial in FIXED_DENIALS or m.limit == 0:
            denial = decision.denial or Denial.NO_ENTITLEMENT
            used = m.used if m else 0.0
            return Consumed(False, used, denial.value, False, Evaluated(decision, feature))
        admission, duplicate = self.state.rates.admit(
            (report.account, feature.key),
            feature.window.seconds,
            now.timestamp(),
            report.amount,
            m.limit,
            report.idempotency_key,
        )
        after = Evaluated(rates.at_count(decision, admission.used), feature)
        return Consumed(admission.granted, admission.used, admission.denial, duplicate, after)

    def _consumed(self, step: _ConsumeStep, stored: list[UsageOutcome]) -> Consumed:
        outcome, feature = stored[0], step.write.feature
        if step.balanced:  # burns and the pool moved too: evaluate again from the new counters
            report = step.write.report
            after = evaluate(
                self.state.snapshot, report.account, feature.key, report.context(feature), step.at
            )
        else:
            after = _at_usage(step.decision, outcome.usage)
        return Consumed(
            outcome.status is Status.APPLIED
            or (outcome.status is Status.DUPLICATE and not outcome.message),
            outcome.usage,
            outcome.message,
            outcome.status is Status.DUPLICATE,
            Evaluated(after, feature),
        )


@dataclass(frozen=True, slots=True)
class _ConsumeStep:
    """A Consume between its evaluation and its write."""

    write: UsageWrite
    decision: Decision
    at: datetime
    balanced: bool


@dataclass(frozen=True, slots=True)
class PendingConsume:
    """A Consume whose write is being stored; `stored` gets its outcomes once durable."""

    step: _ConsumeStep
    stored: Future[list[UsageOutcome]]


def _at_usage(decision: Decision, used: float) -> Decision:
    """`decision` with its counter at `used`, as an evaluation with the default request (1)
    would see it right after the write (the same source, limit and period). Only for a write
    that moved no top-up and no pool (those evaluate again, from the counters it changed)."""
    m = decision.metering
    assert m is not None
    answer = metered_answer(m.terms, used, 1.0, held=m.held)
    metering = replace(m, used=used, remaining=answer.remaining, overage=answer.overage)
    return replace(decision, has_access=answer.has_access, denial=answer.denial, metering=metering)
