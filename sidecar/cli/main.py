"""`plangate`: run a sidecar, check a catalog, and operate a running sidecar."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from .. import settings
from . import client, diff, health, meters

# The catalog, runtime and store packages are imported by the commands that use them: a
# client command imports only gRPC and the stubs, so each call starts in a fraction of a second.

EPILOG = (
    """\
examples:
  plangate serve --catalog examples/catalog.yaml        # state in ./plangate.db
  plangate validate examples/catalog.yaml
  plangate check acct_acme api-calls --requested 5
  plangate accounts list --json
  plangate health --ready                               # exit 0 once ready to serve

Every serve option has a PLANGATE_* environment variable (`plangate serve --help`);
client commands read PLANGATE_TARGET, PLANGATE_TOKEN and PLANGATE_TLS_CA. Client commands
print for people; --json prints the reply for scripts: the API's field names, unset fields
left out, whole numbers as integers, times in ISO-8601 UTC, enums in lower case.

"""
    + client.EXIT_CODES
)


def add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the sidecar",
        description="Run the PlanGate sidecar: gRPC evaluation/usage/admin, management HTTP "
        "and OFREP. Every option falls back to its PLANGATE_* variable, then to its default.",
    )
    settings.add_flags(p)
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    from ..catalog import CatalogError
    from ..server.app import Sidecar

    try:
        config = settings.from_args(args, os.environ)
    except ValueError as exc:
        print(f"plangate serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if bool(config.tls_cert) != bool(config.tls_key):
        print("plangate serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        sidecar = Sidecar(config).start()
    except CatalogError as exc:
        print(f"plangate serve: catalog {config.catalog} cannot be loaded:\n{exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError) as exc:  # unusable port, token file, store
        print(f"plangate serve: {exc}", file=sys.stderr)
        return 1
    print(
        f"plangate: ready. gRPC {config.host}:{sidecar.port}  management http://{config.host}:{sidecar.management_port}"
        + (
            f"  OFREP http://{config.host}:{sidecar.ofrep_port}"
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
    p.add_argument(
        "--max-catalog-bytes",
        type=int,
        default=settings.value_of("max_catalog_bytes", os.environ),
        help="refuse larger files, as `serve` does (default: %(default)s)",
    )
    p.set_defaults(func=validate)


def validate(args: argparse.Namespace) -> int:
    from ..catalog import CatalogError, load_catalog

    for file in args.files:
        try:
            catalog = load_catalog(file, args.max_catalog_bytes)
        except CatalogError as exc:
            print(exc, file=sys.stderr)
            print(f"{file}: {len(exc.problems)} problem(s)", file=sys.stderr)
            return 1
        for warning in catalog.warnings:
            print(f"warning: {warning}", file=sys.stderr)
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
    diff.add_diff(sub)
    meters.add_meters(sub)
    health.add_health(sub)
    client.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`plangate audit | head`): what it wanted was printed. Point
        # stdout at /dev/null so the interpreter's own final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
