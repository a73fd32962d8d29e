"""Evaluate flagd-testbed scenarios with the unmodified `openfeature-provider-flagd` (RPC).

Run by `tests/compat/test_flagd_testbed.py` in a process of its own, for the reason
`flagd_provider_check.py` gives (the provider's flagd stubs and PlanGate's cannot share a
protobuf descriptor pool). Reads the scenarios' requests as JSON, prints what the provider
answered for each, keyed by scenario id.

    python tests/support/flagd_testbed_check.py --port 8013 --requests requests.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import CacheType, ResolverType
from openfeature.evaluation_context import EvaluationContext

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: find `support`
from support.flagd_testbed import GETTER, observed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=Path, required=True)
    args = parser.parse_args()
    provider = FlagdProvider(
        host="127.0.0.1",
        port=args.port,
        resolver_type=ResolverType.RPC,
        cache=CacheType.DISABLED,
        deadline_ms=5000,  # a loaded CI box
    )
    api.set_provider_and_wait(provider)
    client = api.get_client()
    out: dict[str, Any] = {}
    for request in json.loads(args.requests.read_text()):
        context = dict(request["context"])
        key = context.pop("targetingKey", None)
        ctx = EvaluationContext(targeting_key=key, attributes=context)
        getter = getattr(client, GETTER[request["type"]])
        out[request["id"]] = observed(getter(request["flag"], request["default"], ctx))
    api.shutdown()
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
