"""Resolve flags with the unmodified `openfeature-provider-flagd` in-process FILE resolver.

Run by `tests/compat/test_targeting_buckets.py` in a process of its own (the provider's
generated stubs clash with PlanGate's in one protobuf descriptor pool, see
`flagd_provider_check.py`). Reads a job file {"flag_file", "ids", "calls": [[flag, type,
default, context]]} and prints {flag: [variant per id]} as JSON.

    python tests/support/flagd_file_buckets.py JOB.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext


def main(job_file: str) -> None:
    with open(job_file, encoding="utf-8") as f:
        job: dict[str, Any] = json.load(f)
    provider = FlagdProvider(
        resolver_type=ResolverType.FILE, offline_flag_source_path=job["flag_file"]
    )
    api.set_provider_and_wait(provider, "buckets")
    client = api.get_client("buckets")
    out: dict[str, list[str | None]] = {}
    for flag, kind, default, context in job["calls"]:
        getter = getattr(client, f"get_{kind}_details")
        variants: list[str | None] = []
        for account in job["ids"]:
            details = getter(flag, default, EvaluationContext(account, context))
            if details.error_code is not None:
                raise SystemExit(f"{flag} {account}: {details.error_code} {details.error_message}")
            variants.append(details.variant)
        out[flag] = variants
    api.shutdown()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
