"""`plangate serve`: health, reflection, management HTTP, metrics, process life cycle (design §2, §3).

In-process sidecars where a process boundary adds nothing; `plangate serve` as a child
process for binding, signals, exit codes, start-up errors and PLANGATE_* variables.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.protocol.values import to_struct
from prometheus_client.parser import text_string_to_metric_families
from support.sidecar import Stubs, SubprocessSidecar, copy_catalog, in_process, wait_for

CLI = [sys.executable, "-m", "plangate.sidecar.cli.main"]


def http_get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET on the management port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics, keyed by (name, sorted labels)."""
    status, ctype, body = http_get(port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("serve")
    with in_process(copy_catalog(d), d / "state.db", poll_seconds=0.2) as sc:
        yield sc


# -- gRPC health and reflection --------------------------------------------------------------


def test_health_service_reports_serving(stubs: Stubs) -> None:
    health = health_pb2_grpc.HealthStub(stubs.channel)
    for service in ("", "plangate.v1.Evaluation", "plangate.v1.Usage", "plangate.v1.Admin"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_reflection_describes_the_native_api(stubs: Stubs) -> None:
    db = ProtoReflectionDescriptorDatabase(stubs.channel)
    services = set(db.get_services())
    expected = {"plangate.v1.Evaluation", "plangate.v1.Usage", "plangate.v1.Admin"}
    assert expected | {"grpc.health.v1.Health"} <= services
    # a client without our .proto files can build every method from the server's descriptors
    pool = descriptor_pool.DescriptorPool(db)
    methods = {
        name: {m.name for m in pool.FindServiceByName(name).methods} for name in sorted(expected)
    }
    assert methods["plangate.v1.Evaluation"] == {"Evaluate", "EvaluateAll", "Watch"}
    assert methods["plangate.v1.Usage"] == {
        *("Report", "Consume", "History", "Export", "Ingest"),
        *("Reserve", "Settle", "Release", "ListHolds"),
    }
    assert {
        "UpsertAccount",
        "SetOverride",
        "ResetUsage",
        "AddTopUp",
        "ListAuditLog",
        "ImportStripe",
    } <= methods["plangate.v1.Admin"]
    request = pool.FindMessageTypeByName("plangate.v1.EvaluateRequest")
    assert {f.name for f in request.fields} >= {"account_id", "feature", "context", "type"}


def test_evaluation_errors_are_in_band_and_bad_requests_refused(stubs: Stubs) -> None:
    def evaluate(**fields: Any) -> pb.Resolution:
        res: pb.Resolution = stubs.evaluation.Evaluate(pb.EvaluateRequest(**fields), timeout=5)
        return res

    nan = to_struct({"requested": 1})
    nan.fields["requested"].number_value = float("nan")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"account_id": "acct_acme", "feature": "nope"}, "FLAG_NOT_FOUND"),
        ({"feature": "sso"}, "TARGETING_KEY_MISSING"),
        ({"account_id": "acct_acme", "feature": "api-calls", "context": nan}, "INVALID_CONTEXT"),
        (
            {"account_id": "acct_acme", "feature": "sso", "type": pb.VALUE_TYPE_INTEGER},
            "TYPE_MISMATCH",
        ),
    ]
    for fields, code in cases:
        res = evaluate(**fields)
        assert (res.reason, res.error_code) == ("ERROR", code), fields
        assert res.error_message, fields
    everything = stubs.evaluation.EvaluateAll(pb.EvaluateAllRequest(context=nan), timeout=5)
    assert everything.error_code in ("TARGETING_KEY_MISSING", "INVALID_CONTEXT")
    everything = stubs.evaluation.EvaluateAll(
        pb.EvaluateAllRequest(account_id="acct_acme", context=nan), timeout=5
    )
    assert everything.error_code == "INVALID_CONTEXT" and not everything.resolutions
    with pytest.raises(grpc.RpcError) as info:
        evaluate(account_id="acct_acme")
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "feature is required" in (info.value.details() or "")


# -- management HTTP -------------------------------------------------------------------------


def test_healthz_and_readyz(sidecar: Any) -> None:
    status, _, body = http_get(sidecar.management_port, "/healthz")
    assert (status, body.strip()) == (200, "ok")
    status, ctype, body = http_get(sidecar.management_port, "/readyz")
    assert status == 200 and ctype == "application/json"
    detail = json.loads(body)
    assert detail["ready"] is True
    assert detail["catalog_version"] == sidecar.state.catalog.version
    assert detail["catalog"] == "ok" and "catalog_error" not in detail
    assert detail["environment"] == "default"
    assert detail["accounts"] == len(sidecar.state.snapshot.accounts) >= 3
    status, _, body = http_get(sidecar.management_port, "/nope")
    assert status == 404 and "/metrics" in body


def test_metrics_move_with_calls(sidecar: Any, stubs: Stubs) -> None:
    before = metrics(sidecar.management_port)

    for _ in range(3):
        stubs.evaluation.Evaluate(
            pb.EvaluateRequest(account_id="acct_acme", feature="sso"), timeout=5
        )
    stubs.evaluation.Evaluate(pb.EvaluateRequest(account_id="acct_acme", feature="nope"), timeout=5)
    bad_context = pb.EvaluateRequest(
        account_id="acct_acme", feature="api-calls", context=to_struct({"requested": -1})
    )
    stubs.evaluation.Evaluate(bad_context, timeout=5)
    reports = [
        pb.UsageReport(account_id="acct_globex", feature="exports", amount=2),
        pb.UsageReport(account_id="acct_globex", feature="sso"),  # rejected: not metered
    ]
    stubs.usage.Report(pb.ReportRequest(reports=reports), timeout=5)
    stubs.usage.Consume(pb.ConsumeRequest(account_id="acct_globex", feature="exports"), timeout=5)
    with pytest.raises(grpc.RpcError):
        stubs.admin.GetAccount(pb.GetAccountRequest(id="acct_missing"), timeout=5)
    stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_metrics"), timeout=5)

    # a catalog change (sync) and a rejected one
    catalog = Path(sidecar.settings.catalog)
    good = catalog.read_text()
    served = sidecar.state.catalog.version
    catalog.write_text(good.replace("{accent: blue, logo: false}", "{accent: red, logo: false}"))
    wait_for(lambda: sidecar.state.catalog.version != served, timeout=5)
    catalog.write_text(good.replace("aggregation: sum", "aggregation: summ"))
    wait_for(lambda: sidecar.state.catalog_error is not None, timeout=5)

    after = metrics(sidecar.management_port)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("plangate_evaluations_total", api="native", reason="TARGETING_MATCH") == 3
    assert moved("plangate_evaluation_errors_total", api="native", code="FLAG_NOT_FOUND") == 1
    assert moved("plangate_evaluation_errors_total", api="native", code="INVALID_CONTEXT") == 1
    assert moved("plangate_usage_reports_total", status="applied") == 1
    assert moved("plangate_usage_reports_total", status="rejected") == 1
    assert moved("plangate_consumes_total", granted="true") == 1
    assert moved("plangate_rpc_errors_total", method="GetAccount", code="NOT_FOUND") == 1
    assert moved("plangate_admin_changes_total", method="UpsertAccount") == 1
    assert moved("plangate_catalog_reloads_total", result="ok") == 1
    assert moved("plangate_catalog_reloads_total", result="error") == 1
    assert sample(after, "plangate_catalog_last_change_rejected") == 1.0
    assert moved("plangate_rpc_seconds_count", method="Evaluate") == 5

    catalog.write_text(good)  # leave the module's sidecar serving the example again
    wait_for(lambda: sidecar.state.catalog_error is None, timeout=5)
    # the gauge is reset just after the state (the sidecar's loop and the watcher's thread)
    wait_for(
        lambda: (
            sample(metrics(sidecar.management_port), "plangate_catalog_last_change_rejected") == 0.0
        ),
        timeout=5,
    )


# -- plangate serve as a process -------------------------------------------------------------


def _listening(port: int) -> set[str]:
    """The local addresses of every socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            # the kernel prints each 32-bit word of the address in host (little-endian) order
            raw = b"".join(
                bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8)
            )
            ip = ipaddress.ip_address(raw)
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            found.add(str(mapped or ip))
    return found


def test_serve_binds_loopback_only_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    proc = SubprocessSidecar(copy_catalog(tmp_path), tmp_path / "state.db").start()
    try:
        assert "gRPC 127.0.0.1:" in "".join(proc.log)
        for port in (proc.port, proc.management_port, proc.ofrep_port):
            if port:
                assert _listening(port) == {"127.0.0.1"}, port
        with Stubs(proc.target) as s:
            # a Watch stream open during shutdown must not keep the process alive
            stream = s.evaluation.Watch(pb.WatchRequest(), timeout=30)
            assert next(stream).HasField("ready")
            s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_before_stop"), timeout=5)
            started = time.monotonic()
            code = proc.terminate(timeout=15)
            assert time.monotonic() - started < 4  # the open stream ends at once, not at grace
        assert code == 0, "".join(proc.log)
        assert any("stopped" in line for line in proc.log)
    finally:
        proc.kill()
    # what was acknowledged before the signal is there after a restart
    with in_process(proc.catalog, proc.db) as again, Stubs(f"127.0.0.1:{again.port}") as s:
        assert s.admin.GetAccount(pb.GetAccountRequest(id="acct_before_stop"), timeout=5).id


def test_serve_refuses_a_bad_catalog_at_start_up(tmp_path: Path) -> None:
    catalog = copy_catalog(tmp_path)
    text = catalog.read_text()
    catalog.write_text(text.replace("api-calls: 1000\n", "api-calls: -5\n", 1))
    line = 1 + text.split("api-calls: 1000\n")[0].count("\n")
    run = subprocess.run(
        [*CLI, "serve", "--catalog", str(catalog), "--db", str(tmp_path / "s.db"),
         "--port", "0", "--management-port", "0", "--ofrep-port", "0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 1, run
    output = run.stdout + run.stderr
    match = re.search(rf"{re.escape(str(catalog))}:(\d+) (\S+): (.*)", output)
    assert match, output
    assert int(match.group(1)) == line
    assert match.group(2).endswith("entitlements.api-calls")
    assert "Traceback" not in output and "ready" not in output
    assert not (tmp_path / "s.db").exists()  # nothing was started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_reads_plangate_environment_variables(tmp_path: Path) -> None:
    catalog = copy_catalog(tmp_path / "conf")
    db = tmp_path / "data" / "from-env.db"
    db.parent.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "PLANGATE_CATALOG": str(catalog),
        "PLANGATE_DB": str(db),
        "PLANGATE_PORT": str(port),
        "PLANGATE_MANAGEMENT_PORT": "0",
        "PLANGATE_OFREP_PORT": "0",
    }
    proc = subprocess.Popen(
        [*CLI, "serve"], env=env, cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        lines.extend(proc.stdout)

    threading.Thread(target=pump, daemon=True).start()
    try:
        wait_for(lambda: any("ready" in line for line in lines) or proc.poll() is not None, 20)
        assert proc.poll() is None, "".join(lines)
        assert f"gRPC 127.0.0.1:{port}" in "".join(lines)
        with Stubs(f"127.0.0.1:{port}") as s:
            res = s.evaluation.Evaluate(
                pb.EvaluateRequest(account_id="acct_acme", feature="sso"), timeout=5
            )
            assert res.as_boolean is True
            s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_env"), timeout=5)
        assert db.exists() and not (tmp_path / "plangate.db").exists()
        proc.terminate()
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_reports_unusable_settings_without_a_traceback(tmp_path: Path) -> None:
    catalog = copy_catalog(tmp_path)
    empty_token = tmp_path / "token"
    empty_token.write_text("\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        base = [
            "serve",
            "--catalog",
            str(catalog),
            "--db",
            str(tmp_path / "s.db"),
            "--ofrep-port",
            "0",
        ]
        cases = [
            (["--port", busy, "--management-port", "0"], 1, busy),
            (["--port", "0", "--management-port", busy], 1, "in use"),
            (
                ["--port", "0", "--management-port", "0", "--token-file", str(empty_token)],
                1,
                "empty",
            ),
            (["--port", "0", "--management-port", "0", "--tls-cert", str(catalog)], 2, "--tls-key"),
        ]
        for extra, code, fragment in cases:
            run = subprocess.run([*CLI, *base, *extra], capture_output=True, text=True, timeout=30)
            assert run.returncode == code, (extra, run.stderr)
            assert fragment in run.stderr and "Traceback" not in run.stderr, (extra, run.stderr)
    run = subprocess.run([*CLI, "serve"], capture_output=True, text=True, timeout=30,
                         env={k: v for k, v in os.environ.items() if not k.startswith("PLANGATE_")})  # fmt: skip
    assert run.returncode == 2 and "PLANGATE_CATALOG" in run.stderr


def test_a_cancelled_watch_stream_is_released_at_once(sidecar: Any, stubs: Stubs) -> None:
    def open_streams() -> float:
        return sample(metrics(sidecar.management_port), "plangate_watch_streams")

    streams = [stubs.evaluation.Watch(pb.WatchRequest(), timeout=30) for _ in range(3)]
    for stream in streams:
        assert next(stream).ready.catalog_version == sidecar.state.catalog.version
    wait_for(lambda: open_streams() == 3, timeout=2)
    for stream in streams:
        stream.cancel()
    started = time.monotonic()
    wait_for(lambda: open_streams() == 0, timeout=5)  # heartbeats are 5 s apart
    assert time.monotonic() - started < 1.0
