"""The result of one evaluation, in OpenFeature's vocabulary of reasons and error codes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ...protocol.metering import Denial, Terms
from ..catalog.model import FeatureType
from .balances import TopUpState


class Reason(StrEnum):
    TARGETING_MATCH = "TARGETING_MATCH"
    DEFAULT = "DEFAULT"
    DISABLED = "DISABLED"
    ERROR = "ERROR"


class ErrorCode(StrEnum):
    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    PARSE_ERROR = "PARSE_ERROR"
    GENERAL = "GENERAL"


class EvaluationError(Exception):
    """An evaluation that cannot produce a value; `code` is OpenFeature's error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Metering:
    """The metered part of a decision."""

    limit: float | None  # None when unlimited
    used: float
    remaining: float | None  # None when unlimited
    soft_limit: bool
    overage_cap: float | None
    overage: float
    period_start: datetime
    period_end: datetime | None
    scope_key: str  # which usage counter this reads ("acct:ID" or "sub:ID")
    # Balances (design §5.1): `limit` above is the ceiling C = allowance + burned + remaining.
    allowance: float | None = None  # the period allowance L (None: unlimited)
    topup_burned: float = 0.0  # B: top-up amounts covering usage this period
    topup_remaining: float = 0.0  # T: what the active top-ups can still cover
    topups: tuple[TopUpState, ...] = ()  # in burn order
    pool: PoolShare | None = None  # the credit pool a credit-priced feature draws on
    held: float = 0.0  # H: what active holds reserve (design §17); `remaining` excludes it

    @property
    def unlimited(self) -> bool:
        return self.limit is None

    @property
    def terms(self) -> Terms:
        """The limit side of this answer, for `metered_answer` at another usage or amount."""
        return Terms(
            self.allowance,
            self.soft_limit,
            self.overage_cap,
            self.topup_burned,
            self.topup_remaining,
        )


@dataclass(frozen=True, slots=True)
class PoolShare:
    """The pool of a credit-priced feature: its own decision for `requested × per_unit`."""

    feature: str
    per_unit: float
    decision: Decision


@dataclass(frozen=True, slots=True)
class Decision:
    feature: str
    type: FeatureType
    value: Any  # JSON-shaped: bool, int, float, str, tuple, mapping; metered: the limit
    variant: str
    reason: Reason
    has_access: bool
    denial: Denial | None = None
    metering: Metering | None = None
    unlimited: bool = False
    # The earliest instant after `now` at which this decision could change by time alone (an
    # override expiring, a grant or subscription starting or ending, the usage period ending);
    # None: never. Caches drop the decision then (design §8 "Time").
    valid_until: datetime | None = None
    # When the subscription the decision came from is in its trial: the trial's end (design
    # §6.1; flag metadata `trial` and `trial_ends_at`).
    trial_ends_at: datetime | None = None
    targeted: bool = False  # design §4.1: the feature's targeting rule chose the variant
    # decision 2000: the answer is the caller's default (disabled, or no default variant): no
    # value on any surface, an empty variant, and the provider returns its caller's default
    caller_default: bool = False
    # decision 2000: the feature's own `metadata` (its product's merged in), the product (flagd's
    # flag set, OpenTelemetry's `feature_flag.set.id`) and the catalog version it came from
    # (not compared: it follows from the feature and the catalog version, which are)
    extra_metadata: Mapping[str, bool | int | float | str] = field(
        default_factory=dict, compare=False
    )
    flag_set: str = ""
    flag_set_version: str = ""
