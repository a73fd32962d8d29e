"""`plangate`: run a sidecar, check a catalog, and operate a running sidecar."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from ..catalog import CatalogError, load_catalog
from . import client

EPILOG = """\
examples:
  plangate serve --catalog examples/catalog.yaml        # state in ./plangate.db
  plangate validate examples/catalog.yaml
  plangate check acct_acme api-calls --requested 5
  plangate accounts list

Every serve option has a PLANGATE_* environment variable (shown in its help);
client commands read PLANGATE_TARGET, PLANGATE_TOKEN and PLANGATE_TLS_CA.
"""


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"PLANGATE_{name}", default)


def _env_int(name: str, default: int) -> int:
    value = _env(name)
    return int(value) if value else default


def add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the sidecar",
        description="Run the PlanGate sidecar: gRPC evaluation/usage/admin, management HTTP and OFREP.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--catalog",
        default=_env("CATALOG"),
        help="catalog YAML/JSON file, watched for changes [PLANGATE_CATALOG]",
    )
    p.add_argument(
        "--db",
        default=_env("DB", "plangate.db"),
        help="durable state: a SQLite file, or postgresql://... to share one database among "
        "sidecars (shared mode) [PLANGATE_DB]",
    )
    p.add_argument(
        "--host",
        default=_env("HOST", "127.0.0.1"),
        help="address to bind (a sidecar stays on loopback) [PLANGATE_HOST]",
    )
    p.add_argument(
        "--port",
        type=int,
        default=_env_int("PORT", 8013),
        help="gRPC port, 0 = any free [PLANGATE_PORT]",
    )
    p.add_argument(
        "--management-port",
        type=int,
        default=_env_int("MANAGEMENT_PORT", 8014),
        help="/healthz /readyz /metrics [PLANGATE_MANAGEMENT_PORT]",
    )
    p.add_argument(
        "--ofrep-port",
        type=int,
        default=_env_int("OFREP_PORT", 8016),
        help="OFREP HTTP port [PLANGATE_OFREP_PORT]",
    )
    p.add_argument(
        "--socket",
        default=_env("SOCKET"),
        help="also serve gRPC on this Unix socket path [PLANGATE_SOCKET]",
    )
    p.add_argument(
        "--environment",
        default=_env("ENVIRONMENT", "default"),
        help="environment whose state this sidecar serves [PLANGATE_ENVIRONMENT]",
    )
    p.add_argument(
        "--token-file",
        default=_env("TOKEN_FILE"),
        help="file with the bearer token Admin and Usage calls must send [PLANGATE_TOKEN_FILE]",
    )
    p.add_argument(
        "--tls-cert", default=_env("TLS_CERT"), help="server certificate (PEM) [PLANGATE_TLS_CERT]"
    )
    p.add_argument(
        "--tls-key", default=_env("TLS_KEY"), help="server private key (PEM) [PLANGATE_TLS_KEY]"
    )
    p.add_argument(
        "--tls-client-ca",
        default=_env("TLS_CLIENT_CA"),
        help="CA that client certificates must chain to (mTLS) [PLANGATE_TLS_CLIENT_CA]",
    )
    p.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=float(_env("HEARTBEAT_SECONDS") or 5.0),
        help="idle interval of Watch/EventStream keep-alives [PLANGATE_HEARTBEAT_SECONDS]",
    )
    p.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING, ERROR [PLANGATE_LOG_LEVEL]",
    )
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    from ..server.app import Settings, Sidecar

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.catalog:
        print(
            "plangate serve: --catalog FILE is required (or set PLANGATE_CATALOG)", file=sys.stderr
        )
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("plangate serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    settings = Settings(
        catalog=args.catalog,
        db=args.db,
        host=args.host,
        port=args.port,
        management_port=args.management_port,
        ofrep_port=args.ofrep_port,
        socket=args.socket,
        environment=args.environment,
        token_file=args.token_file,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        heartbeat_seconds=args.heartbeat_seconds,
    )
    try:
        sidecar = Sidecar(settings).start()
    except CatalogError as exc:
        print(f"plangate serve: catalog {args.catalog} cannot be loaded:\n{exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError) as exc:  # unusable port, token file, store
        print(f"plangate serve: {exc}", file=sys.stderr)
        return 1
    print(
        f"plangate: ready. gRPC {args.host}:{sidecar.port}  management http://{args.host}:{sidecar.management_port}"
        + (
            f"  OFREP http://{args.host}:{sidecar.ofrep_port}"
            if getattr(sidecar, "ofrep_port", 0)
            else ""
        ),
        flush=True,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    sidecar.stop()
    return 0


def add_validate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        help="check catalog files",
        description="Check catalog files; print file:line path: problem for each error.",
    )
    p.add_argument("files", nargs="+", help="catalog YAML/JSON files")
    p.set_defaults(func=validate)


def validate(args: argparse.Namespace) -> int:
    for file in args.files:
        try:
            catalog = load_catalog(file)
        except CatalogError as exc:
            print(exc, file=sys.stderr)
            print(f"{file}: {len(exc.problems)} problem(s)", file=sys.stderr)
            return 1
        print(
            f"{file}: ok (version {catalog.version}: {len(catalog.products)} products, {len(catalog.features)} features, "
            f"{len(catalog.plans)} plans, {len(catalog.addons)} add-ons, {len(catalog.accounts)} accounts)"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plangate",
        description="PlanGate: entitlements for SaaS, served by a sidecar and read through OpenFeature.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve(sub)
    add_validate(sub)
    client.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
