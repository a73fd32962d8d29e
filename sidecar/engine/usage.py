"""Usage arithmetic (design §5): validating a report and computing a counter's next value.

The store decides *where* and *atomically*; this module decides *what*: the same
rules hold for SQLite, PostgreSQL and the tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from ..catalog.model import EMPTY, Aggregation, Feature, FeatureType
from .text import key_problem, shown


class Mode(StrEnum):
    DEFAULT = ""  # the feature's natural mode: add for sum, set for gauge, count for unique
    ADD = "add"
    SET = "set"


@dataclass(frozen=True, slots=True)
class UsageReport:
    account: str
    feature: str
    amount: float = 1.0
    mode: Mode = Mode.DEFAULT
    unique_key: str = ""
    idempotency_key: str = ""
    timestamp: datetime | None = None  # None: now
    # design §16: named dimension values (strings), e.g. the `by` value a credit rate reads
    dimensions: Mapping[str, str] = field(default_factory=lambda: EMPTY)

    def context(self, feature: Feature) -> dict[str, str]:
        """The evaluation context this report's dimensions give `feature`: its credit price's
        `by` value, when the report names it."""
        by = feature.credits.by if feature.credits is not None else None
        return {by: self.dimensions[by]} if by is not None and by in self.dimensions else {}


class UsageRejected(ValueError):
    """A report that cannot be applied; the message says what to change."""


def check_instant(report: UsageReport, now: datetime, ahead: timedelta) -> None:
    """Refuse a report dated more than `ahead` past `now`: usage is reported when it happens
    (a late one counts in its own past period), and a report dated years ahead would count
    in a period nobody has reached, where no limit of today sees it."""
    at = report.timestamp
    if at is not None and at - now > ahead:
        raise UsageRejected(
            f"timestamp {at.isoformat()} is {at - now} ahead of the sidecar's clock "
            f"({now.isoformat()}); at most {ahead.total_seconds():g} s ahead is accepted "
            "(--max-report-ahead-seconds): report usage when it happens"
        )


def check_report(feature: Feature | None, report: UsageReport) -> Feature:
    """The report's feature, or `UsageRejected` explaining why the report is unusable."""
    _check_names(report)
    if feature is None:
        raise UsageRejected(f"unknown feature {shown(report.feature)}")
    if feature.type is FeatureType.RATE:
        raise UsageRejected(
            f"{feature.key} is a rate feature: its window is counted by Consume in the "
            "sidecar's memory and takes no reports; call Consume (PlanGateProvider.consume)"
        )
    if not feature.counted:
        raise UsageRejected(
            f"{feature.key} is a {feature.type.value} feature; only metered features take usage"
        )
    if not math.isfinite(report.amount):
        raise UsageRejected(f"amount must be a finite number, got {report.amount!r}")
    if feature.aggregation is Aggregation.UNIQUE:
        if not report.unique_key:
            raise UsageRejected(
                f"{feature.key} counts unique keys: set unique_key (e.g. the user id)"
            )
        if report.mode is Mode.SET:
            raise UsageRejected(f"{feature.key} counts unique keys; mode 'set' does not apply")
    elif report.unique_key:
        raise UsageRejected(
            f"{feature.key} aggregates by {feature.aggregation.value}; unique_key applies only to unique features"
        )
    if (
        feature.aggregation is Aggregation.GAUGE
        and report.mode is not Mode.ADD
        and report.amount < 0
    ):
        raise UsageRejected(f"{feature.key} is a gauge: the value set must be >= 0")
    return feature


def check_rate_consume(report: UsageReport) -> None:
    """Design §17: a rate `Consume` counts `amount` now; what a report sets beyond that
    (a unique key, a mode, a past instant) does not apply to a rate window."""
    _check_names(report)
    if not math.isfinite(report.amount) or report.amount < 0:
        raise UsageRejected(f"amount must be a finite number >= 0, got {report.amount!r}")
    if report.unique_key or report.mode is Mode.SET or report.timestamp is not None:
        raise UsageRejected(
            f"{report.feature} is a rate feature: a Consume counts `amount` now; unique_key, "
            "mode and timestamp do not apply"
        )


def _check_names(report: UsageReport) -> None:
    if not report.account:
        raise UsageRejected("account is required")
    for name, value in (
        ("account", report.account),
        ("feature", report.feature),
        ("unique_key", report.unique_key),
        ("idempotency_key", report.idempotency_key),
    ):
        problem = key_problem(value)
        if problem is not None:
            raise UsageRejected(f"{name} {problem}")


def next_value(feature: Feature, current: float, report: UsageReport, new_unique: bool) -> float:
    """The counter after applying `report`; `new_unique` says whether its unique key is unseen."""
    if feature.aggregation is Aggregation.UNIQUE:
        return float(current + 1 if new_unique else current)
    setting = report.mode is Mode.SET or (
        report.mode is Mode.DEFAULT and feature.aggregation is Aggregation.GAUGE
    )
    return float(max(0.0, report.amount if setting else current + report.amount))
