"""The peer: the same targeted boolean lookup through flagd's Python provider, in-process.

`openfeature-provider-flagd` with its file resolver (`ResolverType.FILE`) evaluates a flagd
flag file inside the application process: no daemon, no RPC, JSON Logic targeting on every
call. It is the closest peer to PlanGate's cached path (both answer locally), so the
comparison is "PlanGate provider, cached" vs "flagd provider, in-process".

The flag gates `sso` on the `plan` attribute (`pro`/`enterprise` on, else off) and the
context carries the plan, since flagd has no accounts; PlanGate resolves the plan from the
account instead.

This process never imports the sidecar (`plangate.sidecar.*`) nor PlanGate's flagd stubs:
openfeature-provider-flagd's generated protobufs register the same `flagd.evaluation.*`
symbols, and one process cannot hold both. The sidecar runs as its own process (as
deployed) and this process only loads PlanGate's provider, which uses `plangate.v1` stubs.
So flagd, PlanGate's cached provider and the InMemoryProvider floor are all measured here,
interleaved in one process, and their ratio is free of cross-process drift.

Run: `python bench/peer_flagd.py [--quick]` prints JSON.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import traceback
from importlib.metadata import version
from pathlib import Path
from typing import Any

import catalogs
from harness import BENCH, Case, emit, interleaved, sidecar
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider


def _flagd_client(flags: Path) -> Any:
    provider = FlagdProvider(
        resolver_type=ResolverType.FILE,
        offline_flag_source_path=str(flags),
        deadline_ms=60_000,  # also the file watcher's poll period: keep it out of the loop
    )
    api.set_provider_and_wait(provider, domain="flagd")
    return api.get_client("flagd")


def _plangate_client(target: str) -> Any:
    from plangate.provider import PlanGateProvider

    api.set_provider_and_wait(
        PlanGateProvider(target=target, cache=True, deadline_ms=5000), domain="plangate"
    )
    return api.get_client("plangate")


def measure(quick: bool, reps: int) -> dict[str, Any]:
    n = 1000 if quick else 20000
    key = catalogs.BOOLEAN_KEY
    out: dict[str, Any] = {"measures": {}, "errors": {}}
    with tempfile.TemporaryDirectory(prefix="plangate-bench-flagd-") as tmp:
        d = Path(tmp)
        flags = catalogs.write_json(catalogs.flagd_flags(), d / "flags.json")
        catalog = catalogs.write_yaml(catalogs.bench_catalog(50), d / "catalog.yaml")
        db = d / "state.db"
        subprocess.run([sys.executable, str(BENCH / "catalogs.py"), str(db), "2"], check=True)
        client = _flagd_client(flags)
        pro = EvaluationContext(catalogs.account_id(0), {"plan": "pro"})
        free = EvaluationContext(catalogs.account_id(1), {"plan": "free"})
        details = client.get_boolean_details(key, False, pro)
        if details.value is not True or details.reason != "TARGETING_MATCH":
            raise RuntimeError(f"flagd peer is not targeting: {details}")
        if client.get_boolean_value(key, True, free) is not False:
            raise RuntimeError("flagd peer: a free plan must get sso off")

        floor_flags = {key: InMemoryFlag("on", {"on": True, "off": False})}
        api.set_provider_and_wait(InMemoryProvider(floor_flags), domain="floor")
        floor = api.get_client("floor")
        cases = [
            Case("peer.floor_inmemory", lambda: floor.get_boolean_value(key, False, pro), n),
            Case("peer.flagd_inprocess", lambda: client.get_boolean_value(key, False, pro), n),
        ]
        with sidecar(catalog, db) as side:
            try:
                plangate = _plangate_client(side.target)
                account = EvaluationContext(catalogs.account_id(0))
                if plangate.get_boolean_value(key, False, account) is not True:
                    raise RuntimeError("PlanGate: the Pro account must get sso on")
                cases.append(
                    Case(
                        "peer.plangate_cached",
                        lambda: plangate.get_boolean_value(key, False, account),
                        n,
                    )
                )
            except Exception as exc:  # still report flagd against the floor
                out["errors"]["provider"] = "".join(traceback.format_exception_only(exc)).strip()
            for name, stats in interleaved(cases, reps).items():
                out["measures"][name] = stats.as_json()
            api.shutdown()
    clash = [m for m in sys.modules if m.startswith("plangate.sidecar")]
    if clash:
        raise RuntimeError(
            f"the peer process must not load the sidecar or its flagd stubs: {clash}"
        )
    out["settings"] = {
        "reps": reps,
        "calls_per_rep": n,
        "openfeature-provider-flagd": version("openfeature-provider-flagd"),
        "resolver": "file (in-process)",
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args()
    emit(measure(args.quick, args.reps or (2 if args.quick else 7)))


if __name__ == "__main__":
    main()
