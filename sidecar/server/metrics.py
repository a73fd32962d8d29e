"""Prometheus metrics of one sidecar (own registry, so several sidecars can share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
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
        self.rpc_errors = Counter(
            "plangate_rpc_errors", "RPCs refused", ["method", "code"], registry=r
        )
        self.watch_streams = Gauge(
            "plangate_watch_streams", "Open Watch/EventStream streams", registry=r
        )
        self.rpc_seconds = Histogram(
            "plangate_rpc_seconds",
            "RPC handling time",
            ["method"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0),
            registry=r,
        )
