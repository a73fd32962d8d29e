"""Every `plangate serve` option, declared once (design §15).

Each field of `Settings` is one declaration: its name, type and default are the field's, and
`option(...)` adds the literal `PLANGATE_*` variable, the help text and a group. The argparse
flags (`add_flags`), the environment fallback (`from_args`) and the docs' table of options
(`markdown_table`, written by `scripts/gen_settings_doc.py`) are all derived from these
fields, so an option cannot exist in one place and be missing from another.

`Settings` itself never reads the environment: tests and benchmarks build it from keyword
arguments, and `plangate serve` builds it from its command line with `from_args`, the one
place where `PLANGATE_*` variables are read.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

MiB = 1024 * 1024


def option(default: Any, env: str, help: str, group: str = "serving") -> Any:
    """A `Settings` field with its variable and help; `default=MISSING` makes it required."""
    meta = {"env": env, "help": help, "group": group}
    if default is MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Settings:
    """What a sidecar is started with; field names are the `--flag-names` with underscores."""

    catalog: str = option(
        MISSING, "PLANGATE_CATALOG", "the catalog file; watched, every valid change is live"
    )
    db: str = option(
        "plangate.db",
        "PLANGATE_DB",
        "durable state: a SQLite file, or postgresql://... to share one database among "
        "sidecars (shared mode)",
    )
    host: str = option(
        "127.0.0.1", "PLANGATE_HOST", "address of the gRPC and OFREP listeners (loopback)"
    )
    port: int = option(8013, "PLANGATE_PORT", "gRPC port, 0 = any free")
    management_host: str = option(
        "127.0.0.1",
        "PLANGATE_MANAGEMENT_HOST",
        "address of the management port; 0.0.0.0 in a pod so the kubelet can probe it",
    )
    management_port: int = option(
        8014, "PLANGATE_MANAGEMENT_PORT", "/healthz /readyz /metrics port, 0 = any free"
    )
    ofrep_port: int = option(8016, "PLANGATE_OFREP_PORT", "OFREP HTTP port, 0 = any free")
    connections_host: str = option(
        "127.0.0.1",
        "PLANGATE_CONNECTIONS_HOST",
        "address of the connections listener (Stripe webhooks) alone, so exposing it exposes "
        "nothing else",
    )
    connections_port: int = option(
        -1,
        "PLANGATE_CONNECTIONS_PORT",
        "port of POST /connections/stripe (design §18; 8017 by convention), -1 = off, 0 = any free",
    )
    allowed_hosts: str = option(
        "",
        "PLANGATE_ALLOWED_HOSTS",
        "comma-separated host names the HTTP ports answer besides IP addresses, localhost and "
        "--host (DNS-rebinding defence; others get 421)",
        "security",
    )
    ofrep_cors_origins: str = option(
        "",
        "PLANGATE_OFREP_CORS_ORIGINS",
        "comma-separated origins (https://app.example.com) whose browser pages may call OFREP, "
        "e.g. with @openfeature/ofrep-web-provider, or * for any; none by default",
        "security",
    )
    http_idle_seconds: float = option(
        60.0,
        "PLANGATE_HTTP_IDLE_SECONDS",
        "an HTTP connection that sends no complete request head for this long (since it "
        "opened or its last answer) is closed; a gRPC connection that completes no handshake",
    )
    http_body_seconds: float = option(
        10.0,
        "PLANGATE_HTTP_BODY_SECONDS",
        "a request body not received in full within this long is answered 408",
    )
    http_max_connections: int = option(
        0,
        "PLANGATE_HTTP_MAX_CONNECTIONS",
        "open connections per HTTP port; more are answered 503 and closed (0 = a quarter of "
        "the open-file limit)",
    )
    socket: str | None = option(None, "PLANGATE_SOCKET", "also serve gRPC on this Unix socket path")
    environment: str = option(
        "default",
        "PLANGATE_ENVIRONMENT",
        "environment whose state this sidecar serves; environments never see each other's "
        "accounts or usage",
    )
    token_file: str | None = option(
        None,
        "PLANGATE_TOKEN_FILE",
        "file of bearer tokens Admin and Usage calls must send: one per line, name:token (the name is the audit log's actor) or a bare token",
        "security",
    )
    tls_cert: str | None = option(
        None, "PLANGATE_TLS_CERT", "server certificate (PEM); goes with --tls-key", "security"
    )
    tls_key: str | None = option(
        None, "PLANGATE_TLS_KEY", "server private key (PEM); goes with --tls-cert", "security"
    )
    tls_client_ca: str | None = option(
        None,
        "PLANGATE_TLS_CLIENT_CA",
        "CA that client certificates must chain to (mutual TLS)",
        "security",
    )
    log_level: str = option("INFO", "PLANGATE_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR")
    workers: int = option(64, "PLANGATE_WORKERS", "gRPC worker threads", "tuning")
    heartbeat_seconds: float = option(
        5.0,
        "PLANGATE_HEARTBEAT_SECONDS",
        "idle interval of Watch and flagd EventStream keep-alives",
        "tuning",
    )
    stream_coalesce_seconds: float = option(
        1.0,
        "PLANGATE_STREAM_COALESCE_SECONDS",
        "shortest time between two account-change messages on a flagd EventStream or a Watch"
        " that names no accounts",
        "tuning",
    )
    poll_seconds: float = option(
        2.0,
        "PLANGATE_POLL_SECONDS",
        "how often the catalog watcher re-checks the file when no file event came",
        "tuning",
    )
    catalog_settle_seconds: float = option(
        0.2,
        "PLANGATE_CATALOG_SETTLE_SECONDS",
        "quiet time after a catalog file event before the file is read",
        "tuning",
    )
    max_catalog_bytes: int = option(
        16 * MiB, "PLANGATE_MAX_CATALOG_BYTES", "a larger catalog file is refused", "tuning"
    )
    max_report_ahead_seconds: float = option(
        300.0,
        "PLANGATE_MAX_REPORT_AHEAD_SECONDS",
        "a usage report dated further past the sidecar's clock is refused (clock skew allowance)",
        "tuning",
    )
    max_accounts: int = option(
        0,
        "PLANGATE_MAX_ACCOUNTS",
        "stored accounts held in memory, least recently used evicted; others are read from"
        " the store on first use (design §19); 0 holds every account",
        "tuning",
    )
    history_days: int = option(
        400,
        "PLANGATE_HISTORY_DAYS",
        "days of hourly usage history and closed periods kept (design §6.2, §14)",
        "housekeeping",
    )
    audit_days: int = option(
        400,
        "PLANGATE_AUDIT_DAYS",
        "days of audit log entries kept (design §12, §14)",
        "housekeeping",
    )
    housekeeping_seconds: float = option(
        3600.0,
        "PLANGATE_HOUSEKEEPING_SECONDS",
        "interval of the pruning task (design §14)",
        "housekeeping",
    )
    webhook_backoff_seconds: float = option(
        5.0,
        "PLANGATE_WEBHOOK_BACKOFF_SECONDS",
        "delay before the first retry of a webhook delivery (quota and lifecycle); doubles each "
        "attempt (capped at 1 h)",
        "webhook deliveries",
    )
    webhook_max_attempts: int = option(
        10,
        "PLANGATE_WEBHOOK_MAX_ATTEMPTS",
        "attempts before a webhook delivery is marked failed",
        "webhook deliveries",
    )
    webhook_timeout_seconds: float = option(
        10.0, "PLANGATE_WEBHOOK_TIMEOUT_SECONDS", "per HTTP attempt", "webhook deliveries"
    )
    outbox_poll_seconds: float = option(
        1.0,
        "PLANGATE_OUTBOX_POLL_SECONDS",
        "how often the outbox looks for due retries (a new firing wakes it at once)",
        "webhook deliveries",
    )
    trial_ending_days: float = option(
        3.0,
        "PLANGATE_TRIAL_ENDING_DAYS",
        "how long before a trial's end the `trial.ending` webhook is sent (design §7.1)",
        "webhook deliveries",
    )
    reconcile_seconds: float = option(
        30.0,
        "PLANGATE_RECONCILE_SECONDS",
        "shared mode: interval of the full re-read of the database",
        "shared mode",
    )


@dataclass(frozen=True)
class Declared:
    """One option as the flags, the environment reader and the docs see it."""

    name: str
    kind: type  # str, int or float
    required: bool
    default: Any
    env: str
    help: str
    group: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, text: str, source: str) -> Any:
        """A value given as text (flag or variable); `ValueError` names where it came from."""
        try:
            return self.kind(text)
        except ValueError:
            word = {int: "a whole number", float: "a number"}.get(self.kind, "text")
            raise ValueError(f"{source}={text!r} is not {word}") from None


def declarations() -> Iterator[Declared]:
    hints = typing.get_type_hints(Settings)
    for f in fields(Settings):
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
        kind = next(a for a in args if a is not type(None)) if args else hint
        yield Declared(
            name=f.name,
            kind=kind,
            required=f.default is MISSING,
            default=None if f.default is MISSING else f.default,
            env=f.metadata["env"],
            help=f.metadata["help"],
            group=f.metadata["group"],
        )


def value_of(name: str, env: Mapping[str, str]) -> Any:
    """One setting as `serve` takes it when no flag gives it: its variable, else its default.
    For the commands that work on a sidecar's own files (`validate`, `diff`), so they find
    what `serve` would."""
    declared = next(d for d in declarations() if d.name == name)
    return (
        declared.parse(env[declared.env], declared.env) if declared.env in env else declared.default
    )


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One `--flag` per option. Defaults are left to `from_args`, so it can tell a flag
    given on the command line from one to look up in the environment."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for d in declarations():
        group = groups.get(d.group) or parser.add_argument_group(f"{d.group} options")
        groups[d.group] = group
        default = "required" if d.required else ("none" if d.default is None else d.default)
        group.add_argument(
            d.flag,
            dest=d.name,
            metavar={int: "N", float: "SECONDS" if d.name.endswith("_seconds") else "X"}.get(
                d.kind, "VALUE"
            ),
            default=None,
            help=f"{d.help} (default: {default}) [{d.env}]",
        )


def from_args(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Settings from the command line, then `PLANGATE_*` variables, then the defaults.
    `ValueError` says which flag or variable is wrong (or which required one is missing)."""
    values: dict[str, Any] = {}
    for d in declarations():
        given = getattr(args, d.name, None)
        if given is not None:
            values[d.name] = d.parse(given, d.flag)
        elif env.get(d.env):
            values[d.name] = d.parse(env[d.env], d.env)
        elif d.required:
            raise ValueError(f"{d.flag} is required (or set {d.env})")
    return Settings(**values)


def markdown_table() -> str:
    """The docs' table of options (docs/operating.md), one row per declaration."""
    rows = [
        "| flag | variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for d in declarations():
        if d.required:
            default = "(required)"
        elif d.default is None:
            default = "none"
        else:
            default = f"`{d.default}`"
        rows.append(f"| `{d.flag}` | `{d.env}` | {default} | {d.help} |")
    return "\n".join(rows) + "\n"
