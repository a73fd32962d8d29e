"""The unmodified `openfeature-provider-flagd` (RPC resolver) as a child process that prints
one JSON line per provider event and answers `eval FLAG ACCOUNT` lines on stdin (see
`support.event_lines`). Its own interpreter: its stubs clash with PlanGate's (see
flagd_provider_check.py).

    python tests/support/flagd_provider_events.py 127.0.0.1 8013 [lru]

With `lru` the provider runs with its default cache on (a cached client); each line also
carries `mono`, this process's `time.monotonic()` (system-wide on Linux), so the test can time
an event against an instant of its own.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import CacheType, ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent

STARTED = time.monotonic()
EVENTS = {
    ProviderEvent.PROVIDER_READY: "READY",
    ProviderEvent.PROVIDER_STALE: "STALE",
    ProviderEvent.PROVIDER_ERROR: "ERROR",
    ProviderEvent.PROVIDER_CONFIGURATION_CHANGED: "CONFIGURATION_CHANGED",
}


def emit(line: dict[str, Any]) -> None:
    mono = time.monotonic()
    print(json.dumps({**line, "t": round(mono - STARTED, 3), "mono": mono}), flush=True)


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    cache = CacheType.LRU if sys.argv[3:] == ["lru"] else CacheType.DISABLED
    for event, name in EVENTS.items():

        def handler(details: EventDetails, name: str = name) -> None:
            emit({"event": name, "flags": list(details.flags_changed or [])})

        api.add_handler(event, handler)
    provider = FlagdProvider(
        host=host,
        port=port,
        resolver_type=ResolverType.RPC,
        cache=cache,
        deadline_ms=5000,
        retry_backoff_ms=100,
        retry_backoff_max_ms=300,  # reconnect quickly once the sidecar is back
        retry_grace_period=2,
    )
    api.set_provider(provider)
    client = api.get_client()
    for line in sys.stdin:
        command, *args = line.split()
        if command == "eval":
            flag, account = args
            got = client.get_boolean_details(flag, False, EvaluationContext(targeting_key=account))
            emit({"eval": flag, "value": got.value, "reason": str(got.reason)})
    api.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
