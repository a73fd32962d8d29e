"""Prometheus metrics of one sidecar (own registry, so several sidecars can share a process in tests)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from ..store.base import DeliveryStatus

M = TypeVar("M", bound=MetricWrapperBase)


class Metrics:
    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.evaluations = Counter(
            "plangate_evaluations", "Feature evaluations answered", ["api", "reason"], registry=r
        )
        self.evaluation_errors = Counter(
            "plangate_evaluation_errors",
            "Evaluations that ended in an OpenFeature error",
            ["api", "code"],
            registry=r,
        )
        self.usage_reports = Counter(
            "plangate_usage_reports", "Usage reports by outcome", ["status"], registry=r
        )
        self.consumes = Counter(
            "plangate_consumes", "Consume calls by outcome", ["granted"], registry=r
        )
        self.holds_reserved = Counter(
            "plangate_holds_reserved",
            "Reserve calls by outcome (design §17)",
            ["granted"],
            registry=r,
        )
        self.holds_ended = Counter(
            "plangate_holds_ended", "Holds settled or released (design §17)", ["how"], registry=r
        )
        self.catalog_reloads = Counter(
            "plangate_catalog_reloads",
            "Catalog changes seen by the watcher",
            ["result"],
            registry=r,
        )
        self.catalog_rejected = Gauge(
            "plangate_catalog_last_change_rejected",
            "1 while the newest catalog change is rejected",
            registry=r,
        )
        self.admin_changes = Counter(
            "plangate_admin_changes", "Admin changes applied", ["method"], registry=r
        )
        self.stripe_events = Counter(
            "plangate_stripe_events",
            "Stripe events by type and outcome",
            ["type", "outcome"],
            registry=r,
        )
        self.rpc_errors = Counter(
            "plangate_rpc_errors", "RPCs refused", ["method", "code"], registry=r
        )
        self.watch_streams = Gauge(
            "plangate_watch_streams", "Open Watch/EventStream streams", registry=r
        )
        self.quota_fired = Counter(
            "plangate_quota_fired",
            "Quota thresholds crossed (each fires once per account, feature and period)",
            ["feature"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "plangate_webhook_deliveries",
            "Webhook delivery attempts by result: delivered, retry (will try again), failed (gave up)",
            ["result"],
            registry=r,
        )
        self.quota_actions = Counter(
            "plangate_quota_actions",
            "override/change_plan quota actions run by the outbox, by result",
            ["kind", "result"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "plangate_outbox_pending", "Outbox rows waiting to be delivered or applied", registry=r
        )
        self.outbox_failed = Gauge(
            "plangate_outbox_failed",
            "Outbox rows that gave up (retry with `plangate deliveries retry`)",
            registry=r,
        )
        self.pruned = Counter(
            "plangate_pruned",
            "Rows removed by housekeeping (design §14), by kind",
            ["kind"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "plangate_rpc_seconds",
            "RPC handling time",
            ["method"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0),
            registry=r,
        )

    def child(self, metric: M, *labels: str) -> M:
        """`metric.labels(*labels)`, looked up once per label set: `labels()` validates and
        locks on every call, a visible cost on a per-evaluation path."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found  # type: ignore[return-value]  # stored under its own metric's id

    def housekeeping_pruned(self, removed: Mapping[str, int]) -> None:
        for kind, count in removed.items():
            self.pruned.labels(kind).inc(count)

    # -- the outbox worker's observer (runtime.outbox.OutboxObserver) ---------------------------

    def outbox_attempted(self, kind: str, result: str) -> None:
        if kind == "webhook":
            self.webhook_deliveries.labels(result).inc()
        else:
            self.quota_actions.labels(kind, result).inc()

    def outbox_backlog(self, counts: Mapping[DeliveryStatus, int]) -> None:
        self.outbox_pending.set(counts.get(DeliveryStatus.PENDING, 0))
        self.outbox_failed.set(counts.get(DeliveryStatus.FAILED, 0))
