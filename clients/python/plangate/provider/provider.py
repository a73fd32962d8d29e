"""`PlanGateProvider`: the OpenFeature provider for a PlanGate sidecar.

The provider object is cheap to build; connections and threads start in `initialize` (the
SDK calls it from `set_provider*`) and end in `shutdown`, so a provider can be created at
import time and configured purely from the environment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ProviderNotReadyError, TargetingKeyMissingError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagType, FlagValueType
from openfeature.provider import AbstractProvider, Metadata
from openfeature.track import TrackingEventDetails

from .config import ProviderConfig
from .resolution import CALLER_DEFAULT
from .session import Session
from .spending import Consumed, Hold

log = logging.getLogger("plangate.provider")

ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]


class PlanGateProvider(AbstractProvider):
    """OpenFeature provider backed by a PlanGate sidecar (design §8).

    Every argument falls back to its `PLANGATE_*` environment variable, then to a default:
    `target` (`PLANGATE_TARGET`, `host:port` or `unix:///path`, default `localhost:8013`),
    `token` (`PLANGATE_TOKEN`, bearer token for Usage/Admin), `tls_ca` / `tls_cert` /
    `tls_key` (`PLANGATE_TLS_*`, PEM files; cert+key = mTLS), `deadline_ms`
    (`PLANGATE_DEADLINE_MS`, 500), `cache` (`PLANGATE_CACHE`, on), `cache_size`
    (`PLANGATE_CACHE_SIZE`, 1000 entries), `grace_period_ms` (`PLANGATE_GRACE_PERIOD_MS`,
    5000: how long the sidecar may be gone before STALE becomes ERROR), `on_unavailable`
    (`PLANGATE_ON_UNAVAILABLE`, "default": the caller's default with an error while the
    sidecar is unreachable; "last_known": the last value received, reason STALE, while it is
    valid; or a dict per feature with "*" for the rest), `track_journal`
    (`PLANGATE_TRACK_JOURNAL`, a file: `track` writes each report there before returning and
    the provider replays what was not acknowledged when it starts again), design §21,
    `event_source` (`PLANGATE_EVENT_SOURCE`, "plangate-provider": the CloudEvents `source` of
    the events `track` sends for names that are not feature keys, design §16).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        token: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_server_name: str | None = None,
        deadline_ms: int | None = None,
        cache: bool | None = None,
        cache_size: int | None = None,
        grace_period_ms: int | None = None,
        init_timeout_ms: int | None = None,
        on_unavailable: str | Mapping[str, str] | None = None,
        track_journal: str | None = None,
        event_source: str | None = None,
        env: Mapping[str, str] | None = None,
        **tuning: Any,
    ) -> None:
        super().__init__()
        self.config = ProviderConfig.resolve(
            env,
            target=target,
            token=token,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            deadline_ms=deadline_ms,
            cache=cache,
            cache_size=cache_size,
            grace_period_ms=grace_period_ms,
            on_unavailable=on_unavailable,
            track_journal=track_journal,
            event_source=event_source,
            tls_server_name=tls_server_name,
            init_timeout=None if init_timeout_ms is None else init_timeout_ms / 1000,
            **tuning,
        )
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._undelivered = 0

    # -- lifecycle -------------------------------------------------------------------------

    def get_metadata(self) -> Metadata:
        return Metadata(name="PlanGate")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Connect and wait for the sidecar's `ready` (up to the init timeout).

        On timeout the SDK marks the provider ERROR, but the connection keeps retrying and
        `PROVIDER_READY` follows as soon as the sidecar answers.
        """
        session = self._open()
        started = time.monotonic()
        if not session.events.wait_initialized(self.config.init_timeout):
            raise ProviderNotReadyError(
                f"no PlanGate sidecar answered at {self.config.target} within "
                f"{self.config.init_timeout:g} s; still trying"
            )
        left = session.wait_replayed(self.config.init_timeout - (time.monotonic() - started))
        if left:
            raise ProviderNotReadyError(
                f"{left} usage report(s) from track_journal {self.config.track_journal} not "
                f"yet acknowledged within {self.config.init_timeout:g} s; still trying"
            )

    def shutdown(self) -> None:
        """Deliver queued usage (up to `shutdown_timeout`), then close the connection."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            self._undelivered = session.close()

    def _open(self) -> Session:
        with self._lock:
            if self._session is None:
                self._session = Session(self.config, self._emit)
                self._undelivered = 0
            return self._session

    def _emit(self, event: ProviderEvent, details: ProviderEventDetails) -> None:
        self.emit(event, details)

    def _active(self) -> Session:
        session = self._session
        if session is None:
            raise ProviderNotReadyError("PlanGateProvider is not initialized (or shut down)")
        return session

    @property
    def pending_reports(self) -> int:
        """Usage reports accepted by `track` and not yet acknowledged by the sidecar
        (after `shutdown`: those it could not deliver)."""
        session = self._session
        return self._undelivered if session is None else session.reporter.pending

    # -- tracking --------------------------------------------------------------------------

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """Report usage of the metered feature `tracking_event_name`, or send it as an event
        when it is no feature key (a meter's `event_type`, design §16); never blocks."""
        session = self._session
        if session is None:
            log.warning(
                "track(%r) before initialize or after shutdown; dropped", tracking_event_name
            )
            return
        session.track(tracking_event_name, evaluation_context, tracking_event_details)

    def consume(
        self,
        feature: str,
        evaluation_context: EvaluationContext | None,
        amount: float = 1.0,
        *,
        idempotency_key: str = "",
    ) -> Consumed:
        """Admit and record `amount` of `feature` for the context's account if access holds
        for it, atomically (design §17): blocks for the sidecar's answer, unlike `track`.
        Raises `ProviderNotReadyError` when the sidecar does not answer."""
        account = _account(evaluation_context, "consume")
        return self._active().spender.consume(account, feature, amount, idempotency_key)

    def reserve(
        self,
        feature: str,
        evaluation_context: EvaluationContext | None,
        amount: float,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Hold:
        """Reserve `amount` of `feature` for the context's account until settled, released
        or `ttl_seconds` (default 300) pass (design §17). Check `granted`; use the hold as a
        context manager to release it if the work fails (decision 2301)."""
        account = _account(evaluation_context, "reserve")
        return self._active().spender.reserve(
            account, feature, amount, ttl_seconds, idempotency_key or ""
        )

    # -- resolution ------------------------------------------------------------------------

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return _or_default(
            self._active().evaluator.resolve(flag_key, FlagType.BOOLEAN, evaluation_context),
            default_value,
        )

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return _or_default(
            self._active().evaluator.resolve(flag_key, FlagType.STRING, evaluation_context),
            default_value,
        )

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return _or_default(
            self._active().evaluator.resolve(flag_key, FlagType.INTEGER, evaluation_context),
            default_value,
        )

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return _or_default(
            self._active().evaluator.resolve(flag_key, FlagType.FLOAT, evaluation_context),
            default_value,
        )

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        return _or_default(
            self._active().evaluator.resolve(flag_key, FlagType.OBJECT, evaluation_context),
            default_value,
        )

    async def resolve_boolean_details_async(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        evaluator = self._active().evaluator
        found = await evaluator.resolve_async(flag_key, FlagType.BOOLEAN, evaluation_context)
        return _or_default(found, default_value)

    async def resolve_string_details_async(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        evaluator = self._active().evaluator
        found = await evaluator.resolve_async(flag_key, FlagType.STRING, evaluation_context)
        return _or_default(found, default_value)

    async def resolve_integer_details_async(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        evaluator = self._active().evaluator
        found = await evaluator.resolve_async(flag_key, FlagType.INTEGER, evaluation_context)
        return _or_default(found, default_value)

    async def resolve_float_details_async(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        evaluator = self._active().evaluator
        found = await evaluator.resolve_async(flag_key, FlagType.FLOAT, evaluation_context)
        return _or_default(found, default_value)

    async def resolve_object_details_async(
        self,
        flag_key: str,
        default_value: ObjectValue,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[ObjectValue]:
        evaluator = self._active().evaluator
        found = await evaluator.resolve_async(flag_key, FlagType.OBJECT, evaluation_context)
        return _or_default(found, default_value)


def _account(ctx: EvaluationContext | None, verb: str) -> str:
    account = ctx.targeting_key if ctx is not None else None
    if not account:
        raise TargetingKeyMissingError(f"{verb} needs a targeting key (the account)")
    return account


def _or_default(found: FlagResolutionDetails[Any], default: Any) -> FlagResolutionDetails[Any]:
    """The caller's default where the sidecar says so (a disabled feature, or one without a
    default variant: reason DEFAULT/DISABLED, no value, no variant), as flagd providers do."""
    if found.value is CALLER_DEFAULT:
        found.value = default
    return found
