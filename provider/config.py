"""Provider settings: constructor arguments first, then `PLANGATE_*` environment variables.

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
        values["target"] = target or env.get("PLANGATE_TARGET") or DEFAULT_TARGET
        values["token"] = token or env.get("PLANGATE_TOKEN") or None
        values["tls_ca"] = tls_ca or env.get("PLANGATE_TLS_CA") or None
        values["tls_cert"] = tls_cert or env.get("PLANGATE_TLS_CERT") or None
        values["tls_key"] = tls_key or env.get("PLANGATE_TLS_KEY") or None
        ms = _first_int(deadline_ms, env, "PLANGATE_DEADLINE_MS")
        if ms is not None:
            values["deadline"] = ms / 1000
        grace = _first_int(grace_period_ms, env, "PLANGATE_GRACE_PERIOD_MS")
        if grace is not None:
            values["grace_period"] = grace / 1000
        size = _first_int(cache_size, env, "PLANGATE_CACHE_SIZE")
        if size is not None:
            values["cache_size"] = size
        if cache is not None:
            values["cache"] = cache
        elif env.get("PLANGATE_CACHE"):
            values["cache"] = _flag(env["PLANGATE_CACHE"], "PLANGATE_CACHE")
        return cls(**values)


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
