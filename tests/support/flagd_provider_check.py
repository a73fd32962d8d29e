"""Drive the unmodified `openfeature-provider-flagd` (RPC resolver) against a running sidecar.

Run by `tests/compat/test_flagd_provider.py` in a process of its own: the provider's generated
stubs register the `flagd.evaluation.*` proto symbols that PlanGate's own stubs register too,
and one protobuf descriptor pool cannot hold both. This script therefore never imports
`plangate`; it talks to the sidecar only over the wire and prints one JSON document with
everything it observed, for the test to assert on.

    python tests/support/flagd_provider_check.py --port 8013 --catalog /path/to/served/catalog.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import CacheType, ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.flag_evaluation import FlagEvaluationDetails

ACCOUNTS = ("acct_acme", "acct_initech", "acct_globex")

# (label, OpenFeature type, feature key, default value)
CALLS: list[tuple[str, str, str, Any]] = [
    ("sso", "boolean", "sso", False),
    ("beta-dashboard", "boolean", "beta-dashboard", False),
    ("execution-concurrency", "integer", "execution-concurrency", 0),
    ("execution-concurrency:float", "float", "execution-concurrency", 0.0),
    ("support-tier", "string", "support-tier", "none"),
    ("integrations", "object", "integrations", {}),
    ("theme", "object", "theme", {}),
    ("api-calls:boolean", "boolean", "api-calls", False),
    ("api-calls:integer", "integer", "api-calls", 0),
    ("api-calls:float", "float", "api-calls", 0.0),
    ("api-calls:object", "object", "api-calls", {}),
    ("legacy-reports", "boolean", "legacy-reports", True),
]


def details(
    client: OpenFeatureClient, kind: str, key: str, default: Any, ctx: EvaluationContext
) -> dict[str, Any]:
    getter = getattr(client, f"get_{kind}_details")
    result: FlagEvaluationDetails[Any] = getter(key, default, ctx)
    return {
        "value": result.value,
        "type": type(result.value).__name__,
        "reason": str(result.reason) if result.reason else None,
        "variant": result.variant,
        "error_code": result.error_code.value if result.error_code else None,
    }


def evaluate_all(client: OpenFeatureClient, rounds: int = 2) -> dict[str, dict[str, Any]]:
    """Every call for every account, accounts interleaved and repeated: a provider cache that
    kept one account's result would hand it to the next account in the second round."""
    seen: dict[str, dict[str, Any]] = {}
    for round_no in range(rounds):
        for account in ACCOUNTS:
            ctx = EvaluationContext(targeting_key=account)
            for label, kind, key, default in CALLS:
                got = details(client, kind, key, default, ctx)
                previous = seen.setdefault(account, {}).setdefault(label, got)
                if round_no and got != previous:
                    seen[account][label + ":round2"] = got
    return seen


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--catalog", type=Path, required=True)
    args = parser.parse_args()

    out: dict[str, Any] = {}
    # Default configuration (LRU cache on) and cache disabled, as two OpenFeature domains.
    for domain, cache in (("default-cache", None), ("no-cache", CacheType.DISABLED)):
        provider = FlagdProvider(
            host="127.0.0.1",
            port=args.port,
            resolver_type=ResolverType.RPC,
            cache=cache,
            deadline_ms=5000,  # a loaded CI box; the provider's 500 ms default is for a warm sidecar
        )
        api.set_provider_and_wait(provider, domain)
        out[domain] = evaluate_all(api.get_client(domain))

    client = api.get_client("default-cache")
    acme = EvaluationContext(targeting_key="acct_acme")
    out["errors"] = {
        "unknown": details(client, "boolean", "no-such-feature", True, acme),
        "mismatch": details(client, "string", "sso", "fallback", acme),
        "no-targeting-key": details(client, "boolean", "sso", True, EvaluationContext()),
    }

    changed: list[list[str]] = []
    arrived = threading.Event()

    def on_change(event: EventDetails) -> None:
        changed.append(list(event.flags_changed or []))
        if "execution-concurrency" in (event.flags_changed or []):
            arrived.set()

    client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_change)
    initech = EvaluationContext(targeting_key="acct_initech")
    out["before_change"] = client.get_integer_value("execution-concurrency", 0, initech)
    text = args.catalog.read_text()
    old = "          execution-concurrency: 1\n"  # the Free plan's entitlement
    assert text.count(old) == 1, "catalog fixture changed; update the edit below"
    args.catalog.write_text(text.replace(old, "          execution-concurrency: 3\n"))
    started = time.monotonic()
    out["event_arrived"] = arrived.wait(15)
    out["event_seconds"] = round(time.monotonic() - started, 2)
    out["flags_changed"] = changed
    out["after_change"] = client.get_integer_value("execution-concurrency", 0, initech)

    api.shutdown()
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
