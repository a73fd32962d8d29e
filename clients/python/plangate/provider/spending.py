"""`consume` and `reserve` (design §17): the provider's synchronous usage answers.

`track` queues usage and never blocks; these instead ask the sidecar and wait, because the
application needs the answer before doing the work: `consume` admits or refuses `amount`
atomically, `reserve` makes a hold to settle once the cost is known. Each answer carries
the decision (the feature once the call counted) as OpenFeature boolean details, and each
write drops the account's cached answers, so the provider's next evaluation reads it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import grpc
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails
from plangate.protocol.plangate.v1 import plangate_pb2 as pb

from .cache import ResolutionCache
from .resolution import metadata, raise_rpc_error
from .transport import Transport

log = logging.getLogger("plangate.provider")


def decision(res: pb.Resolution) -> FlagResolutionDetails[bool]:
    """The sidecar's answer as boolean details: `has_access`, with `used`, `held`,
    `remaining` and `denial` in the flag metadata."""
    return FlagResolutionDetails(
        value=res.has_access,
        reason=res.reason or None,
        variant=res.variant or None,
        flag_metadata=dict(metadata(res)),
        error_code=_error_code(res.error_code),
        error_message=res.error_message or None,
    )


def _error_code(code: str) -> ErrorCode | None:
    if not code:
        return None
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.GENERAL


@dataclass(frozen=True, slots=True)
class Consumed:
    """Whether `amount` was admitted (and recorded), why not, and the feature after."""

    granted: bool
    denial: str  # empty when granted
    usage: float  # the counter after the call
    duplicate: bool  # an idempotency key seen before: the first answer
    decision: FlagResolutionDetails[bool]


class Spender:
    """The blocking Usage calls of one session."""

    def __init__(
        self, transport: Transport, cache: ResolutionCache | None, deadline: float
    ) -> None:
        self._transport = transport
        self.usage: Any = transport.usage
        self._cache = cache
        self._deadline = deadline

    def call(self, method: Callable[..., Any], request: Any, account: str) -> Any:
        """One write; the account's cached answers are stale once it is sent."""
        try:
            return method(request, timeout=self._deadline, metadata=self._transport.metadata)
        except grpc.RpcError as exc:
            raise_rpc_error(exc, self._transport.config.target)
        finally:
            if self._cache is not None:
                self._cache.invalidate_accounts({account})

    def consume(self, account: str, feature: str, amount: float, idempotency_key: str) -> Consumed:
        request = pb.ConsumeRequest(
            account_id=account, feature=feature, amount=amount, idempotency_key=idempotency_key
        )
        out = self.call(self.usage.Consume, request, account)
        return Consumed(out.granted, out.denial, out.usage, out.duplicate, decision(out.resolution))

    def reserve(
        self,
        account: str,
        feature: str,
        amount: float,
        ttl_seconds: int | None,
        idempotency_key: str,
    ) -> Hold:
        request = pb.ReserveRequest(
            account_id=account,
            feature=feature,
            amount=amount,
            ttl_seconds=ttl_seconds,
            idempotency_key=idempotency_key,
        )
        out = self.call(self.usage.Reserve, request, account)
        return Hold(self, account, feature, amount, out)


class Hold:
    """A reservation (design §17): `granted` or not, with the decision; a granted hold is
    ended once with `settle(amount)` or `release()`, or expires at `expires_at`.

    As a context manager it releases the hold when the block raises, and also when the block
    ends without settling or releasing it (decision 2301): the reserved amount is only an
    estimate, so nothing is charged that the application did not settle.
    """

    def __init__(
        self, spender: Spender, account: str, feature: str, amount: float, answer: Any
    ) -> None:
        self._spender = spender
        self.account = account
        self.feature = feature
        self.amount = amount
        self.granted: bool = answer.granted
        self.id: str = answer.hold_id  # empty when not granted
        self.denial: str = answer.denial
        stamp = answer.expires_at
        self.expires_at = stamp.ToDatetime(tzinfo=UTC) if answer.HasField("expires_at") else None
        self.duplicate: bool = answer.duplicate  # a repeated idempotency key: the first hold
        self.decision = decision(answer.resolution)
        self.ended = ""  # "settled" or "released" once this object ended it
        self.over_ceiling = False

    def settle(self, amount: float) -> FlagResolutionDetails[bool]:
        """Record `amount` as usage (in full, even past the ceiling: `over_ceiling` says so)
        and end the hold; returns the decision after."""
        self._check("settle")
        request = pb.SettleRequest(hold_id=self.id, amount=amount, account_id=self.account)
        out = self._spender.call(self._spender.usage.Settle, request, self.account)
        self.ended, self.over_ceiling = "settled", out.over_ceiling
        self.decision = decision(out.resolution)
        return self.decision

    def release(self) -> FlagResolutionDetails[bool]:
        """End the hold with no usage; returns the decision after."""
        self._check("release")
        request = pb.ReleaseRequest(hold_id=self.id, account_id=self.account)
        out = self._spender.call(self._spender.usage.Release, request, self.account)
        self.ended = "released"
        self.decision = decision(out.resolution)
        return self.decision

    def _check(self, verb: str) -> None:
        if not self.granted:
            raise ValueError(
                f"cannot {verb} a reservation that was not granted ({self.denial}); "
                "check `granted` first"
            )
        if self.ended:
            raise ValueError(f"hold {self.id} was already {self.ended} by this process")

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.granted or self.ended:
            return
        try:
            self.release()
        except Exception as exc:  # never hide the block's own exception; the TTL ends it
            log.warning(
                "hold %s not released (%s); it expires at %s", self.id, exc, self.expires_at
            )
