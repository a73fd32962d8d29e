"""PlanGate benchmarks: one command, one table, one JSON file.

    python bench/run.py            # full run (several minutes; 1M-account scale step)
    python bench/run.py --quick    # smoke run with tiny sizes (< 30 s)

Every group runs in a fresh Python process (see the scripts next to this file), prints JSON,
and this script puts the groups together: it checks each target against its floor or peer,
prints the table and writes `bench/results/latest.json` (or `--out`).

The headline is the ratios, not the absolute numbers: each target compares PlanGate with a
floor measured in the same run on the same machine (the SDK's InMemoryProvider, a raw gRPC
echo) or with the peer (flagd's in-process provider), so a slower or busier machine moves
both sides together. See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import BENCH, machine, run_json

KB = 1024


@dataclass(frozen=True)
class Group:
    """One benchmark script and how long it may take."""

    name: str
    args: list[str]
    timeout: float


def groups(quick: bool, reps: int | None) -> list[Group]:
    q = ["--quick"] if quick else []
    r = ["--reps", str(reps)] if reps else []
    small, large = (1_000, 10_000) if quick else (1_000, 1_000_000)
    scale_reps = r or (["--reps", "2"] if quick else ["--reps", "7"])
    scale_calls = ["--calls", "4000", "--rpc-calls", "100"] if quick else []
    return [
        Group("client", ["bench/client.py", *q, *r], 600),
        Group("peer", ["bench/peer_flagd.py", *q, *r], 300),
        Group("reload", ["bench/reload.py", *q, *r], 900),
        Group(
            f"scale_{small}",
            ["bench/scale.py", "--accounts", str(small), *scale_reps, *scale_calls],
            300,
        ),
        Group(
            f"scale_{large}",
            [
                "bench/scale.py",
                *("--accounts", str(large), "--compare", str(small)),
                *scale_reps,
                *scale_calls,
            ],
            1800,
        ),
        Group("serving", ["bench/serving.py", *q, *r], 1200),
        Group("streams", ["bench/streams.py", *q], 900),
        Group("ofrep_sse", ["bench/ofrep_sse.py", *q], 600),
        Group("targeting", ["bench/targeting.py", *q, *r], 300),
        Group("balances", ["bench/balances.py", *q, *r], 300),
    ]


# -- targets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A ratio of two measures and the bound it must meet.

    `ratio` is subject/baseline for "at most" targets (lower is better) and baseline/subject
    for "at least" speed-ups; thresholds follow the issue's wording.
    """

    name: str
    subject: str
    baseline: str
    bound: float
    at_most: bool
    ratio: Callable[[dict[str, Any]], tuple[float, float, float] | None]


def _value(results: dict[str, Any], measure: str) -> float | None:
    found = results["measures"].get(measure)
    return None if found is None else float(found["value"])


def _over(subject: str, baseline: str) -> Callable[[dict[str, Any]], Any]:
    def compute(results: dict[str, Any]) -> tuple[float, float, float] | None:
        s, b = _value(results, subject), _value(results, baseline)
        return None if s is None or b is None or b == 0 else (s, b, s / b)

    return compute


def _peer_speedup(results: dict[str, Any]) -> tuple[float, float, float] | None:
    """flagd time / PlanGate cached time, both measured interleaved in the peer's process.

    Falls back to normalising by each process's InMemoryProvider floor when the peer
    process could not run the PlanGate provider."""
    peer = _value(results, "peer.flagd_inprocess")
    cached_here = _value(results, "peer.plangate_cached")
    if peer is not None and cached_here:
        return peer, cached_here, peer / cached_here
    cached = _value(results, "provider.cached.boolean")
    floor = _value(results, "floor.inmemory")
    peer_floor = _value(results, "peer.floor_inmemory")
    if peer is None or not cached or not floor or not peer_floor:
        return None
    return peer, cached, (peer / peer_floor) / (cached / floor)


def _rss(results: dict[str, Any]) -> tuple[float, float, float] | None:
    value = _value(results, "scale.large.bytes_per_account")
    return None if value is None else (value, KB, value / KB)


def _fixed(measure: str, bound: float) -> Callable[[dict[str, Any]], Any]:
    """A measure held against a fixed figure of the issue (20,000 events/s, 10 s, ...)."""

    def compute(results: dict[str, Any]) -> tuple[float, float, float] | None:
        value = _value(results, measure)
        return None if value is None else (value, bound, value / bound)

    return compute


_report = _fixed("usage.report", 20_000)
SEQUENTIAL_CONSUME = 535.0  # events/s of sequential Consume before the asyncio core (issue 13)


TARGETS = [
    Target(
        "track with the journal, µs per call (design §21)",
        "provider.track.journal",
        "20 µs",
        1.0,
        True,
        _fixed("provider.track.journal", 20.0),
    ),
    Target(
        "cached boolean vs InMemoryProvider",
        "provider.cached.boolean",
        "floor.inmemory",
        1.5,
        True,
        _over("provider.cached.boolean", "floor.inmemory"),
    ),
    Target(
        "cached integer vs InMemoryProvider",
        "provider.cached.integer",
        "floor.inmemory",
        1.5,
        True,
        _over("provider.cached.integer", "floor.inmemory"),
    ),
    Target(
        "cached metered vs InMemoryProvider",
        "provider.cached.metered",
        "floor.inmemory",
        1.5,
        True,
        _over("provider.cached.metered", "floor.inmemory"),
    ),
    Target(
        "uncached boolean vs gRPC echo",
        "provider.uncached.boolean",
        "floor.grpc_echo",
        1.3,
        True,
        _over("provider.uncached.boolean", "floor.grpc_echo"),
    ),
    Target(
        "cached boolean faster than flagd in-process",
        "peer.flagd_inprocess",
        "peer.plangate_cached",
        1.5,
        False,
        _peer_speedup,
    ),
    Target(
        "Evaluate RPC latency, large vs small snapshot",
        "scale.large.rpc_boolean",
        "scale.large.compare_rpc_boolean",
        1.2,
        True,
        _over("scale.large.rpc_boolean", "scale.large.compare_rpc_boolean"),
    ),
    Target(
        "engine-only eval latency, large vs small",
        "scale.large.eval_boolean",
        "scale.large.compare_eval_boolean",
        1.2,
        True,
        _over("scale.large.eval_boolean", "scale.large.compare_eval_boolean"),
    ),
    Target(
        "RSS per account at large size vs 1 KB",
        "scale.large.bytes_per_account",
        "1 KB",
        1.0,
        True,
        _rss,
    ),
    Target(
        "Report (batched, durable) vs 20k events/s",
        "usage.report",
        "20,000 events/s",
        1.0,
        False,
        _report,
    ),
    Target(
        "Evaluate throughput under load vs gRPC echo",
        "serving.load.evaluate",
        "serving.load.echo",
        0.7,
        False,
        _over("serving.load.evaluate", "serving.load.echo"),
    ),
    Target(
        "Evaluate p99 under load vs gRPC echo",
        "serving.load.evaluate_p99",
        "serving.load.echo_p99",
        2.0,
        True,
        _over("serving.load.evaluate_p99", "serving.load.echo_p99"),
    ),
    Target(
        "EvaluateAll (50 features) vs one Evaluate",
        "rpc.evaluate_all",
        "rpc.evaluate",
        2.0,
        True,
        _over("rpc.evaluate_all", "rpc.evaluate"),
    ),
    Target(
        "Consume, 16 concurrent clients vs 10x sequential 535/s",
        "serving.consume.concurrent",
        "5,350 events/s",
        1.0,
        False,
        _fixed("serving.consume.concurrent", 10 * SEQUENTIAL_CONSUME),
    ),
    Target(
        "start-up with 1M stored accounts vs 10 s",
        "scale.large.load",
        "10 s",
        1.0,
        True,
        _fixed("scale.large.load", 10.0),
    ),
    Target(
        "Evaluate p99 with 4,000 streams/conns open vs none",
        "serving.streams.open_p99",
        "serving.streams.idle_p99",
        2.0,
        True,
        _over("serving.streams.open_p99", "serving.streams.idle_p99"),
    ),
    Target(
        "change event to every stream vs 200 ms",
        "serving.streams.event",
        "200 ms",
        1.0,
        True,
        _fixed("serving.streams.event", 200.0),
    ),
    Target(
        "Report from 8 callers, 1,000 Watch + 1,000 EventStream open vs none",
        "streams.report.open",
        "streams.report.none",
        0.8,
        False,
        _over("streams.report.open", "streams.report.none"),
    ),
    Target(
        "change to a subscribed provider under that load vs 200 ms",
        "streams.provider_event",
        "200 ms",
        1.0,
        True,
        _fixed("streams.provider_event", 200.0),
    ),
    Target(
        "Evaluate p99 with 1,000 idle OFREP SSE streams vs none",
        "ofrep_sse.open_p99",
        "ofrep_sse.idle_p99",
        2.0,
        True,
        _over("ofrep_sse.open_p99", "ofrep_sse.idle_p99"),
    ),
    Target(
        "OFREP refetchEvaluation after a change, 1,000 SSE streams open, vs 200 ms",
        "ofrep_sse.refetch",
        "200 ms",
        1.0,
        True,
        _fixed("ofrep_sse.refetch", 200.0),
    ),
    Target(
        "cached targeted boolean faster than flagd in-process",
        "targeting.flagd_inprocess",
        "targeting.plangate_cached",
        1.5,
        False,
        _over("targeting.flagd_inprocess", "targeting.plangate_cached"),
    ),
    Target(
        "engine targeted vs untargeted boolean",
        "targeting.engine_targeted",
        "targeting.engine_untargeted",
        5.0,
        True,
        _over("targeting.engine_targeted", "targeting.engine_untargeted"),
    ),
    Target(
        "Consume credit-priced vs plain metered",
        "balances.consume_priced",
        "balances.consume_plain",
        1.5,
        True,
        _over("balances.consume_priced", "balances.consume_plain"),
    ),
    Target(
        "Report with top-ups burning vs 20k events/s",
        "balances.report_topups",
        "20,000 events/s",
        1.0,
        False,
        _fixed("balances.report_topups", 20_000),
    ),
]


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for t in TARGETS:
        computed = t.ratio(results)
        row: dict[str, Any] = {
            "target": t.name,
            "subject": t.subject,
            "baseline": t.baseline,
            "bound": f"{'<=' if t.at_most else '>='} {t.bound:g}x",
        }
        if computed is None:
            row.update(ratio=None, result="N/A")
        else:
            subject, baseline, ratio = computed
            ok = ratio <= t.bound if t.at_most else ratio >= t.bound
            row.update(
                subject_value=round(subject, 3),
                baseline_value=round(baseline, 3),
                ratio=round(ratio, 3),
                result="PASS" if ok else "MISS",
            )
        out.append(row)
    return out


# -- assembling ---------------------------------------------------------------------------------


def _flatten_scale(name: str, size_label: str, data: dict[str, Any], into: dict[str, Any]) -> None:
    prefix = f"scale.{size_label}"
    kinds = ("eval_boolean", "eval_metered", "rpc_boolean")
    for kind in kinds:
        if kind in data:
            into[f"{prefix}.{kind}"] = data[kind]
            data[kind].setdefault("extra", {})["accounts"] = data["accounts"]
        if kind in data.get("compare", {}):
            m = data["compare"][kind]
            m.setdefault("extra", {})["accounts"] = data["compare"]["accounts"]
            into[f"{prefix}.compare_{kind}"] = m
    into[f"{prefix}.bytes_per_account"] = {
        "value": round(data["bytes_per_account"], 1),
        "unit": "bytes",
        "extra": {
            "accounts": data["accounts"],
            "rss_bytes": data["rss_bytes"],
            "rss_baseline_bytes": data["rss_baseline_bytes"],
            "resolver_entries": data["resolver_entries"],
        },
    }
    into[f"{prefix}.load"] = {
        "value": data["load_seconds"],
        "unit": "s",
        "extra": {"accounts": data["accounts"], "what": "LiveState start-up from the store"},
    }


def assemble(raw: dict[str, Any], quick: bool) -> dict[str, Any]:
    measures: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, data in raw.items():
        if isinstance(data, str):
            errors[name] = data
            continue
        if name.startswith("scale_"):
            size = int(name.split("_", 1)[1])
            label = "small" if size == min(_sizes(raw)) else "large"
            _flatten_scale(name, label, data, measures)
            settings[name] = {"accounts": size}
            continue
        measures.update(data.get("measures", {}))
        settings[name] = data.get("settings", {})
        errors.update({f"{name}.{k}": v for k, v in data.get("errors", {}).items()})
    results: dict[str, Any] = {
        "quick": quick,
        "measures": measures,
        "settings": settings,
        "errors": errors,
    }
    results["targets"] = check_targets(results)
    return results


def _sizes(raw: dict[str, Any]) -> list[int]:
    return [int(n.split("_", 1)[1]) for n in raw if n.startswith("scale_")]


# -- printing -----------------------------------------------------------------------------------

_ROWS = [
    ("floor.inmemory", "OpenFeature + InMemoryProvider (floor)"),
    ("floor.grpc_echo", "raw gRPC unary echo (floor)"),
    ("provider.cached.boolean", "provider, cached: boolean"),
    ("provider.cached.integer", "provider, cached: integer"),
    ("provider.cached.metered", "provider, cached: metered has-access"),
    ("provider.uncached.boolean", "provider, uncached: boolean (1 RPC)"),
    ("peer.flagd_inprocess", "flagd provider, in-process file (peer)"),
    ("peer.plangate_cached", "  provider, cached: boolean (peer process)"),
    ("peer.floor_inmemory", "  InMemoryProvider (peer process)"),
    ("rpc.evaluate", "Evaluate RPC, direct"),
    ("rpc.evaluate_all", "EvaluateAll RPC, 50 features"),
    ("server_cpu.grpc_echo", "echo server's CPU per call (floor)"),
    ("server_cpu.evaluate", "  sidecar's CPU per Evaluate"),
    ("usage.report", "Report, batched + durable"),
    ("usage.consume", "Consume, sequential, durable"),
    ("reload.total", "catalog reload: total"),
    ("reload.load_catalog", "  load_catalog (parse + validate)"),
    ("reload.replace_catalog", "  LiveState.replace_catalog"),
    ("scale.large.rpc_boolean", "Evaluate RPC, large snapshot"),
    ("scale.large.compare_rpc_boolean", "  same, small snapshot, interleaved"),
    ("scale.large.eval_boolean", "eval boolean (engine), large snapshot"),
    ("scale.large.compare_eval_boolean", "  same, small snapshot, interleaved"),
    ("scale.large.eval_metered", "eval metered (engine), large snapshot"),
    ("scale.large.compare_eval_metered", "  same, small snapshot, interleaved"),
    ("scale.small.bytes_per_account", "RSS per account, small snapshot"),
    ("scale.large.bytes_per_account", "RSS per account, large snapshot"),
    ("scale.large.load", "start-up load, large snapshot"),
    ("serving.load.evaluate", "Evaluate under concurrent load (grpc.aio clients)"),
    ("serving.load.echo", "  gRPC echo under the same load (floor)"),
    ("serving.load.evaluate_p99", "  Evaluate p99 per call under load"),
    ("serving.load.echo_p99", "  echo p99 per call under load"),
    ("serving.consume.concurrent", "Consume, 16 concurrent clients, durable"),
    ("serving.streams.idle_p99", "Evaluate p99, nothing open"),
    ("serving.streams.open_p99", "  same, streams + idle HTTP connections open"),
    ("serving.streams.event", "change event: Report to the last stream"),
    ("targeting.flagd_inprocess", "flagd provider, in-process file, targeted boolean"),
    ("targeting.plangate_cached", "  provider, cached: same targeted boolean"),
    ("targeting.engine_untargeted", "engine evaluate, untargeted boolean"),
    ("targeting.engine_targeted", "  engine evaluate, targeted boolean"),
    ("targeting.flagd_core_json_logic", "  flagd-core JSON Logic alone, same rule (floor)"),
    ("balances.consume_plain", "Consume in-process, plain metered"),
    ("balances.consume_priced", "  Consume in-process, credit-priced"),
    ("balances.report_topups", "Report in-process, top-ups burning"),
]


def _fmt(value: float, unit: str) -> str:
    if unit in ("events/s", "evals/s", "calls/s"):
        return f"{value:,.0f} {unit}"
    if unit == "bytes":
        return f"{value:,.0f} B"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:,.1f} ms"
    return f"{value:,.1f} {unit}"


def _detail(m: dict[str, Any]) -> str:
    extra = m.get("extra") or {}
    parts = []
    if "p50_us" in extra:
        parts.append(f"p50 {extra['p50_us']:,.0f} us  p99 {extra['p99_us']:,.0f} us")
    if "accounts" in extra:
        parts.append(f"{extra['accounts']:,} accounts")
    if "inflight_per_client" in extra:
        parts.append(f"{extra['clients']} client procs x {extra['inflight_per_client']} in flight")
    elif "clients" in extra:
        parts.append(f"{extra['clients']} clients")
    if "watches" in extra:
        w = extra["watches"]
        parts.append(
            f"{w:,} Watch + {extra['event_streams']:,} EventStream + "
            f"{extra['idle_http']:,} idle HTTP"
        )
    if m.get("reps") and len(m["reps"]) > 1:
        parts.append(f"spread {_fmt(m['min'], m['unit'])}..{_fmt(m['max'], m['unit'])}")
    return "; ".join(parts)


def _target_rows(results: dict[str, Any]) -> list[list[str]]:
    measures = results["measures"]
    rows = []
    for row in results["targets"]:

        def show(key: str, value: float | None) -> str:
            m = measures.get(key)
            if value is None:
                return "-"
            return _fmt(value, m["unit"]) if m else f"{value:,.0f}"

        subject = show(row["subject"], row.get("subject_value"))
        if row["baseline"] in measures:
            baseline = show(row["baseline"], row.get("baseline_value"))
        else:  # a fixed bound ("1 KB") is shown as is; a missing measure as "-"
            baseline = "-" if "." in row["baseline"] else row["baseline"]
        if row["baseline"] == "peer.plangate_cached":  # the peer row: flagd time as baseline
            subject, baseline = baseline, subject
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        rows.append([row["target"], subject, baseline, ratio, row["bound"], row["result"]])
    return rows


def _measure_rows(results: dict[str, Any]) -> list[list[str]]:
    measures = results["measures"]
    return [
        [label, _fmt(measures[key]["value"], measures[key]["unit"]), _detail(measures[key])]
        for key, label in _ROWS
        if key in measures
    ]


def _machine_line(results: dict[str, Any]) -> str:
    info = results["machine"]
    return (
        f"{info['nproc']} CPU ({info['cpu']}), Python {info['python']}, grpcio {info['grpcio']}, "
        f"load average {info['loadavg_at_start']} at start; "
        f"{'--quick, ' if results['quick'] else ''}{results['seconds']} s"
    )


def table(results: dict[str, Any]) -> str:
    """The plain-text report printed at the end of a run."""
    head = f"{'target':<44} {'PlanGate':>14} {'floor / peer':>14} {'ratio':>8} {'bound':>8}  result"
    lines = [head, "-" * len(head)]
    for t, subject, baseline, ratio, bound, result in _target_rows(results):
        lines.append(f"{t:<44} {subject:>14} {baseline:>14} {ratio:>8} {bound:>8}  {result}")
    lines += ["", f"{'measure':<44} {'median':>16}  detail", "-" * 100]
    for label, value, detail in _measure_rows(results):
        lines.append(f"{label:<44} {value:>16}  {detail}")
    for name, error in results["errors"].items():
        lines.append(f"!! {name}: {error.splitlines()[-1] if error else 'failed'}")
    lines += ["", _machine_line(results)]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The same report as Markdown tables, for bench/README.md."""

    def md(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
        out += ["| " + " | ".join(c.strip().replace("|", "/") for c in r) + " |" for r in rows]
        return out

    lines = [f"Machine: {_machine_line(results)}.", ""]
    lines += md(
        ["target", "PlanGate", "floor / peer", "ratio", "bound", "result"],
        _target_rows(results),
        [":--", "--:", "--:", "--:", ":-:", ":-:"],
    )
    lines.append("")
    lines += md(["measure", "median", "detail"], _measure_rows(results), [":--", "--:", ":--"])
    return "\n".join(lines) + "\n"


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="PlanGate benchmarks (see module docstring)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run < 30 s")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per measure")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="groups: client peer reload scale serving targeting balances",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "latest.json")
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    parser.add_argument(
        "--from", dest="source", type=Path, help="render an earlier results JSON; run nothing"
    )
    args = parser.parse_args()
    if args.source is not None:
        results = json.loads(args.source.read_text(encoding="utf-8"))
        print(table(results))
        if args.markdown is not None:
            args.markdown.write_text(markdown(results), encoding="utf-8")
            print(f"wrote {args.markdown}")
        return 0

    started = time.perf_counter()
    info = machine()
    raw: dict[str, Any] = {}
    for group in groups(args.quick, args.reps):
        family = group.name.split("_")[0]
        if args.only is not None and family not in args.only:
            continue
        print(f"[bench] {group.name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            raw[group.name] = run_json(group.args, group.timeout)
        except Exception as exc:  # one failing group must not hide the others
            raw[group.name] = "".join(traceback.format_exception_only(exc)).strip()
        print(f"[bench] {group.name} {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    results = assemble(raw, args.quick)
    results["machine"] = info
    results["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    if args.markdown is not None:
        args.markdown.write_text(markdown(results), encoding="utf-8")
        print(f"wrote {args.markdown}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
