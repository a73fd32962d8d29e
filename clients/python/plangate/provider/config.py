"""Provider settings: constructor arguments first, then `PLANGATE_*` environment variables.

The variables are declared once, as literals, in `VARIABLES` (design §15).

The environment fallback exists so one container image can point at different sidecars
(TCP port, Unix socket, TLS) without code changes; explicit arguments always win so tests
and multi-sidecar apps stay deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

DEFAULT_TARGET = "localhost:8013"

# What an evaluation answers while the sidecar cannot be reached (design §21).
DEFAULT, LAST_KNOWN = "default", "last_known"
OUTAGE_MODES = (DEFAULT, LAST_KNOWN)

_TRUE = {"1", "true", "yes", "on", "enabled", "lru"}
_FALSE = {"0", "false", "no", "off", "disabled", "none"}


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """Everything the provider needs to reach one sidecar and behave around it.

    Durations are seconds here; the public surface (constructor, env) speaks milliseconds
    like the other OpenFeature providers do.
    """

    target: str = DEFAULT_TARGET
    token: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None
    deadline: float = 0.5
    cache: bool = True
    cache_size: int = 1000
    grace_period: float = 5.0
    init_timeout: float = 5.0
    heartbeat_timeout: float = 15.0
    flush_interval: float = 0.02
    max_batch: int = 1000
    max_queue: int = 100_000
    report_deadline: float = 5.0
    shutdown_timeout: float = 10.0
    # a mode for every feature, or {feature_key: mode, "*": mode} (unnamed: "*", else default)
    on_unavailable: str | Mapping[str, str] = DEFAULT
    track_journal: str | None = None  # a file: `track` survives an application crash
    journal_fsync_interval: float = 0.01  # at most this long between a write and its fsync
    event_source: str = "plangate-provider"  # CloudEvents `source` of what `track` sends

    def __post_init__(self) -> None:
        if not self.target:
            raise ValueError("target is empty; use host:port or unix:///path/to/socket")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together (a client certificate and its key)")
        for name in ("deadline", "grace_period", "init_timeout", "heartbeat_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.cache_size < 1 or self.max_batch < 1 or self.max_queue < 1:
            raise ValueError("cache_size, max_batch and max_queue must be at least 1")
        modes = (
            self.on_unavailable.values()
            if isinstance(self.on_unavailable, Mapping)
            else [self.on_unavailable]
        )
        for mode in modes:
            if mode not in OUTAGE_MODES:
                raise ValueError(
                    f"on_unavailable: {mode!r} is not a mode; use {DEFAULT!r} or {LAST_KNOWN!r} "
                    'for every feature, or a dict such as {"sso": "last_known", "*": "default"}'
                )

    def outage_mode(self, feature: str) -> str:
        """The `on_unavailable` mode of one feature."""
        if isinstance(self.on_unavailable, str):
            return self.on_unavailable
        return self.on_unavailable.get(feature, self.on_unavailable.get("*", DEFAULT))

    @property
    def secure(self) -> bool:
        """TLS as soon as any TLS material is configured (a CA alone = server-auth TLS)."""
        return bool(self.tls_ca or self.tls_cert)

    @classmethod
    def resolve(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        target: str | None = None,
        token: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        deadline_ms: int | None = None,
        cache: bool | None = None,
        cache_size: int | None = None,
        grace_period_ms: int | None = None,
        on_unavailable: str | Mapping[str, str] | None = None,
        track_journal: str | None = None,
        event_source: str | None = None,
        **rest: Any,
    ) -> ProviderConfig:
        """Merge explicit arguments (None = not given) with the environment and defaults.

        `rest` takes the remaining fields (seconds) for callers that tune internals.
        """
        env = os.environ if env is None else env
        known = {f.name for f in fields(cls)}
        unknown = set(rest) - known
        if unknown:
            raise TypeError(f"unknown provider option(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {k: v for k, v in rest.items() if v is not None}
        given = {
            "target": target,
            "token": token,
            "tls_ca": tls_ca,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
            "deadline_ms": deadline_ms,
            "cache": cache,
            "cache_size": cache_size,
            "grace_period_ms": grace_period_ms,
            "on_unavailable": on_unavailable,
            "track_journal": track_journal,
            "event_source": event_source,
        }
        for variable in VARIABLES:
            value = variable.read(given[variable.argument], env)
            if value is not None:
                values[variable.field] = value
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Variable:
    """One `PLANGATE_*` variable: the `resolve` argument it backs and the field it sets."""

    argument: str
    env: str  # the literal variable name, so a search for it finds this table
    kind: str  # text, mode (on_unavailable), ms (milliseconds, stored as seconds), count, switch
    help: str

    @property
    def field(self) -> str:
        return self.argument.removesuffix("_ms")

    def read(self, given: Any, env: Mapping[str, str]) -> Any:
        """The argument if given, else the variable, else None (the field's default)."""
        if self.kind in ("text", "mode"):
            return given or env.get(self.env, "").strip() or None
        if self.kind == "switch":
            if given is not None:
                return bool(given)
            return _flag(env[self.env], self.env) if env.get(self.env) else None
        number = _first_int(given, env, self.env)
        if number is None or self.kind == "count":
            return number
        return number / 1000


VARIABLES = (
    Variable("target", "PLANGATE_TARGET", "text", "host:port, or unix:///path/to/socket"),
    Variable("token", "PLANGATE_TOKEN", "text", "bearer token sent on every call"),
    Variable("tls_ca", "PLANGATE_TLS_CA", "text", "CA of the sidecar's certificate; TLS on"),
    Variable("tls_cert", "PLANGATE_TLS_CERT", "text", "client certificate (PEM), mutual TLS"),
    Variable("tls_key", "PLANGATE_TLS_KEY", "text", "client key (PEM), with tls_cert"),
    Variable("deadline_ms", "PLANGATE_DEADLINE_MS", "ms", "deadline of an evaluation call"),
    Variable("cache", "PLANGATE_CACHE", "switch", "on or off: the evaluation cache"),
    Variable("cache_size", "PLANGATE_CACHE_SIZE", "count", "cached (account, context) entries"),
    Variable("grace_period_ms", "PLANGATE_GRACE_PERIOD_MS", "ms", "STALE before PROVIDER_ERROR"),
    Variable(
        "on_unavailable",
        "PLANGATE_ON_UNAVAILABLE",
        "mode",
        "default or last_known: the answer while the sidecar is unreachable",
    ),
    Variable(
        "track_journal",
        "PLANGATE_TRACK_JOURNAL",
        "text",
        "file where track writes each report before returning",
    ),
    Variable(
        "event_source",
        "PLANGATE_EVENT_SOURCE",
        "text",
        "CloudEvents source of the events track sends",
    ),
)


def _first_int(given: int | None, env: Mapping[str, str], name: str) -> int | None:
    if given is not None:
        return int(given)
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number of milliseconds/entries") from None


def _flag(raw: str, name: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r}: use on or off")
