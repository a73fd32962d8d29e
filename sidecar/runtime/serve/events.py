"""Ingesting events (design §16): routed by the engine, written as the usage reports they make.

Every event of a call is routed against one snapshot at one `now`; the reports of all events
that count go to `LiveState.report` together — the one usage write path of Report, so they
are grouped into one store transaction with their idempotency keys, top-up burns, pool moves,
quota marks and history — and each event is answered from its own reports' outcomes. An event
refused by any check is refused before anything is written, so it changes nothing and fails
no other event of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ...engine import StateView, UsageRejected, UsageReport
from ...engine.events import Event, EventStatus, Routed, Settled, route
from ...engine.write_rule import Status, UsageOutcome
from ..live.state import countable

if TYPE_CHECKING:
    from ..live.state import LiveState


@dataclass(frozen=True, slots=True)
class IngestResult:
    """One event's answer: its status, the features it counted toward with their usage after
    it (the first result's for a `DUPLICATE`), and why for `REJECTED`/`UNMATCHED`."""

    status: EventStatus
    features: tuple[tuple[str, float], ...] = ()
    message: str = ""


def ingest(state: LiveState, events: Sequence[Event]) -> list[IngestResult]:
    """Answer each event in order; returns once every counted event is durable."""
    snap, now = state.snapshot, state.clock()

    def known(account: str) -> bool:
        return account in snap.accounts or account in snap.memberships

    answers: list[IngestResult | tuple[UsageReport, ...]] = []
    for event in events:
        routed = route(snap.catalog, event, now, known)
        if isinstance(routed, Settled):
            answers.append(IngestResult(routed.status, message=routed.message))
            continue
        answers.append(_checked(state, snap, routed, now) or routed.reports)
    reports = [r for a in answers if isinstance(a, tuple) for r in a]
    outcomes = iter(state.report(reports) if reports else [])
    return [
        a if isinstance(a, IngestResult) else _result(a, [next(outcomes) for _ in a])
        for a in answers
    ]


def _checked(
    state: LiveState, snap: StateView, routed: Routed, now: datetime
) -> IngestResult | None:
    """A refusal when one of the event's reports could not be counted (`countable`: text a
    store cannot hold, a time too far ahead); None when all can."""
    for report in routed.reports:
        try:
            countable(snap, report, now, state.report_ahead)
        except UsageRejected as exc:
            return IngestResult(EventStatus.REJECTED, message=f"{report.feature}: {exc}")
    return None


def _result(reports: tuple[UsageReport, ...], outcomes: list[UsageOutcome]) -> IngestResult:
    features = tuple((r.feature, o.usage) for r, o in zip(reports, outcomes, strict=True))
    refused = [o.message for o in outcomes if o.status in (Status.REJECTED, Status.DENIED)]
    if refused:
        return IngestResult(EventStatus.REJECTED, features, "; ".join(refused))
    if all(o.status is Status.DUPLICATE for o in outcomes):
        return IngestResult(EventStatus.DUPLICATE, features)
    return IngestResult(EventStatus.APPLIED, features)
