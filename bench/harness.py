"""Measurement primitives shared by every benchmark script.

Why it is built this way:
- The box the numbers come from is small and shared, so one timing means little. Every
  measure is repeated (`reps`), each repetition is a fresh timed batch after a warm-up,
  and what is reported is the **median** of the repetitions (min/max kept for spread).
- Cases that are compared with each other (a floor and the thing held against it) are
  run **interleaved**, repetition by repetition, so a burst of background load hits both
  sides rather than only one and the ratio stays stable.
- Every script prints one JSON document on stdout and nothing else, so `run.py` can run
  each group in a fresh process (isolated heaps, threads and protobuf registries).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


@dataclass
class Stats:
    """One measure: the median over repetitions plus the spread, in `unit`."""

    value: float
    unit: str
    reps: list[float]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, reps: Sequence[float], unit: str, **extra: Any) -> Stats:
        return cls(statistics.median(reps), unit, [round(r, 3) for r in reps], extra)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["value"] = round(self.value, 3)
        out["min"] = round(min(self.reps), 3) if self.reps else None
        out["max"] = round(max(self.reps), 3) if self.reps else None
        return out


@dataclass
class Case:
    """A repeated operation: `fn` is called `n` times per repetition.

    `per_call=True` times every call separately (for RPCs, where a clock read is noise
    next to the call): a repetition's value is then the median call, and p50/p99 over all
    calls are reported too. Otherwise a repetition is timed as one batch (its mean call),
    so sub-microsecond clock overhead does not inflate in-memory lookups.
    """

    name: str
    fn: Callable[[], object]
    n: int
    per_call: bool = False
    warmup: int = 0
    samples: list[int] = field(default_factory=list)
    reps: list[float] = field(default_factory=list)


def _run_rep(case: Case) -> float:
    fn, n = case.fn, case.n
    if case.per_call:
        clock = time.perf_counter_ns
        samples: list[int] = []
        for _ in range(n):
            t0 = clock()
            fn()
            samples.append(clock() - t0)
        case.samples += samples
        return statistics.median(samples) / 1000
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n / 1000


def interleaved(cases: Sequence[Case], reps: int) -> dict[str, Stats]:
    """Warm every case up, then run repetition r of every case before repetition r+1 of any.

    Returns microseconds per call (median of the repetitions) per case name.
    Between repetitions a full collection runs, so one case's garbage is not collected on
    another case's clock.
    """
    for case in cases:
        for _ in range(case.warmup or max(10, case.n // 10)):
            case.fn()
    for _ in range(reps):
        for case in cases:
            gc.collect()
            case.reps.append(_run_rep(case))
    out: dict[str, Stats] = {}
    for case in cases:
        extra: dict[str, Any] = {"calls_per_rep": case.n}
        if case.samples:
            extra.update(percentiles(case.samples))
        out[case.name] = Stats.of(case.reps, "us", **extra)
    return out


def percentiles(samples_ns: Sequence[int | float]) -> dict[str, float]:
    """p50/p99 in microseconds of per-call samples (nanoseconds)."""
    ordered = sorted(samples_ns)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return {"p50_us": round(at(0.50), 2), "p99_us": round(at(0.99), 2)}


# -- memory -----------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process (VmRSS in /proc/self/status), in bytes."""
    text = Path("/proc/self/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")
    return int(match.group(1)) * 1024


def settled_rss() -> int:
    """RSS after a full collection, so garbage of the build step is not counted."""
    gc.collect()
    return rss_bytes()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU another process has used (/proc/PID/stat): a server's cost per call
    measured this way does not move with the machine's other load the way wall time does."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_per_call(
    servers: dict[str, tuple[int, Callable[[], object]]], calls: int, reps: int
) -> dict[str, Stats]:
    """µs of the serving process's CPU per call, for each named (pid, call), interleaved rep by
    rep; `calls` per rep should make each rep last well over the clock's 10 ms tick."""
    samples: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(reps):
        for name, (pid, call) in servers.items():
            before = process_cpu_seconds(pid)
            for _ in range(calls):
                call()
            samples[name].append((process_cpu_seconds(pid) - before) / calls * 1e6)
    return {name: Stats.of(values, "us", calls=calls) for name, values in samples.items()}


# -- machine ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were taken on; the README table quotes it."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    import grpc

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "grpcio": grpc.__version__,
        "loadavg_at_start": [round(x, 2) for x in load],
    }


# -- subprocesses -----------------------------------------------------------------------------


def run_json(args: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> Any:
    """Run `python <args>` and parse the JSON it prints; raise with its stderr on failure."""
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}{proc.stdout[-2000:]}"
        )
    return json.loads(proc.stdout)


def emit(data: Any) -> None:
    """Print a script's result for `run_json`."""
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


class Server:
    """A child process that prints `... <host>:<port>` once listening (sidecar or echo server).

    The child's output is drained on a thread so it can never block on a full pipe.
    """

    def __init__(self, args: Sequence[str], ready: str, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        self.log: list[str] = []
        pattern = re.compile(ready)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if line:
                self.log.append(line)
                match = pattern.search(line)
                if match:
                    self.port = int(match.group(1))
                    break
            elif self.proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited during start-up:\n{''.join(self.log)}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{args[0]} did not report ready:\n{''.join(self.log)}")
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def stop(self, grace: float = 1.0) -> None:
        """SIGTERM, then SIGKILL after `grace` s: the state is a throw-away temp dir, and a
        graceful stop can wait out open Watch streams (the sidecar's own 5 s grace)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sidecar(catalog: Path, db: Path) -> Server:
    """`plangate serve` exactly as deployed (its own process, free loopback ports)."""
    args = ["-m", "plangate.sidecar.cli.main", "serve", "--catalog", str(catalog), "--db", str(db)]
    args += ["--port", "0", "--management-port", "0", "--ofrep-port", "0"]
    return Server([*args, "--log-level", "WARNING"], ready=r"ready\. gRPC \S+:(\d+)")
