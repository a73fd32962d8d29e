"""Assembling a running sidecar: store, live state, gRPC, HTTP endpoints and the catalog watcher.

`Sidecar` is used by `plangate serve` and, in-process, by the tests and benchmarks, so
what they exercise is exactly what runs in production.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ...protocol.plangate.v1 import plangate_pb2, plangate_pb2_grpc
from ..catalog import load_catalog
from ..runtime.housekeeping import Housekeeper
from ..runtime.outbox import OutboxSettings, OutboxWorker
from ..runtime.state import LiveState
from ..runtime.timekeeper import Timekeeper
from ..settings import Settings
from ..store import describe_db, open_store
from ..store.base import DeliveryStatus, Firing
from ..store.errors import StoreUnavailable
from ..sync.catalog_watch import CatalogWatcher
from .admin import AdminService
from .auth import TokenAuth, read_token
from .evaluation import EvaluationService
from .flagd import add_flagd_services
from .management import ManagementServer
from .metrics import Metrics
from .ofrep import OfrepServer
from .usage import UsageService

if TYPE_CHECKING:
    from ..sync.pg_feed import ChangeFeed

log = logging.getLogger("plangate.sidecar")

SERVICES = ("plangate.v1.Evaluation", "plangate.v1.Usage", "plangate.v1.Admin")


class Sidecar:
    """A whole sidecar. `start()` binds every port (0 = a free one, read back from the attributes)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # a bad catalog stops start-up here, with its message
        catalog = load_catalog(settings.catalog, settings.max_catalog_bytes)
        self.store = open_store(settings.db, settings.environment)
        self.state = LiveState(catalog, self.store)
        self.timekeeper = Timekeeper(self.state)  # design §8 "Time": Watch events at boundaries
        self.feed: ChangeFeed | None = None
        if settings.db.startswith(("postgresql://", "postgres://")):  # shared mode, design §10
            from ..sync.pg_feed import attach_feed  # psycopg is needed only in shared mode

            self.feed = attach_feed(self.store, self.state, settings.reconcile_seconds)
        self.metrics = Metrics()
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
        self.housekeeper = Housekeeper(
            self.state,
            settings.history_days,
            settings.housekeeping_seconds,
            self.metrics.housekeeping_pruned,
        )
        self.health = health.HealthServicer()
        self.port = 0
        self.management_port = 0
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
        self.grpc_server = self._grpc_server()
        self.management = ManagementServer(
            settings.host, settings.management_port, self.metrics, self.readiness
        )
        self.management_port = self.management.port
        self.ofrep = OfrepServer(settings.host, settings.ofrep_port, self.state, self.metrics)
        self.ofrep_port = self.ofrep.port

    # -- assembly ----------------------------------------------------------------------------

    def _grpc_server(self) -> grpc.Server:
        s = self.settings
        interceptors: list[Any] = []
        if s.token_file:
            interceptors.append(TokenAuth(read_token(s.token_file)))
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=s.workers, thread_name_prefix="grpc"),
            interceptors=interceptors,
            options=[("grpc.so_reuseport", 0)],
        )
        plangate_pb2_grpc.add_EvaluationServicer_to_server(
            EvaluationService(self.state, self.metrics, s.heartbeat_seconds), server
        )
        plangate_pb2_grpc.add_UsageServicer_to_server(
            UsageService(self.state, self.metrics), server
        )
        plangate_pb2_grpc.add_AdminServicer_to_server(
            AdminService(self.state, self.metrics, wake_outbox=self.outbox.wake), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        flagd_names = add_flagd_services(server, self.state, self.metrics, s.heartbeat_seconds)
        names = [
            plangate_pb2.DESCRIPTOR.services_by_name[n.split(".")[-1]].full_name for n in SERVICES
        ]
        reflection.enable_server_reflection(
            [*names, *flagd_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        address = f"{s.host}:{s.port}"
        creds = None
        if s.tls_cert and s.tls_key:
            creds = grpc.ssl_server_credentials(
                [(Path(s.tls_key).read_bytes(), Path(s.tls_cert).read_bytes())],
                root_certificates=Path(s.tls_client_ca).read_bytes() if s.tls_client_ca else None,
                require_client_auth=bool(s.tls_client_ca),
            )
        try:  # grpcio reports a busy port as RuntimeError (newer) or port 0 (older)
            if creds is not None:
                self.port = server.add_secure_port(address, creds)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen on {address} (port in use?); choose another with --port")
        if s.socket:
            server.add_insecure_port(f"unix:{s.socket}")
        return server

    # -- catalog sync ------------------------------------------------------------------------

    def _apply_catalog(self, catalog: Any) -> None:
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
        detail: dict[str, Any] = {
            "catalog_version": self.state.catalog.version,
            "catalog": "ok"
            if self.state.catalog_error is None
            else "last change rejected; serving the previous version",
            "environment": self.settings.environment,
            "accounts": len(self.state.snapshot.accounts),
        }
        if self.state.catalog_error is not None:
            detail["catalog_error"] = self.state.catalog_error
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
        self.grpc_server.start()
        self.management.start()
        self.ofrep.start()
        self.watcher.start()
        if self.feed is not None:
            self.feed.start()
        self.outbox.start()
        self.housekeeper.start()
        self.timekeeper.start()
        for name in ("", *SERVICES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
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

    def stop(self, grace: float = 5.0) -> None:
        """Graceful: refuse new calls, let running ones finish (up to `grace` s), then close the store."""
        self.health.enter_graceful_shutdown()
        self.state.events.close()
        self.timekeeper.stop()
        self.watcher.stop()
        self.grpc_server.stop(grace).wait()
        self.outbox.stop()
        self.housekeeper.stop()
        self.management.stop()
        self.ofrep.stop()
        if self.feed is not None:
            self.feed.stop()
        self.store.close()
        log.info("stopped")
