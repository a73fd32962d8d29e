"""OpenTelemetry (decision 2009): the standard `openfeature-hooks-opentelemetry` hook on
`PlanGateProvider` evaluations records the OpenFeature spec's appendix-D evaluation event,
read back from opentelemetry-sdk's in-memory span exporter.

The flag metadata carries `flagSetId` (the product) and `flagSetVersion` (the catalog
version), which appendix D's `feature_flag.set.id` and `feature_flag.version` come from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.contrib.hook.opentelemetry import TracingHook
from openfeature.evaluation_context import EvaluationContext
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.provider import provider

EVENT = "feature_flag.evaluation"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(sidecar: Any, exporter: InMemorySpanExporter) -> Iterator[Any]:
    """A tracer whose spans end in `exporter`, with the hook on the PlanGate provider."""
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    with provider(f"127.0.0.1:{sidecar.port}"):
        api.add_hooks([TracingHook()])  # the three lines docs/provider.md shows
        try:
            yield tracers.get_tracer("test")
        finally:
            api.clear_hooks()


def _events(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    (span,) = exporter.get_finished_spans()
    return [dict(e.attributes or {}) for e in span.events if e.name == EVENT]


def test_an_evaluation_records_the_appendix_d_attributes(
    traced: Any, exporter: InMemorySpanExporter, sidecar: Any
) -> None:
    client = api.get_client()
    with traced.start_as_current_span("request"):
        details = client.get_boolean_details("sso", False, EvaluationContext("acct_acme"))
    (event,) = _events(exporter)
    assert event["feature_flag.key"] == "sso"
    assert event["feature_flag.result.variant"] == "pro"
    assert event["feature_flag.result.reason"] == "targeting_match"
    assert event["feature_flag.context.id"] == "acct_acme"
    assert event["feature_flag.provider.name"] == "PlanGate"
    # the set and its version, as appendix D reads them from the flag metadata
    assert details.flag_metadata["flagSetId"] == "pipewise"
    assert details.flag_metadata["flagSetVersion"] == sidecar.state.catalog.version
    if "feature_flag.set.id" in event:  # the hook writes it from the metadata once it does
        assert event["feature_flag.set.id"] == "pipewise"


def test_the_callers_default_and_errors_are_recorded_too(
    traced: Any, exporter: InMemorySpanExporter
) -> None:
    client = api.get_client()
    acme = EvaluationContext("acct_acme")
    with traced.start_as_current_span("request"):
        client.get_boolean_details("legacy-reports", True, acme)  # disabled: caller's default
        client.get_boolean_details("no-such-feature", True, acme)
    disabled, missing = _events(exporter)
    assert disabled["feature_flag.result.reason"] == "disabled"
    assert disabled["feature_flag.result.value"] == "true"
    assert "feature_flag.result.variant" not in disabled  # no variant: the caller's default
    assert missing["feature_flag.result.reason"] == "error"
    assert missing["error.type"] == "flag_not_found"
