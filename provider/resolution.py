"""From a sidecar `Resolution` to OpenFeature's `FlagResolutionDetails`, or an OpenFeature error.

The sidecar already resolved every type that fits the feature (design §4 table); an absent
typed field is a type mismatch. Errors are raised as the SDK's exceptions, so the SDK fills
in the caller's default, reason ERROR and the error code uniformly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import from_struct, from_value

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
    factory = _ERRORS.get(code)
    raise (factory(message) if factory else GeneralError(f"{code}: {message}"))


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
    if res.error_code:
        raise_error(res.error_code, res.error_message or res.error_code)
    field = _FIELD[kind]
    if not res.HasField(field):
        raise TypeMismatchError(
            f"{res.feature} is a {res.feature_type} feature; resolve it as "
            f"{', '.join(fits(res))}, not {kind.value.lower()}"
        )
    value: Any
    if kind is FlagType.OBJECT:
        value = from_value(res.as_object)
        if value is None:
            # An empty list/struct `Value` that was never given its kind reads as null;
            # OpenFeature object values cannot be null, and the feature type says which.
            value = [] if res.feature_type == "list" else {}
    elif kind is FlagType.FLOAT:
        value = float(res.as_float)
    else:
        value = getattr(res, field)
    return FlagResolutionDetails(
        value=value,
        reason=res.reason or None,
        variant=res.variant or None,
        flag_metadata=metadata(res),
    )


def metadata(res: pb.Resolution) -> Mapping[str, bool | int | float | str]:
    """The sidecar's flag metadata (scalars only, design §4), as plain Python values."""
    return {
        k: v
        for k, v in from_struct(res.metadata).items()
        if isinstance(v, bool | int | float | str)
    }


def fits(res: pb.Resolution) -> list[str]:
    return [kind.value.lower() for kind, field in _FIELD.items() if res.HasField(field)]
