"""Assembling a running sidecar: store, live state, gRPC, HTTP endpoints and the catalog watcher.

`Sidecar` is used by `plangate serve` and, in-process, by the tests and benchmarks, so
what they exercise is exactly what runs in production.

Serving (design §2.1): one asyncio event loop, in its own thread, runs `grpc.aio` for every
gRPC service and aiohttp for the two HTTP ports; a stream or an idle connection costs no
thread. Evaluations run on the loop (pure reads of the snapshot); everything that touches the
store (Report, Consume, the Admin calls, /readyz) runs on a small thread pool off the loop.
`start()` and `stop()` stay synchronous so callers need not know about the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import ssl
import stat
from collections.abc import Sequence
from concurrent import futures
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # health: the service name

from ...protocol.plangate.v1 import plangate_pb2, plangate_pb2_grpc
from ..catalog import Catalog, load_catalog
from ..catalog.build import check_successor
from ..runtime.jobs.housekeeping import Housekeeper
from ..runtime.jobs.lifecycle_scheduler import LifecycleScheduler
from ..runtime.jobs.outbox import OutboxSettings, OutboxWorker
from ..runtime.jobs.timekeeper import Timekeeper
from ..runtime.live.state import LiveState
from ..runtime.serve.admin import Admin
from ..runtime.serve.decisions import Decisions
from ..runtime.serve.stripe import StripeSync, webhook_secret
from ..settings import Settings
from ..store import describe_db, is_shared, open_store
from ..store.base import DeliveryStatus, Firing
from ..store.errors import StoreUnavailable
from ..sync.catalog_watch import CatalogWatcher
from .admin import AdminService
from .auth import TokenAuth, Tokens, read_tokens
from .auth_guard import Failures
from .connections import connections_app
from .console.routes import Console
from .console.session import Sessions
from .cors import allowed_origins
from .drain import Drain
from .evaluation import EvaluationService
from .events_http import ingest_handler
from .flagd import add_flagd_services
from .health import HealthService
from .hosts import allowed_names
from .http_listener import HttpLimits, HttpPort
from .loop import LoopThread
from .management import management_app
from .metrics import Metrics
from .ofrep import ofrep_app
from .reflection import add_reflection
from .usage import UsageService
from .wire import RefuseUndecodable
from .working_set_metrics import WorkingSetCollector

if TYPE_CHECKING:
    from ..sync.pg_feed import ChangeFeed

log = logging.getLogger("plangate.sidecar")

_TEN_YEARS = 10 * 365 * 86400.0
"""The most `--max-report-ahead-seconds` may be (a larger one would overflow dates)."""

SERVICES = ("plangate.v1.Evaluation", "plangate.v1.Usage", "plangate.v1.Admin")


GRPC_OPTIONS: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]
"""Server options shared with the benchmarks' echo floor (bench/echo_server.py)."""

GRPC_KEEPALIVE: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 60_000),  # ping a connection idle this long: find dead peers
    ("grpc.keepalive_timeout_ms", 20_000),  # ... and close it when the ping goes unanswered
    ("grpc.max_connection_idle_ms", 300_000),  # no call for 5 min: GOAWAY (clients reconnect)
]
"""gRPC connections end when their peer is gone or they go unused (decision 1331); a stream
(`Watch`, `EventStream`) keeps its connection in use."""

_PROBLEM = re.compile(r"^(\S+:\d+ \S+): ", re.MULTILINE)


def where_rejected(message: str) -> str:
    """The `file:line path` of each problem of a rejected catalog change, without the
    message: /readyz answers anyone who can reach the port, and a message may quote the file
    or name accounts. The whole message is in the log."""
    places = _PROBLEM.findall(message)
    return (
        "; ".join(places) + " (details in the sidecar's log)" if places else "see the sidecar's log"
    )


def server_credentials(s: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, or None for plaintext; raises ValueError saying
    which file is wrong, before any port is bound."""
    if s.tls_client_ca and not (s.tls_cert and s.tls_key):
        raise ValueError(
            "--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key: without a server "
            "certificate the port would be plaintext and client certificates never checked"
        )
    if not (s.tls_cert and s.tls_key):
        return None
    for flag, path in (
        ("--tls-cert", s.tls_cert),
        ("--tls-key", s.tls_key),
        ("--tls-client-ca", s.tls_client_ca),
    ):
        if path and not os.access(path, os.R_OK):
            raise ValueError(f"TLS: {flag} {path} cannot be read (no such file, or no permission)")
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        check.load_cert_chain(s.tls_cert, s.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(
            f"TLS: --tls-cert {s.tls_cert} and --tls-key {s.tls_key} are not a usable PEM "
            f"certificate and matching private key ({getattr(exc, 'reason', None) or exc})"
        ) from exc
    if s.tls_client_ca:
        try:
            check.load_verify_locations(s.tls_client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"TLS: --tls-client-ca {s.tls_client_ca} is not a readable PEM CA certificate "
                f"({getattr(exc, 'reason', None) or exc})"
            ) from exc
    return grpc.ssl_server_credentials(
        [(Path(s.tls_key).read_bytes(), Path(s.tls_cert).read_bytes())],
        root_certificates=Path(s.tls_client_ca).read_bytes() if s.tls_client_ca else None,
        require_client_auth=bool(s.tls_client_ca),
    )


def check_socket_path(path: str) -> None:
    """Refuse a --socket path that is something other than a socket (gRPC would replace it)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(
            f"--socket {path} exists and is not a socket; choose another path (it is left untouched)"
        )


class Sidecar:
    """A whole sidecar. `start()` binds every port (0 = a free one, read back from the attributes)."""

    LOOP_THREAD = "plangate-loop"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.credentials = server_credentials(settings)
        if settings.socket:
            check_socket_path(settings.socket)
        # token -> name (the audit log's actor); empty: the API is open and callers anonymous
        self.tokens: Tokens = read_tokens(settings.token_file) if settings.token_file else {}
        self.failures = Failures()  # wrong tokens per address: gRPC and console sign-in share it
        if not 0 <= settings.max_report_ahead_seconds <= _TEN_YEARS:
            raise ValueError(
                f"--max-report-ahead-seconds must be between 0 and {_TEN_YEARS:g} seconds, "
                f"got {settings.max_report_ahead_seconds}"
            )
        if not settings.trial_ending_days >= 0:
            raise ValueError(
                f"--trial-ending-days must be 0 or more days, got {settings.trial_ending_days}"
            )
        # a bad catalog stops start-up here, with its message
        catalog = load_catalog(settings.catalog, settings.max_catalog_bytes)
        if settings.connections_port >= 0:
            webhook_secret(catalog.stripe)  # a missing secret stops start-up, naming it
        self.store = open_store(settings.db, settings.environment)
        if settings.max_accounts < 0:
            raise ValueError(
                f"--max-accounts must be 0 (every account) or more, got {settings.max_accounts}"
            )
        self.state = LiveState(catalog, self.store, max_accounts=settings.max_accounts)
        self.state.report_ahead = timedelta(seconds=settings.max_report_ahead_seconds)
        self.decisions = Decisions(self.state)
        self.timekeeper = Timekeeper(self.state)  # design §8 "Time": Watch events at boundaries
        self.feed: ChangeFeed | None = None
        if is_shared(settings.db):  # shared mode, design §10
            from ..sync.pg_feed import attach_feed  # psycopg is needed only in shared mode

            self.feed = attach_feed(self.store, self.state, settings.reconcile_seconds)
        self.metrics = Metrics()
        if self.state.working is not None:
            self.metrics.registry.register(WorkingSetCollector(self.state.working))
        self.outbox = OutboxWorker(
            self.state,
            OutboxSettings(
                backoff_seconds=settings.webhook_backoff_seconds,
                max_attempts=settings.webhook_max_attempts,
                timeout_seconds=settings.webhook_timeout_seconds,
                poll_seconds=settings.outbox_poll_seconds,
            ),
            self.metrics,
        )
        self.state.quota_listeners.append(self._quota_fired)
        self.state.enqueued_listeners.append(self.outbox.wake)
        self.lifecycle = LifecycleScheduler(  # design §7.1: time-driven webhooks, once each
            self.state, timedelta(days=settings.trial_ending_days), self.outbox.wake
        )
        # every admin face (gRPC, console) changes state through this one facade
        self.admin = Admin(
            self.state,
            on_change=lambda method: self.metrics.admin_changes.labels(method).inc(),
            wake_outbox=self.outbox.wake,
        )
        # design §18: Stripe events change state through the same edits, as actor `stripe`
        self.stripe = StripeSync(
            self.state,
            on_outcome=lambda kind, outcome: self.metrics.stripe_events.labels(kind, outcome).inc(),
        )
        self.connections: HttpPort | None = None
        self.connections_port = 0
        self.housekeeper = Housekeeper(
            self.state,
            settings.history_days,
            settings.audit_days,
            settings.housekeeping_seconds,
            self.metrics.housekeeping_pruned,
        )
        self.port = 0
        self.management_port = 0
        self.ofrep_port = 0
        self.watcher = CatalogWatcher(
            settings.catalog,
            current=lambda: self.state.catalog.version,
            apply=self._apply_catalog,
            on_error=self._catalog_rejected,
            on_restored=self._catalog_restored,
            poll_seconds=settings.poll_seconds,
            settle_seconds=settings.catalog_settle_seconds,
            max_bytes=settings.max_catalog_bytes,
        )
        # store writes and other blocking calls, off the loop (GroupCommit merges concurrent ones)
        self.blocking = futures.ThreadPoolExecutor(
            max_workers=settings.workers, thread_name_prefix="plangate-store"
        )
        self._loop: LoopThread | None = None

    # -- assembly (on the loop) --------------------------------------------------------------

    def _evict_on_the_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Design §19: a load on another thread (admin, History) asks the loop to evict, the
        only place evictions happen (decision 2500)."""
        state = self.state
        if state.working is not None:

            def evict_soon() -> None:
                loop.call_soon_threadsafe(state.evict_due)

            state.loaded_off_loop = evict_soon

    async def _open(self) -> None:
        s = self.settings
        self.state.events.bind(asyncio.get_running_loop(), s.stream_coalesce_seconds)
        self._evict_on_the_loop(asyncio.get_running_loop())
        self.health = HealthService()
        self.drain = Drain()
        interceptors: list[Any] = [self.drain.interceptor, RefuseUndecodable()]
        if self.tokens:
            interceptors.append(TokenAuth(self.tokens, self.failures))
        server = grpc.aio.server(
            migration_thread_pool=self.blocking,  # runs the plain (non-async) Admin handlers
            interceptors=interceptors,
            options=[
                *GRPC_OPTIONS,
                *GRPC_KEEPALIVE,
                # a connection that never completes its HTTP/2 (or TLS) handshake is dropped
                ("grpc.server_handshake_timeout_ms", int(s.http_idle_seconds * 1000)),
            ],
        )
        events, heartbeat = self.state.events, s.heartbeat_seconds
        plangate_pb2_grpc.add_EvaluationServicer_to_server(
            EvaluationService(self.decisions, events, self.metrics, heartbeat), server
        )
        plangate_pb2_grpc.add_UsageServicer_to_server(
            UsageService(self.decisions, self.metrics, self.blocking), server
        )
        plangate_pb2_grpc.add_AdminServicer_to_server(
            AdminService(self.admin, self.metrics, self.tokens), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        flagd_names = add_flagd_services(server, self.decisions, events, self.metrics, heartbeat)
        names = [
            plangate_pb2.DESCRIPTOR.services_by_name[n.split(".")[-1]].full_name for n in SERVICES
        ]
        served = [*names, *flagd_names, health.SERVICE_NAME]
        self.reflection = add_reflection(server, served)
        address = f"{s.host}:{s.port}"
        if s.port and not _can_bind(s.host, s.port):  # before grpcio, which logs a raw error
            raise OSError(f"cannot listen on {address} (port in use?); choose another with --port")
        try:  # grpcio reports a busy port as RuntimeError (newer) or port 0 (older)
            if self.credentials is not None:
                self.port = server.add_secure_port(address, self.credentials)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen on {address} (port in use?); choose another with --port")
        if s.socket:
            server.add_insecure_port(f"unix:{s.socket}")
        self.drain.bind(server, served)
        self.grpc_server = server
        limits = HttpLimits(
            idle_seconds=s.http_idle_seconds,
            body_seconds=s.http_body_seconds,
            max_connections=s.http_max_connections,
            allowed_hosts=allowed_names(s.allowed_hosts, (s.host, s.management_host)),
        )
        self.management = HttpPort(
            management_app(self.metrics, self.readiness, self.blocking, self._console()),
            s.management_host,
            s.management_port,
            "management",
            "--management-port",
            limits,
        )
        self.ofrep = HttpPort(
            ofrep_app(
                self.decisions,
                self.metrics,
                self.state.events,
                s.heartbeat_seconds,
                s.stream_coalesce_seconds,
                allowed_origins(s.ofrep_cors_origins),
                ingest_handler(self.decisions, self.blocking, self.tokens, self.failures),
            ),
            s.host,
            s.ofrep_port,
            "OFREP",
            "--ofrep-port",
            limits,
        )
        await server.start()
        try:
            await self.management.start()
            self.management_port = self.management.port
            await self.ofrep.start()
            self.ofrep_port = self.ofrep.port
            await self._start_connections(limits)
        except BaseException:
            await self.ofrep.stop()
            await self.management.stop()
            await server.stop(None)
            raise
        for name in ("", *SERVICES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def _start_connections(self, limits: HttpLimits) -> None:
        """The connections listener (design §18), on its own host and port when configured;
        it answers any `Host`: Stripe calls it by a public name, the signature authenticates."""
        s = self.settings
        if s.connections_port < 0:
            return
        self.connections = HttpPort(
            connections_app(self.stripe, self.blocking),
            s.connections_host,
            s.connections_port,
            "connections",
            "--connections-port",
            replace(limits, any_host=True),
        )
        await self.connections.start()
        self.connections_port = self.connections.port

    def _console(self) -> Console:
        """The web console (design §12): read-only without a token file, otherwise behind
        a sign-in with one of its tokens."""
        return Console(
            self.state,
            self.decisions,
            self.admin,
            Sessions(self.tokens, failures=self.failures),
            self.blocking,
            self.settings.environment,
        )

    async def _close(self, grace: float) -> None:
        """Design §2.1: every stream ends with UNAVAILABLE at once, new calls are refused,
        calls in flight (every call that arrived before) get `grace` seconds (`drain`)."""
        await self.health.close()
        self.state.events.close()
        self.reflection.close()
        await self.drain.stop(self.grpc_server, grace)
        if self.connections is not None:
            await self.connections.stop()
        await self.ofrep.stop()
        await self.management.stop()

    # -- catalog sync ------------------------------------------------------------------------

    def _apply_catalog(self, catalog: Catalog) -> None:
        check_successor(self.state.catalog, catalog)
        if self.settings.connections_port >= 0:
            webhook_secret(catalog.stripe)  # rejected like any bad catalog (design §18)
        self.state.replace_catalog(catalog)
        self.metrics.catalog_reloads.labels("ok").inc()
        self.metrics.catalog_rejected.set(0)

    def _catalog_rejected(self, message: str) -> None:
        self.state.catalog_error = message
        self.metrics.catalog_reloads.labels("error").inc()
        self.metrics.catalog_rejected.set(1)

    def _catalog_restored(self) -> None:
        """The file is back to the served content: nothing is rejected any more."""
        self.state.catalog_error = None
        self.metrics.catalog_rejected.set(0)

    def _quota_fired(self, account: str, feature: str, fired: Sequence[Firing]) -> None:
        self.metrics.quota_fired.labels(feature).inc(len(fired))
        self.outbox.wake()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """/readyz's answer; reads the store, so it runs off the loop."""
        detail: dict[str, Any] = {
            "catalog_version": self.state.catalog.version,
            "catalog": "ok"
            if self.state.catalog_error is None
            else "last change rejected; serving the previous version",
            "environment": self.settings.environment,
            "accounts": len(self.state.snapshot.accounts),
        }
        working = self.state.working
        if working is not None:  # design §19: what memory holds of the store's accounts
            detail["working_set"] = {
                "max_accounts": working.capacity,
                "held": working.held,
                "hits": working.stats.hits,
                "misses": working.stats.misses,
                "evictions": working.stats.evictions,
            }
        if self.state.catalog_error is not None:
            detail["catalog_error"] = where_rejected(self.state.catalog_error)
        if self.feed is not None:
            feed_ready, detail["store"] = self.feed.readiness()
            if not feed_ready:  # the database is away: say so at once, without waiting on it
                return False, detail
        problem = self.store.health()
        if problem is not None:
            detail["store_error"] = problem
            return False, detail
        try:
            counts = self.store.count_deliveries()
        except StoreUnavailable as exc:
            detail["store_error"] = str(exc)
            return False, detail
        detail["outbox"] = {
            "pending": counts[DeliveryStatus.PENDING],
            "failed": counts[DeliveryStatus.FAILED],
        }
        return True, detail

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Sidecar:
        """Start the loop thread and return once every port is bound (or raise why not)."""
        loop = LoopThread(self.LOOP_THREAD)
        try:
            loop.run(self._open())
        except BaseException:
            loop.close()
            self.blocking.shutdown(wait=False)
            self.store.close()
            raise
        self._loop = loop
        self.watcher.start()
        if self.feed is not None:
            self.feed.start()
        self.outbox.start()
        self.housekeeper.start()
        self.timekeeper.start()
        self.lifecycle.start()
        log.info(
            "serving catalog %s (%d features, %d accounts) on %s:%d; management on :%d; state in %s [%s]",
            self.state.catalog.version,
            len(self.state.catalog.features),
            len(self.state.snapshot.accounts),
            self.settings.host,
            self.port,
            self.management_port,
            describe_db(self.settings.db),
            self.settings.environment,
        )
        return self

    def stop(self, grace: float = 3.0) -> None:
        """Graceful (design §2.1): streams end with UNAVAILABLE, new calls are refused, calls
        in flight get up to `grace` s; then the writers stop and the store closes. The default
        leaves SIGTERM within 5 s in all."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        loop.run(self._close(grace))  # first: streams must not wait for the threads below
        loop.close()
        self.timekeeper.stop()
        self.lifecycle.stop()
        self.watcher.stop()  # may take up to one poll interval to notice
        self.outbox.stop()
        self.housekeeper.stop()
        if self.feed is not None:
            self.feed.stop()
        self.blocking.shutdown(wait=True)
        self.store.close()
        log.info("stopped")


def _can_bind(host: str, port: int) -> bool:
    """Whether `host:port` is free to listen on, asked with a plain socket (SO_REUSEADDR, so a
    port in TIME_WAIT counts as free, as it does for grpcio)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return True  # let grpcio say what is wrong with the address
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError:
                return False
    return True
