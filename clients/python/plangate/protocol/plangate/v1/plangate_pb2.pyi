import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValueType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALUE_TYPE_UNSPECIFIED: _ClassVar[ValueType]
    VALUE_TYPE_BOOLEAN: _ClassVar[ValueType]
    VALUE_TYPE_INTEGER: _ClassVar[ValueType]
    VALUE_TYPE_FLOAT: _ClassVar[ValueType]
    VALUE_TYPE_STRING: _ClassVar[ValueType]
    VALUE_TYPE_OBJECT: _ClassVar[ValueType]

class UsageMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_MODE_UNSPECIFIED: _ClassVar[UsageMode]
    USAGE_MODE_ADD: _ClassVar[UsageMode]
    USAGE_MODE_SET: _ClassVar[UsageMode]
VALUE_TYPE_UNSPECIFIED: ValueType
VALUE_TYPE_BOOLEAN: ValueType
VALUE_TYPE_INTEGER: ValueType
VALUE_TYPE_FLOAT: ValueType
VALUE_TYPE_STRING: ValueType
VALUE_TYPE_OBJECT: ValueType
USAGE_MODE_UNSPECIFIED: UsageMode
USAGE_MODE_ADD: UsageMode
USAGE_MODE_SET: UsageMode

class EvaluateRequest(_message.Message):
    __slots__ = ("account_id", "feature", "context", "type", "explain")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    feature: str
    context: _struct_pb2.Struct
    type: ValueType
    explain: bool
    def __init__(self, account_id: _Optional[str] = ..., feature: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., type: _Optional[_Union[ValueType, str]] = ..., explain: _Optional[bool] = ...) -> None: ...

class Metering(_message.Message):
    __slots__ = ("limit", "used", "remaining", "unlimited", "soft_limit", "overage_cap", "overage", "period_start", "period_end", "allowance", "topup_burned", "topup_remaining", "pool", "per_unit", "pool_limit", "pool_used", "pool_soft_limit", "pool_overage_cap", "held")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    SOFT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    OVERAGE_CAP_FIELD_NUMBER: _ClassVar[int]
    OVERAGE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    ALLOWANCE_FIELD_NUMBER: _ClassVar[int]
    TOPUP_BURNED_FIELD_NUMBER: _ClassVar[int]
    TOPUP_REMAINING_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    POOL_LIMIT_FIELD_NUMBER: _ClassVar[int]
    POOL_USED_FIELD_NUMBER: _ClassVar[int]
    POOL_SOFT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    POOL_OVERAGE_CAP_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    limit: float
    used: float
    remaining: float
    unlimited: bool
    soft_limit: bool
    overage_cap: float
    overage: float
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    allowance: float
    topup_burned: float
    topup_remaining: float
    pool: str
    per_unit: float
    pool_limit: float
    pool_used: float
    pool_soft_limit: bool
    pool_overage_cap: float
    held: float
    def __init__(self, limit: _Optional[float] = ..., used: _Optional[float] = ..., remaining: _Optional[float] = ..., unlimited: _Optional[bool] = ..., soft_limit: _Optional[bool] = ..., overage_cap: _Optional[float] = ..., overage: _Optional[float] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., allowance: _Optional[float] = ..., topup_burned: _Optional[float] = ..., topup_remaining: _Optional[float] = ..., pool: _Optional[str] = ..., per_unit: _Optional[float] = ..., pool_limit: _Optional[float] = ..., pool_used: _Optional[float] = ..., pool_soft_limit: _Optional[bool] = ..., pool_overage_cap: _Optional[float] = ..., held: _Optional[float] = ...) -> None: ...

class Resolution(_message.Message):
    __slots__ = ("feature", "feature_type", "value", "variant", "reason", "has_access", "denial", "metering", "unlimited", "metadata", "as_boolean", "as_integer", "as_float", "as_string", "as_object", "error_code", "error_message", "valid_until", "volatile", "explain", "context_dependent")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HAS_ACCESS_FIELD_NUMBER: _ClassVar[int]
    DENIAL_FIELD_NUMBER: _ClassVar[int]
    METERING_FIELD_NUMBER: _ClassVar[int]
    UNLIMITED_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    AS_BOOLEAN_FIELD_NUMBER: _ClassVar[int]
    AS_INTEGER_FIELD_NUMBER: _ClassVar[int]
    AS_FLOAT_FIELD_NUMBER: _ClassVar[int]
    AS_STRING_FIELD_NUMBER: _ClassVar[int]
    AS_OBJECT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    VOLATILE_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_DEPENDENT_FIELD_NUMBER: _ClassVar[int]
    feature: str
    feature_type: str
    value: _struct_pb2.Value
    variant: str
    reason: str
    has_access: bool
    denial: str
    metering: Metering
    unlimited: bool
    metadata: _struct_pb2.Struct
    as_boolean: bool
    as_integer: int
    as_float: float
    as_string: str
    as_object: _struct_pb2.Value
    error_code: str
    error_message: str
    valid_until: _timestamp_pb2.Timestamp
    volatile: bool
    explain: str
    context_dependent: bool
    def __init__(self, feature: _Optional[str] = ..., feature_type: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., variant: _Optional[str] = ..., reason: _Optional[str] = ..., has_access: _Optional[bool] = ..., denial: _Optional[str] = ..., metering: _Optional[_Union[Metering, _Mapping]] = ..., unlimited: _Optional[bool] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., as_boolean: _Optional[bool] = ..., as_integer: _Optional[int] = ..., as_float: _Optional[float] = ..., as_string: _Optional[str] = ..., as_object: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., volatile: _Optional[bool] = ..., explain: _Optional[str] = ..., context_dependent: _Optional[bool] = ...) -> None: ...

class EvaluateAllRequest(_message.Message):
    __slots__ = ("account_id", "context", "watch_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    context: _struct_pb2.Struct
    watch_id: str
    def __init__(self, account_id: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., watch_id: _Optional[str] = ...) -> None: ...

class EvaluateAllResponse(_message.Message):
    __slots__ = ("account_id", "catalog_version", "resolutions", "error_code", "error_message")
    class ResolutionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Resolution
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Resolution, _Mapping]] = ...) -> None: ...
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOLUTIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    catalog_version: str
    resolutions: _containers.MessageMap[str, Resolution]
    error_code: str
    error_message: str
    def __init__(self, account_id: _Optional[str] = ..., catalog_version: _Optional[str] = ..., resolutions: _Optional[_Mapping[str, Resolution]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("accounts", "accounts_only")
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_ONLY_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedScalarFieldContainer[str]
    accounts_only: bool
    def __init__(self, accounts: _Optional[_Iterable[str]] = ..., accounts_only: _Optional[bool] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("ready", "catalog_changed", "account_changed", "heartbeat")
    READY_FIELD_NUMBER: _ClassVar[int]
    CATALOG_CHANGED_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_CHANGED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ready: Ready
    catalog_changed: CatalogChanged
    account_changed: AccountChanged
    heartbeat: Heartbeat
    def __init__(self, ready: _Optional[_Union[Ready, _Mapping]] = ..., catalog_changed: _Optional[_Union[CatalogChanged, _Mapping]] = ..., account_changed: _Optional[_Union[AccountChanged, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class Ready(_message.Message):
    __slots__ = ("catalog_version", "all_features", "watch_id")
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALL_FEATURES_FIELD_NUMBER: _ClassVar[int]
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    catalog_version: str
    all_features: _containers.RepeatedScalarFieldContainer[str]
    watch_id: str
    def __init__(self, catalog_version: _Optional[str] = ..., all_features: _Optional[_Iterable[str]] = ..., watch_id: _Optional[str] = ...) -> None: ...

class CatalogChanged(_message.Message):
    __slots__ = ("catalog_version", "features", "all_features")
    CATALOG_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ALL_FEATURES_FIELD_NUMBER: _ClassVar[int]
    catalog_version: str
    features: _containers.RepeatedScalarFieldContainer[str]
    all_features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, catalog_version: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., all_features: _Optional[_Iterable[str]] = ...) -> None: ...

class AccountChanged(_message.Message):
    __slots__ = ("account_ids", "cause", "all_accounts")
    ACCOUNT_IDS_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    ALL_ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    account_ids: _containers.RepeatedScalarFieldContainer[str]
    cause: str
    all_accounts: bool
    def __init__(self, account_ids: _Optional[_Iterable[str]] = ..., cause: _Optional[str] = ..., all_accounts: _Optional[bool] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UsageReport(_message.Message):
    __slots__ = ("account_id", "feature", "amount", "mode", "unique_key", "idempotency_key", "timestamp", "dimensions")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_KEY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    feature: str
    amount: float
    mode: UsageMode
    unique_key: str
    idempotency_key: str
    timestamp: _timestamp_pb2.Timestamp
    dimensions: _containers.ScalarMap[str, str]
    def __init__(self, account_id: _Optional[str] = ..., feature: _Optional[str] = ..., amount: _Optional[float] = ..., mode: _Optional[_Union[UsageMode, str]] = ..., unique_key: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dimensions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("reports",)
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    reports: _containers.RepeatedCompositeFieldContainer[UsageReport]
    def __init__(self, reports: _Optional[_Iterable[_Union[UsageReport, _Mapping]]] = ...) -> None: ...

class ReportResult(_message.Message):
    __slots__ = ("status", "usage", "message", "period_start")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[ReportResult.Status]
        STATUS_APPLIED: _ClassVar[ReportResult.Status]
        STATUS_DUPLICATE: _ClassVar[ReportResult.Status]
        STATUS_REJECTED: _ClassVar[ReportResult.Status]
    STATUS_UNSPECIFIED: ReportResult.Status
    STATUS_APPLIED: ReportResult.Status
    STATUS_DUPLICATE: ReportResult.Status
    STATUS_REJECTED: ReportResult.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    status: ReportResult.Status
    usage: float
    message: str
    period_start: _timestamp_pb2.Timestamp
    def __init__(self, status: _Optional[_Union[ReportResult.Status, str]] = ..., usage: _Optional[float] = ..., message: _Optional[str] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ReportResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ReportResult, _Mapping]]] = ...) -> None: ...

class ConsumeRequest(_message.Message):
    __slots__ = ("account_id", "feature", "amount", "unique_key", "idempotency_key", "dimensions")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_KEY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    feature: str
    amount: float
    unique_key: str
    idempotency_key: str
    dimensions: _containers.ScalarMap[str, str]
    def __init__(self, account_id: _Optional[str] = ..., feature: _Optional[str] = ..., amount: _Optional[float] = ..., unique_key: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., dimensions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("account_id", "feature", "amount", "ttl_seconds", "idempotency_key", "dimensions")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    feature: str
    amount: float
    ttl_seconds: int
    idempotency_key: str
    dimensions: _containers.ScalarMap[str, str]
    def __init__(self, account_id: _Optional[str] = ..., feature: _Optional[str] = ..., amount: _Optional[float] = ..., ttl_seconds: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., dimensions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Hold(_message.Message):
    __slots__ = ("hold_id", "account_id", "feature", "amount", "created_at", "expires_at", "state", "ended_at", "settled_amount")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    SETTLED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    account_id: str
    feature: str
    amount: float
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    state: str
    ended_at: _timestamp_pb2.Timestamp
    settled_amount: float
    def __init__(self, hold_id: _Optional[str] = ..., account_id: _Optional[str] = ..., feature: _Optional[str] = ..., amount: _Optional[float] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[str] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., settled_amount: _Optional[float] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("granted", "hold_id", "denial", "expires_at", "resolution", "duplicate")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    DENIAL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    hold_id: str
    denial: str
    expires_at: _timestamp_pb2.Timestamp
    resolution: Resolution
    duplicate: bool
    def __init__(self, granted: _Optional[bool] = ..., hold_id: _Optional[str] = ..., denial: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resolution: _Optional[_Union[Resolution, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class SettleRequest(_message.Message):
    __slots__ = ("hold_id", "amount", "idempotency_key", "account_id")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    amount: float
    idempotency_key: str
    account_id: str
    def __init__(self, hold_id: _Optional[str] = ..., amount: _Optional[float] = ..., idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ...) -> None: ...

class SettleResponse(_message.Message):
    __slots__ = ("usage", "over_ceiling", "hold", "resolution", "duplicate")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    OVER_CEILING_FIELD_NUMBER: _ClassVar[int]
    HOLD_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    usage: float
    over_ceiling: bool
    hold: Hold
    resolution: Resolution
    duplicate: bool
    def __init__(self, usage: _Optional[float] = ..., over_ceiling: _Optional[bool] = ..., hold: _Optional[_Union[Hold, _Mapping]] = ..., resolution: _Optional[_Union[Resolution, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("hold_id", "idempotency_key", "account_id")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    idempotency_key: str
    account_id: str
    def __init__(self, hold_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., account_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("hold", "resolution", "duplicate")
    HOLD_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    resolution: Resolution
    duplicate: bool
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ..., resolution: _Optional[_Union[Resolution, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class ListHoldsRequest(_message.Message):
    __slots__ = ("account_id", "feature")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    feature: str
    def __init__(self, account_id: _Optional[str] = ..., feature: _Optional[str] = ...) -> None: ...

class ListHoldsResponse(_message.Message):
    __slots__ = ("holds",)
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    holds: _containers.RepeatedCompositeFieldContainer[Hold]
    def __init__(self, holds: _Optional[_Iterable[_Union[Hold, _Mapping]]] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("account_id", "feature", "to", "window")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    feature: str
    to: _timestamp_pb2.Timestamp
    window: str
    def __init__(self, account_id: _Optional[str] = ..., feature: _Optional[str] = ..., to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window: _Optional[str] = ..., **kwargs) -> None: ...

class HistoryPoint(_message.Message):
    __slots__ = ("window_start", "window_end", "usage", "limit")
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    usage: float
    limit: float
    def __init__(self, window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., usage: _Optional[float] = ..., limit: _Optional[float] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[HistoryPoint]
    def __init__(self, points: _Optional[_Iterable[_Union[HistoryPoint, _Mapping]]] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("to",)
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    to: _timestamp_pb2.Timestamp
    def __init__(self, to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., **kwargs) -> None: ...

class ExportRow(_message.Message):
    __slots__ = ("account_id", "feature", "period_start", "period_end", "usage", "limit", "overage", "topups_burned")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OVERAGE_FIELD_NUMBER: _ClassVar[int]
    TOPUPS_BURNED_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    feature: str
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    usage: float
    limit: float
    overage: float
    topups_burned: float
    def __init__(self, account_id: _Optional[str] = ..., feature: _Optional[str] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., usage: _Optional[float] = ..., limit: _Optional[float] = ..., overage: _Optional[float] = ..., topups_burned: _Optional[float] = ...) -> None: ...

class ConsumeResponse(_message.Message):
    __slots__ = ("granted", "denial", "usage", "duplicate", "resolution")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    DENIAL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    denial: str
    usage: float
    duplicate: bool
    resolution: Resolution
    def __init__(self, granted: _Optional[bool] = ..., denial: _Optional[str] = ..., usage: _Optional[float] = ..., duplicate: _Optional[bool] = ..., resolution: _Optional[_Union[Resolution, _Mapping]] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("id", "owner", "plan", "addons", "starts_at", "ends_at", "trial_ends_at", "members", "phases")
    class AddonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    ADDONS_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner: str
    plan: str
    addons: _containers.ScalarMap[str, int]
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    trial_ends_at: _timestamp_pb2.Timestamp
    members: _containers.RepeatedScalarFieldContainer[str]
    phases: _containers.RepeatedCompositeFieldContainer[Phase]
    def __init__(self, id: _Optional[str] = ..., owner: _Optional[str] = ..., plan: _Optional[str] = ..., addons: _Optional[_Mapping[str, int]] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trial_ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., members: _Optional[_Iterable[str]] = ..., phases: _Optional[_Iterable[_Union[Phase, _Mapping]]] = ...) -> None: ...

class Phase(_message.Message):
    __slots__ = ("starts_at", "plan", "addons")
    class AddonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    ADDONS_FIELD_NUMBER: _ClassVar[int]
    starts_at: _timestamp_pb2.Timestamp
    plan: str
    addons: _containers.ScalarMap[str, int]
    def __init__(self, starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., plan: _Optional[str] = ..., addons: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Override(_message.Message):
    __slots__ = ("feature", "value", "expires_at")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    feature: str
    value: _struct_pb2.Value
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, feature: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("id", "feature", "value", "starts_at", "ends_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    feature: str
    value: _struct_pb2.Value
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., feature: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Account(_message.Message):
    __slots__ = ("id", "name", "attributes", "subscriptions", "overrides", "grants", "declared", "topups", "holds")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    DECLARED_FIELD_NUMBER: _ClassVar[int]
    TOPUPS_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    attributes: _struct_pb2.Struct
    subscriptions: _containers.RepeatedCompositeFieldContainer[Subscription]
    overrides: _containers.RepeatedCompositeFieldContainer[Override]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    declared: bool
    topups: _containers.RepeatedCompositeFieldContainer[TopUp]
    holds: _containers.RepeatedCompositeFieldContainer[Hold]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., subscriptions: _Optional[_Iterable[_Union[Subscription, _Mapping]]] = ..., overrides: _Optional[_Iterable[_Union[Override, _Mapping]]] = ..., grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., declared: _Optional[bool] = ..., topups: _Optional[_Iterable[_Union[TopUp, _Mapping]]] = ..., holds: _Optional[_Iterable[_Union[Hold, _Mapping]]] = ...) -> None: ...

class UpsertAccountRequest(_message.Message):
    __slots__ = ("id", "name", "attributes", "clear_attributes")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CLEAR_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    attributes: _struct_pb2.Struct
    clear_attributes: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., clear_attributes: _Optional[bool] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListAccountsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAccountsResponse(_message.Message):
    __slots__ = ("accounts", "next_page_token")
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedCompositeFieldContainer[Account]
    next_page_token: str
    def __init__(self, accounts: _Optional[_Iterable[_Union[Account, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteAccountRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteAccountResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class CreateSubscriptionRequest(_message.Message):
    __slots__ = ("account_id", "plan", "addons", "starts_at", "ends_at", "trial_ends_at", "members", "id", "trial_then", "allow_repeat_trial", "no_trial")
    class AddonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    ADDONS_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_THEN_FIELD_NUMBER: _ClassVar[int]
    ALLOW_REPEAT_TRIAL_FIELD_NUMBER: _ClassVar[int]
    NO_TRIAL_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    plan: str
    addons: _containers.ScalarMap[str, int]
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    trial_ends_at: _timestamp_pb2.Timestamp
    members: _containers.RepeatedScalarFieldContainer[str]
    id: str
    trial_then: str
    allow_repeat_trial: bool
    no_trial: bool
    def __init__(self, account_id: _Optional[str] = ..., plan: _Optional[str] = ..., addons: _Optional[_Mapping[str, int]] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trial_ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., members: _Optional[_Iterable[str]] = ..., id: _Optional[str] = ..., trial_then: _Optional[str] = ..., allow_repeat_trial: _Optional[bool] = ..., no_trial: _Optional[bool] = ...) -> None: ...

class ChangePlanRequest(_message.Message):
    __slots__ = ("account_id", "subscription_id", "plan", "at", "when")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    subscription_id: str
    plan: str
    at: _timestamp_pb2.Timestamp
    when: str
    def __init__(self, account_id: _Optional[str] = ..., subscription_id: _Optional[str] = ..., plan: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., when: _Optional[str] = ...) -> None: ...

class ChangeAddOnsRequest(_message.Message):
    __slots__ = ("account_id", "subscription_id", "addons", "at", "when")
    class AddonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    ADDONS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    subscription_id: str
    addons: _containers.ScalarMap[str, int]
    at: _timestamp_pb2.Timestamp
    when: str
    def __init__(self, account_id: _Optional[str] = ..., subscription_id: _Optional[str] = ..., addons: _Optional[_Mapping[str, int]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., when: _Optional[str] = ...) -> None: ...

class CancelSubscriptionRequest(_message.Message):
    __slots__ = ("account_id", "subscription_id", "at", "when")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    subscription_id: str
    at: _timestamp_pb2.Timestamp
    when: str
    def __init__(self, account_id: _Optional[str] = ..., subscription_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., when: _Optional[str] = ...) -> None: ...

class CancelScheduledChangeRequest(_message.Message):
    __slots__ = ("account_id", "subscription_id", "at")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    subscription_id: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, account_id: _Optional[str] = ..., subscription_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MigratePlanRequest(_message.Message):
    __slots__ = ("from_plan", "to_plan", "at", "when", "dry_run")
    FROM_PLAN_FIELD_NUMBER: _ClassVar[int]
    TO_PLAN_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    from_plan: str
    to_plan: str
    at: _timestamp_pb2.Timestamp
    when: str
    dry_run: bool
    def __init__(self, from_plan: _Optional[str] = ..., to_plan: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., when: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class PlanMove(_message.Message):
    __slots__ = ("account_id", "subscription_id", "from_plan", "to_plan", "at", "skipped")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_PLAN_FIELD_NUMBER: _ClassVar[int]
    TO_PLAN_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    subscription_id: str
    from_plan: str
    to_plan: str
    at: _timestamp_pb2.Timestamp
    skipped: str
    def __init__(self, account_id: _Optional[str] = ..., subscription_id: _Optional[str] = ..., from_plan: _Optional[str] = ..., to_plan: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., skipped: _Optional[str] = ...) -> None: ...

class MigratePlanResponse(_message.Message):
    __slots__ = ("moves", "dry_run")
    MOVES_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    moves: _containers.RepeatedCompositeFieldContainer[PlanMove]
    dry_run: bool
    def __init__(self, moves: _Optional[_Iterable[_Union[PlanMove, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ResumeSubscriptionRequest(_message.Message):
    __slots__ = ("account_id", "subscription_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    subscription_id: str
    def __init__(self, account_id: _Optional[str] = ..., subscription_id: _Optional[str] = ...) -> None: ...

class MemberRequest(_message.Message):
    __slots__ = ("account_id", "subscription_id", "member_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    subscription_id: str
    member_id: str
    def __init__(self, account_id: _Optional[str] = ..., subscription_id: _Optional[str] = ..., member_id: _Optional[str] = ...) -> None: ...

class SetOverrideRequest(_message.Message):
    __slots__ = ("account_id", "feature", "value", "expires_at")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    feature: str
    value: _struct_pb2.Value
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, account_id: _Optional[str] = ..., feature: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ClearOverrideRequest(_message.Message):
    __slots__ = ("account_id", "feature")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    feature: str
    def __init__(self, account_id: _Optional[str] = ..., feature: _Optional[str] = ...) -> None: ...

class CreateGrantRequest(_message.Message):
    __slots__ = ("account_id", "feature", "value", "starts_at", "ends_at", "id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    feature: str
    value: _struct_pb2.Value
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    id: str
    def __init__(self, account_id: _Optional[str] = ..., feature: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., id: _Optional[str] = ...) -> None: ...

class RevokeGrantRequest(_message.Message):
    __slots__ = ("account_id", "grant_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    grant_id: str
    def __init__(self, account_id: _Optional[str] = ..., grant_id: _Optional[str] = ...) -> None: ...

class ResetUsageRequest(_message.Message):
    __slots__ = ("account_id", "feature")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    feature: str
    def __init__(self, account_id: _Optional[str] = ..., feature: _Optional[str] = ...) -> None: ...

class ResetUsageResponse(_message.Message):
    __slots__ = ("previous_usage",)
    PREVIOUS_USAGE_FIELD_NUMBER: _ClassVar[int]
    previous_usage: float
    def __init__(self, previous_usage: _Optional[float] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("id", "kind", "status", "account_id", "feature", "threshold", "target", "attempts", "last_error", "created_at", "updated_at", "next_attempt_at", "event")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    status: str
    account_id: str
    feature: str
    threshold: str
    target: str
    attempts: int
    last_error: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    next_attempt_at: _timestamp_pb2.Timestamp
    event: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., status: _Optional[str] = ..., account_id: _Optional[str] = ..., feature: _Optional[str] = ..., threshold: _Optional[str] = ..., target: _Optional[str] = ..., attempts: _Optional[int] = ..., last_error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListDeliveriesRequest(_message.Message):
    __slots__ = ("status", "page_size", "page_token")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: str
    page_size: int
    page_token: str
    def __init__(self, status: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeliveriesResponse(_message.Message):
    __slots__ = ("deliveries", "next_page_token")
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    next_page_token: str
    def __init__(self, deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("seq", "at", "actor", "action", "account_id", "target", "before", "after")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: _timestamp_pb2.Timestamp
    actor: str
    action: str
    account_id: str
    target: str
    before: _struct_pb2.Struct
    after: _struct_pb2.Struct
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., account_id: _Optional[str] = ..., target: _Optional[str] = ..., before: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., after: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListAuditLogRequest(_message.Message):
    __slots__ = ("account_id", "since", "page_size", "page_token")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    since: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, account_id: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditLogResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RetryDeliveryRequest(_message.Message):
    __slots__ = ("id", "all_failed")
    ID_FIELD_NUMBER: _ClassVar[int]
    ALL_FAILED_FIELD_NUMBER: _ClassVar[int]
    id: str
    all_failed: bool
    def __init__(self, id: _Optional[str] = ..., all_failed: _Optional[bool] = ...) -> None: ...

class RetryDeliveryResponse(_message.Message):
    __slots__ = ("retried", "ids")
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    retried: int
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, retried: _Optional[int] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class TopUp(_message.Message):
    __slots__ = ("id", "feature", "amount", "priority", "effective_at", "expires_at", "voided_at", "burned", "remaining", "active", "burned_this_period")
    ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    VOIDED_AT_FIELD_NUMBER: _ClassVar[int]
    BURNED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    BURNED_THIS_PERIOD_FIELD_NUMBER: _ClassVar[int]
    id: str
    feature: str
    amount: float
    priority: int
    effective_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    voided_at: _timestamp_pb2.Timestamp
    burned: float
    remaining: float
    active: bool
    burned_this_period: float
    def __init__(self, id: _Optional[str] = ..., feature: _Optional[str] = ..., amount: _Optional[float] = ..., priority: _Optional[int] = ..., effective_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., voided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., burned: _Optional[float] = ..., remaining: _Optional[float] = ..., active: _Optional[bool] = ..., burned_this_period: _Optional[float] = ...) -> None: ...

class AddTopUpRequest(_message.Message):
    __slots__ = ("account_id", "feature", "amount", "priority", "effective_at", "expires_at", "id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    feature: str
    amount: float
    priority: int
    effective_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    id: str
    def __init__(self, account_id: _Optional[str] = ..., feature: _Optional[str] = ..., amount: _Optional[float] = ..., priority: _Optional[int] = ..., effective_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., id: _Optional[str] = ...) -> None: ...

class VoidTopUpRequest(_message.Message):
    __slots__ = ("account_id", "topup_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    TOPUP_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    topup_id: str
    def __init__(self, account_id: _Optional[str] = ..., topup_id: _Optional[str] = ...) -> None: ...

class ListTopUpsRequest(_message.Message):
    __slots__ = ("account_id", "feature")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    feature: str
    def __init__(self, account_id: _Optional[str] = ..., feature: _Optional[str] = ...) -> None: ...

class ListTopUpsResponse(_message.Message):
    __slots__ = ("topups",)
    TOPUPS_FIELD_NUMBER: _ClassVar[int]
    topups: _containers.RepeatedCompositeFieldContainer[TopUp]
    def __init__(self, topups: _Optional[_Iterable[_Union[TopUp, _Mapping]]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("specversion", "id", "source", "type", "subject", "time", "data")
    SPECVERSION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    specversion: str
    id: str
    source: str
    type: str
    subject: str
    time: _timestamp_pb2.Timestamp
    data: _struct_pb2.Struct
    def __init__(self, specversion: _Optional[str] = ..., id: _Optional[str] = ..., source: _Optional[str] = ..., type: _Optional[str] = ..., subject: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class IngestFeature(_message.Message):
    __slots__ = ("feature", "usage")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    usage: float
    def __init__(self, feature: _Optional[str] = ..., usage: _Optional[float] = ...) -> None: ...

class IngestResult(_message.Message):
    __slots__ = ("status", "features", "message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: str
    features: _containers.RepeatedCompositeFieldContainer[IngestFeature]
    message: str
    def __init__(self, status: _Optional[str] = ..., features: _Optional[_Iterable[_Union[IngestFeature, _Mapping]]] = ..., message: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[IngestResult]
    def __init__(self, results: _Optional[_Iterable[_Union[IngestResult, _Mapping]]] = ...) -> None: ...

class ImportStripeRequest(_message.Message):
    __slots__ = ("objects_json", "dry_run")
    OBJECTS_JSON_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    objects_json: _containers.RepeatedScalarFieldContainer[str]
    dry_run: bool
    def __init__(self, objects_json: _Optional[_Iterable[str]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ImportStripeResult(_message.Message):
    __slots__ = ("object_id", "object", "outcome", "account_id", "message")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    object: str
    outcome: str
    account_id: str
    message: str
    def __init__(self, object_id: _Optional[str] = ..., object: _Optional[str] = ..., outcome: _Optional[str] = ..., account_id: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ImportStripeResponse(_message.Message):
    __slots__ = ("results", "dry_run")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ImportStripeResult]
    dry_run: bool
    def __init__(self, results: _Optional[_Iterable[_Union[ImportStripeResult, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...
