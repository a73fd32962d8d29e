"""`plangate health [--ready]`: ask a sidecar's management port whether it is up or ready.

It is the probe a container runs on itself (design §13): the image's `HEALTHCHECK` and a
pod's exec probes call it, so neither needs curl in the image nor the management port on
the pod's IP. It asks `http://127.0.0.1:<management port>/healthz` (or `/readyz`), the port
and address coming from the same `PLANGATE_MANAGEMENT_*` variables `plangate serve` reads.
Exit codes are a probe's: 0 healthy/ready, 1 answered but not ready, 2 not reachable.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import settings
from . import output

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[argparse.ArgumentParser]

OK, NOT_READY, UNREACHABLE = 0, 1, 2
WILDCARDS = {"", "0.0.0.0", "::", "[::]"}
EXIT_CODES = """\
exit codes:
  0  the sidecar is up (with --ready: ready to serve)
  1  the sidecar answered but is not ready (e.g. shared mode without its database)
  2  the sidecar cannot be reached (not started, wrong port), or bad arguments
"""


def _setting(name: str, env: Mapping[str, str]) -> Any:
    """A serve setting as `plangate serve` would read it from the environment."""
    declared = next(d for d in settings.declarations() if d.name == name)
    text = env.get(declared.env)
    return declared.parse(text, declared.env) if text else declared.default


def _address(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, int]:
    host = args.host or _setting("management_host", env)
    port = args.port if args.port is not None else _setting("management_port", env)
    # A sidecar listening on every address answers on loopback; probes run beside it.
    return ("127.0.0.1" if host in WILDCARDS else host.strip("[]")), port


def probe(host: str, port: int, path: str, timeout: float) -> tuple[int, bytes]:
    """(HTTP status, body). No proxy is consulted: the sidecar is on this host."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def health(args: argparse.Namespace) -> int:
    try:
        host, port = _address(args, os.environ)
    except ValueError as exc:
        print(f"plangate health: {exc}", file=sys.stderr)
        return UNREACHABLE
    path = "/readyz" if args.ready else "/healthz"
    url = f"http://{host}:{port}{path}"
    try:
        status, body = probe(host, port, path, args.timeout)
    except (OSError, http.client.HTTPException) as exc:
        return _show(
            args, {"url": url, "reachable": False, "error": str(exc) or type(exc).__name__}
        )
    report: dict[str, Any] = {"url": url, "reachable": True, "status": status}
    if args.ready:
        try:
            report["detail"] = json.loads(body)
        except ValueError:
            report["detail"] = body.decode(errors="replace").strip()
    return _show(args, report)


def _show(args: argparse.Namespace, report: dict[str, Any]) -> int:
    what = "ready" if args.ready else "healthy"
    report[what] = report.get("status") == 200
    code = OK if report[what] else NOT_READY if report["reachable"] else UNREACHABLE
    if args.json:
        print(output.dumps(report))
    elif code == OK:
        print(f"{what}: {report['url']}")
    elif code == NOT_READY:
        print(f"plangate: not {what}: {report['url']} answered {report['status']}", file=sys.stderr)
        if isinstance(report.get("detail"), dict):
            print(output.fields(report["detail"], "  "), file=sys.stderr)
    else:
        print(
            f"plangate: cannot reach {report['url']} ({report['error']}); is the sidecar running, "
            "and is PLANGATE_MANAGEMENT_PORT the port it serves?",
            file=sys.stderr,
        )
    return code


def add_health(sub: Sub) -> None:
    p = sub.add_parser(
        "health",
        help="probe a sidecar's /healthz or /readyz (for HEALTHCHECK and exec probes)",
        description="Ask the sidecar's management port on this host whether it is up "
        "(/healthz) or ready (/readyz). The port and address default to what "
        "`plangate serve` reads: PLANGATE_MANAGEMENT_PORT and PLANGATE_MANAGEMENT_HOST "
        "(a wildcard address is asked on 127.0.0.1).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ready", action="store_true", help="ask /readyz instead of /healthz")
    p.add_argument("--port", type=int, help="management port [PLANGATE_MANAGEMENT_PORT, 8014]")
    p.add_argument("--host", help="management address [PLANGATE_MANAGEMENT_HOST, 127.0.0.1]")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    p.add_argument("--json", action="store_true", help="print what was asked and answered as JSON")
    p.set_defaults(func=health)
