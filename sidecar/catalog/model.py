"""Immutable typed objects that a loaded catalog is made of.

Everything here is frozen: a snapshot is shared by every evaluation thread, and a
catalog change builds a new one rather than editing this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeAlias

from .frozen import quick_init

EMPTY: Mapping[str, Any] = MappingProxyType({})
"""One shared empty read-only mapping, so a million accounts without overrides hold no dicts."""


class FeatureType(StrEnum):
    BOOLEAN = "boolean"
    FLAG = "flag"
    INTEGER = "integer"
    FLOAT = "float"  # OpenFeature's float (decision 2000): flagd float flags carry over
    STRING = "string"
    LIST = "list"
    OBJECT = "object"
    METERED = "metered"
    CREDITS = "credits"  # a balance pool that credit-priced metered features draw on (design §5.1)
    RATE = "rate"  # requests per sliding window, counted in the sidecar's memory (design §17)


class RateWindow(StrEnum):
    """The length of a `rate` feature's sliding window (design §17)."""

    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"

    @property
    def seconds(self) -> float:
        return _WINDOW_SECONDS[self]


_WINDOW_SECONDS = {RateWindow.SECOND: 1.0, RateWindow.MINUTE: 60.0, RateWindow.HOUR: 3600.0}


class Aggregation(StrEnum):
    SUM = "sum"
    UNIQUE = "unique"
    GAUGE = "gauge"


class Reset(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"
    NEVER = "never"


class Anchor(StrEnum):
    SUBSCRIPTION = "subscription"
    CALENDAR = "calendar"


class Scope(StrEnum):
    ACCOUNT = "account"
    SUBSCRIPTION = "subscription"


class _Unlimited:
    """The single "unlimited" entitlement value (integer and metered features)."""

    _instance: _Unlimited | None = None

    def __new__(cls) -> _Unlimited:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNLIMITED"

    def __reduce__(self) -> str:
        return "UNLIMITED"


UNLIMITED = _Unlimited()


@dataclass(frozen=True, slots=True)
class MeteredLimit:
    """A metered entitlement: a hard limit, or a soft one with an optional overage cap."""

    limit: float | None  # None means unlimited
    soft: bool = False
    overage_cap: float | None = None

    def __post_init__(self) -> None:
        # Always floats: `MeteredLimit(0)` (or 0 + 0 × quantity) must not leave an int
        # where the engine calls float methods (`int.is_integer` is Python 3.12+ only).
        if self.limit is not None and type(self.limit) is not float:
            object.__setattr__(self, "limit", float(self.limit))
        if self.overage_cap is not None and type(self.overage_cap) is not float:
            object.__setattr__(self, "overage_cap", float(self.overage_cap))

    @property
    def unlimited(self) -> bool:
        return self.limit is None


JSONValue: TypeAlias = Any
"""A JSON-shaped value (objects are read-only mappings, arrays are tuples)."""

EntitlementValue: TypeAlias = bool | int | float | str | tuple[str, ...] | Mapping[str, Any]
"""Value of an entitlement: bool, int/float or UNLIMITED, str, tuple (list), mapping, MeteredLimit."""

Entitlement: TypeAlias = EntitlementValue | _Unlimited | MeteredLimit


def freeze(value: JSONValue) -> JSONValue:
    """Deep-freeze JSON data: dicts become read-only mappings, lists tuples."""
    if isinstance(value, Mapping):
        # Empty objects (most accounts' attributes) share EMPTY instead of each holding a dict.
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()}) if value else EMPTY
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: JSONValue) -> JSONValue:
    """The inverse of `freeze`, for serialisation (JSON, protobuf Struct)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Targeting:
    """A feature's variants and its flagd targeting rule (design §4.1), checked at load.

    `rule` is plain JSON Logic (dicts and lists, every `$ref` replaced by its evaluator), the
    shape flagd-core's evaluator walks; equality is by `canonical`, its JSON text with the
    variants, so a catalog reload sees a changed rule as a changed feature."""

    rule: Any = field(compare=False)  # None: variants only, no rule (flagd's `targeting: {}`)
    variants: Mapping[str, Entitlement] = field(compare=False)
    volatile: bool  # the rule reads `$flagd.timestamp`: the answer changes with the clock
    canonical: str
    # the rule reads a context attribute (not only the account, its plans and the clock): an
    # answer holds for that context alone (design §21, `context_dependent`)
    reads_context: bool = False


@dataclass(frozen=True, slots=True)
class CreditPrice:
    """`credits: {pool, per_unit}` on a metered feature: each unit also uses `per_unit` credits
    of the `pool` feature (design §5.1)."""

    pool: str  # the pool's feature key
    per_unit: float
    # design §16: `by: <dimension>` prices each unit at `rates[value]` (`per_unit` for others)
    by: str | None = None
    rates: Mapping[str, float] = field(default_factory=lambda: EMPTY)

    def rate(self, value: str | None) -> float:
        """The credits per unit for a `by` dimension value (None: not given)."""
        return self.per_unit if value is None else self.rates.get(value, self.per_unit)


JsonPath: TypeAlias = tuple[str | int, ...]
"""A parsed JSONPath of design §16's subset: the steps below `$` (keys and array indexes)."""


@dataclass(frozen=True, slots=True)
class Meter:
    """A catalog `meters:` entry (design §16): which events it reads and what it takes from
    their `data` — the amount (`value`; None: each event counts 1), the distinct key of
    `unique` features and the named `dimensions` features filter by."""

    key: str
    event_type: str
    value: JsonPath | None = None
    unique: JsonPath | None = None
    dimensions: Mapping[str, JsonPath] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class MeterUse:
    """A feature's `meter:`: the meter it counts and the dimension values an event must have
    (`where`: dimension -> accepted values as strings; every key must match)."""

    key: str
    where: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class Feature:
    key: str  # the evaluation key: slug, or "product/slug" where the slug is shared
    slug: str
    name: str
    product: str  # product slug
    type: FeatureType
    default: JSONValue
    archived: bool = False
    description: str = ""
    # integer
    min: float | None = None
    max: float | None = None
    step: float | None = None
    infinite: int = -1
    # string / list
    values: tuple[str, ...] | None = None
    # metered
    unit: str = ""
    aggregation: Aggregation = Aggregation.SUM
    reset: Reset = Reset.MONTHLY
    anchor: Anchor = Anchor.CALENDAR
    scope: Scope = Scope.ACCOUNT
    # design §4.1: variants and targeting (non-metered features only)
    targeting: Targeting | None = None
    credits: CreditPrice | None = None  # metered features priced in a pool's credits
    meter: MeterUse | None = None  # design §16: the events this metered feature counts
    window: RateWindow = RateWindow.MINUTE  # design §17: a `rate` feature's sliding window
    # decision 2000: the variant name a default answer carries ("default" when no variant has
    # the default's value); `caller_default`: a feature with variants and no default answers
    # the caller's default (flagd's missing `defaultVariant`)
    default_variant: str = "default"
    caller_default: bool = False
    # decision 2000: the feature's and its product's `metadata` (the feature's wins), scalars
    metadata: Mapping[str, bool | int | float | str] = field(default_factory=lambda: EMPTY)

    @property
    def counted(self) -> bool:
        """Whether the feature keeps usage counters: metered features and credit pools."""
        return self.type is FeatureType.METERED or self.type is FeatureType.CREDITS

    @property
    def volatile(self) -> bool:
        """Whether its answer may change with the clock alone, no write announcing it (its
        targeting reads `$flagd.timestamp`, design §4.1): no cache keeps it, and OFREP leaves
        it out of the bulk ETag and of `refetchEvaluation` (decision 2010). A rate window
        (design §17) slides with the clock, so a `rate` feature is volatile too."""
        if self.type is FeatureType.RATE:
            return True
        return self.targeting is not None and self.targeting.volatile


@dataclass(frozen=True, slots=True)
class Threshold:
    """A quota threshold: a fraction of the limit (0.8 for "80%") or an absolute amount."""

    percent: float | None = None
    amount: float | None = None

    def value_for(self, limit: float) -> float:
        return self.amount if self.amount is not None else limit * (self.percent or 0) / 100


@dataclass(frozen=True, slots=True)
class QuotaAction:
    kind: str  # "webhook" | "override" | "change_plan"
    target: str = ""  # webhook URL or plan key
    feature: str = ""  # override: feature key
    value: JSONValue = None  # override: value
    secret_env: str = ""
    secret_file: str = ""


@dataclass(frozen=True, slots=True)
class Quota:
    feature: str
    thresholds: tuple[Threshold, ...]
    actions: tuple[QuotaAction, ...]


@dataclass(frozen=True, slots=True)
class Price:
    amount: float
    currency: str
    interval: str


@dataclass(frozen=True, slots=True)
class Trial:
    """A plan's trial (design §6.1): `days` long, then `continue` (stay on the plan),
    `cancel` (the subscription ends) or the key of the plan to move to."""

    days: int
    then: str = "continue"


@dataclass(frozen=True, slots=True)
class Plan:
    key: str
    slug: str
    name: str
    product: str
    extends: str | None
    own: Mapping[str, Entitlement]  # entitlements written on this plan
    entitlements: Mapping[str, Entitlement]  # own + inherited (own win)
    quotas: tuple[Quota, ...] = ()
    price: Price | None = None
    trial: Trial | None = None
    superseded_by: str | None = None  # design §6.1: keeps its subscribers, takes no new ones


@dataclass(frozen=True, slots=True)
class AddOn:
    key: str
    slug: str
    name: str
    product: str
    requires: frozenset[str]  # plan keys; empty = any plan of the product
    max_quantity: int
    entitlements: Mapping[str, Entitlement]


@dataclass(frozen=True, slots=True)
class Product:
    slug: str
    name: str
    metadata: Mapping[str, bool | int | float | str] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class Phase:
    """A scheduled change of a subscription (design §6.1): from `starts_at` on, the
    subscription has this plan and these add-ons, until the next phase or its end."""

    starts_at: datetime
    plan: str
    addons: Mapping[str, int] = field(default_factory=lambda: EMPTY)


@quick_init  # built once per stored subscription at start-up
@dataclass(frozen=True, slots=True)
class Subscription:
    """`plan` and `addons` hold from `starts_at`; `phases` (sorted by start) replace them
    later on. Everything is written ahead of time, so the phase in force at any instant is
    a pure function of the record (`at`)."""

    id: str
    owner: str
    plan: str
    addons: Mapping[str, int] = field(default_factory=lambda: EMPTY)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    trial_ends_at: datetime | None = None
    members: tuple[str, ...] = ()
    phases: tuple[Phase, ...] = ()

    def active_at(self, now: datetime) -> bool:
        return (self.starts_at is None or self.starts_at <= now) and (
            self.ends_at is None or now < self.ends_at
        )

    def at(self, now: datetime) -> Subscription:
        """This subscription with the plan and add-ons of the phase in force at `now`
        (itself when no phase has started); the id, start (the period anchor) and end stay."""
        current: Phase | None = None
        for phase in self.phases:
            if phase.starts_at > now:
                break
            current = phase
        if current is None:
            return self
        return replace(self, plan=current.plan, addons=current.addons, phases=())

    def next_phase_start(self, now: datetime) -> datetime | None:
        """The first phase start after `now`: an instant at which decisions may change."""
        return next((p.starts_at for p in self.phases if p.starts_at > now), None)


@dataclass(frozen=True, slots=True)
class Override:
    feature: str
    value: Entitlement
    expires_at: datetime | None = None

    def active_at(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class Grant:
    id: str
    feature: str
    value: Entitlement
    starts_at: datetime | None = None
    ends_at: datetime | None = None

    def active_at(self, now: datetime) -> bool:
        return (self.starts_at is None or self.starts_at <= now) and (
            self.ends_at is None or now < self.ends_at
        )


DEFAULT_TOPUP_PRIORITY = 10


@dataclass(frozen=True, slots=True)
class TopUp:
    """A balance added on a `sum` or `credits` feature (design §5.1): on top of the period
    allowance, surviving period resets until burned, expired or voided."""

    id: str
    feature: str
    amount: float
    priority: int = DEFAULT_TOPUP_PRIORITY  # lower burns first
    effective_at: datetime | None = None  # None: from the start
    expires_at: datetime | None = None
    voided_at: datetime | None = None

    @property
    def ends_at(self) -> datetime | None:
        """When the remainder stops counting: the earlier of expiry and void."""
        if self.voided_at is None or (
            self.expires_at is not None and self.expires_at <= self.voided_at
        ):
            return self.expires_at
        return self.voided_at

    def active_at(self, now: datetime) -> bool:
        end = self.ends_at
        return (self.effective_at is None or self.effective_at <= now) and (
            end is None or now < end
        )


@quick_init  # built once per stored account at start-up
@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str = ""
    attributes: Mapping[str, JSONValue] = field(default_factory=lambda: EMPTY)
    subscriptions: tuple[Subscription, ...] = ()
    overrides: Mapping[str, Override] = field(default_factory=lambda: EMPTY)
    grants: tuple[Grant, ...] = ()
    topups: tuple[TopUp, ...] = ()
    declared: bool = False  # True when the catalog file declares it (it is then read-only)


LIFECYCLE_EVENTS = (
    "subscription.created",
    "subscription.updated",
    "subscription.canceled",
    "subscription.ended",
    "trial.ending",
    "trial.ended",
    "topup.added",
    "topup.exhausted",
    "topup.expired",
    "quota.threshold_crossed",
)
"""The event names a `webhooks:` endpoint may subscribe to (design §7.1)."""


@dataclass(frozen=True, slots=True)
class Webhook:
    """A lifecycle endpoint (`webhooks:` in the catalog): where to POST which events, and the
    secret to sign them with, named exactly as a quota webhook action names it."""

    url: str
    events: frozenset[str]
    secret_env: str = ""
    secret_file: str = ""

    def wants(self, event: str) -> bool:
        return event in self.events


@dataclass(frozen=True, slots=True)
class Catalog:
    """A validated catalog: every reference in it resolves."""

    version: str  # content hash: changes exactly when the catalog changes
    source: str  # file path, for error messages
    products: Mapping[str, Product]
    features: Mapping[str, Feature]  # by evaluation key
    plans: Mapping[str, Plan]  # by plan key
    addons: Mapping[str, AddOn]  # by add-on key
    accounts: Mapping[str, Account]  # declared in the file, by id
    webhooks: tuple[Webhook, ...] = ()  # lifecycle endpoints (design §7.1)
    has_accounts_key: bool = False  # the file writes `accounts:` (even `accounts: []`)
    stripe: StripeConnection | None = None  # `connections: stripe:` (design §18)
    warnings: tuple[str, ...] = ()  # served anyway; `plangate validate` prints them (decision 2000)
    meters: Mapping[str, Meter] = field(default_factory=lambda: EMPTY)  # by key (design §16)

    def feature(self, key: str) -> Feature | None:
        return self.features.get(key)


@dataclass(frozen=True, slots=True)
class StripeTopUp:
    """What a one-off Stripe price sells as a top-up (design §18): `amount` per unit bought."""

    feature: str
    amount: float
    expires_days: int | None = None


@dataclass(frozen=True, slots=True)
class StripePrice:
    """What one Stripe price (by id or `lookup_key`) sells: exactly one of the three."""

    plan: str = ""
    addon: str = ""
    topup: StripeTopUp | None = None


@dataclass(frozen=True, slots=True)
class StripeConnection:
    """`connections: stripe:` (design §18): how Stripe's customers, subscriptions and invoices
    become PlanGate's accounts, subscriptions and top-ups."""

    webhook_secret_env: str = ""
    webhook_secret_file: str = ""
    account_id: str = ""  # customer field path naming the account; "" = the customer id
    attributes: Mapping[str, str] = field(default_factory=lambda: EMPTY)  # name -> field path
    prices: Mapping[str, StripePrice] = field(default_factory=lambda: EMPTY)
    past_due: str = "keep"  # keep | end
    export_api_key_env: str = ""
    export_meters: Mapping[str, str] = field(default_factory=lambda: EMPTY)  # feature -> event
