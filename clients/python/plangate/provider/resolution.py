"""From a sidecar `Resolution` to OpenFeature's `FlagResolutionDetails`, or an OpenFeature error.

The sidecar already resolved every type that fits the feature (design §4 table); an absent
typed field is a type mismatch. Errors are raised as the SDK's exceptions, so the SDK fills
in the caller's default, reason ERROR and the error code uniformly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

import grpc
from openfeature.exception import (
    FlagNotFoundError,
    GeneralError,
    InvalidContextError,
    OpenFeatureError,
    ParseError,
    ProviderNotReadyError,
    TargetingKeyMissingError,
    TypeMismatchError,
)
from openfeature.flag_evaluation import FlagResolutionDetails, FlagType
from plangate.protocol.kinds import KINDS_OF
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import from_struct, from_value

from .metering import COUNTED

_ERRORS: dict[str, Callable[[str], OpenFeatureError]] = {
    "FLAG_NOT_FOUND": FlagNotFoundError,
    "TYPE_MISMATCH": TypeMismatchError,
    "TARGETING_KEY_MISSING": TargetingKeyMissingError,
    "INVALID_CONTEXT": InvalidContextError,
    "PARSE_ERROR": ParseError,
}

_FIELD = {
    FlagType.BOOLEAN: "as_boolean",
    FlagType.INTEGER: "as_integer",
    FlagType.FLOAT: "as_float",
    FlagType.STRING: "as_string",
    FlagType.OBJECT: "as_object",
}


def raise_error(code: str, message: str) -> NoReturn:
    """Raise the SDK exception for an OpenFeature error code sent by the sidecar."""
    raise _error(code, message)


def _error(code: str, message: str) -> OpenFeatureError:
    factory = _ERRORS.get(code)
    return factory(message) if factory else GeneralError(f"{code}: {message}")


def raise_rpc_error(error: grpc.RpcError, target: str) -> NoReturn:
    """A failed call: unreachable sidecar = not ready; anything else = general error."""
    code = error.code() if hasattr(error, "code") else None
    detail = error.details() if hasattr(error, "details") else str(error)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        name = code.name if code else "UNAVAILABLE"
        raise ProviderNotReadyError(f"PlanGate sidecar at {target} did not answer ({name})")
    raise GeneralError(f"PlanGate sidecar at {target}: {code.name if code else 'error'}: {detail}")


def details(res: pb.Resolution, kind: FlagType) -> FlagResolutionDetails[Any]:
    """The value of `res` as `kind`, with its variant, reason and flag metadata."""
    return outcome(res, kind).details()


Metadata = Mapping[str, bool | int | float | str]


@dataclass(frozen=True, slots=True)
class Outcome:
    """`res` read as one flag type, converted once so a cache hit replays it cheaply.

    Converting a `Resolution` (protobuf Struct -> dict through `json_format`, type checks,
    error mapping) costs more than the rest of an evaluation; a cached resolution never
    changes, so the conversion is done once per (entry, feature, type) and `details()` only
    builds the per-call objects. Anything a caller could mutate (the metadata dict, object
    values) is copied per call, so callers never share state with the cache or each other.
    """

    source: pb.Resolution
    metered: bool  # a metered feature without error: pending usage or `requested` may move it
    value: Any = None
    reason: str | None = None
    variant: str | None = None
    flag_metadata: Metadata = field(default_factory=dict)
    error: Callable[[], OpenFeatureError] | None = None  # raised afresh on every call
    mutable_value: bool = False  # an object value: copied per call

    def details(self) -> FlagResolutionDetails[Any]:
        if self.error is not None:
            raise self.error()
        return FlagResolutionDetails(
            value=_copy(self.value) if self.mutable_value else self.value,
            reason=self.reason,
            variant=self.variant,
            flag_metadata=dict(self.flag_metadata),
        )


class _CallerDefault:
    """The value of an answer that means "the caller's default"; the provider's resolve
    methods replace it with their `default_value`."""

    def __repr__(self) -> str:
        return "CALLER_DEFAULT"


CALLER_DEFAULT: Any = _CallerDefault()


def is_caller_default(res: pb.Resolution) -> bool:
    """A DEFAULT or DISABLED answer with no value and an empty variant: the sidecar says
    "use the caller's default" (a disabled feature, or one without a default variant), as
    flagd and OFREP do (PlanGate decision 2002)."""
    return (
        res.reason in ("DEFAULT", "DISABLED")
        and not res.variant
        and not res.error_code
        and not res.HasField("value")
    )


def outcome(res: pb.Resolution, kind: FlagType) -> Outcome:
    """Everything `details` needs from `res` as `kind`, or the error it must raise."""
    if is_caller_default(res):
        if kind.value.lower() not in KINDS_OF.get(res.feature_type, ()):
            allowed = ", ".join(sorted(KINDS_OF.get(res.feature_type, ())))
            message = f"{res.feature} is a {res.feature_type} feature; resolve it as {allowed}"
            return Outcome(res, False, error=partial(TypeMismatchError, message))
        return Outcome(res, False, CALLER_DEFAULT, res.reason, None, metadata(res))
    metered = res.feature_type in COUNTED and not res.error_code
    if res.error_code:
        message = res.error_message or res.error_code
        return Outcome(res, metered, error=partial(_error, res.error_code, message))
    field_name = _FIELD[kind]
    if not res.HasField(field_name):
        message = (
            f"{res.feature} is a {res.feature_type} feature; resolve it as "
            f"{', '.join(fits(res))}, not {kind.value.lower()}"
        )
        return Outcome(res, metered, error=partial(TypeMismatchError, message))
    return Outcome(
        res,
        metered,
        value=_value(res, kind, field_name),
        reason=res.reason or None,
        variant=res.variant or None,
        flag_metadata=metadata(res),
        mutable_value=kind is FlagType.OBJECT,
    )


def _value(res: pb.Resolution, kind: FlagType, field_name: str) -> Any:
    if kind is FlagType.OBJECT:
        value = from_value(res.as_object)
        if value is None:
            # An empty list/struct `Value` that was never given its kind reads as null;
            # OpenFeature object values cannot be null, and the feature type says which.
            value = [] if res.feature_type == "list" else {}
        return value
    if kind is FlagType.FLOAT:
        return float(res.as_float)
    return getattr(res, field_name)


def _copy(value: Any) -> Any:
    """A deep copy of a JSON-shaped value (much cheaper than `copy.deepcopy`)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def metadata(res: pb.Resolution) -> Metadata:
    """The sidecar's flag metadata (scalars only, design §4), as plain Python values."""
    return {
        k: v
        for k, v in from_struct(res.metadata).items()
        if isinstance(v, bool | int | float | str)
    }


def fits(res: pb.Resolution) -> list[str]:
    return [kind.value.lower() for kind, name in _FIELD.items() if res.HasField(name)]
