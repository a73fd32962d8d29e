"""`on_unavailable` (design §21): what a running application's evaluations answer while its
sidecar is gone, and that it is back to the sidecar's own answers (and READY) once it returns."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import struct_pb2
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from plangate.provider import PlanGateProvider
from support.provider import EventLog, provider
from support.sidecar import Stubs, SubprocessSidecar, wait_for

pytestmark = pytest.mark.slow

CATALOG = """\
products:
  - name: App
    features:
      - name: SSO
        type: boolean
        default: false
      - name: Seats
        type: integer
        default: 1
      - name: Support tier
        type: string
        values: [community, priority]
        default: community
      - name: Editor
        type: string
        values: [classic, new]
        default: classic
        variants: {classic: classic, new: new}
        targeting: {if: [{"==": [{var: cohort}, beta]}, new, null]}
      - name: Regional
        type: boolean
        variants: {"on": true, "off": false}
        targeting: {if: [{"in": [pro, {var: plans}]}, "on", "off"]}
      - name: API calls
        type: metered
        reset: monthly
    plans:
      - name: Pro
        entitlements: {sso: true, seats: 5, support-tier: priority, api-calls: 1000}
accounts:
  - id: acct_pro
    subscriptions: [{plan: pro}]
"""
READY = ProviderEvent.PROVIDER_READY
STALE = ProviderEvent.PROVIDER_STALE
CTX = EvaluationContext("acct_pro")
BETA = EvaluationContext("acct_pro", {"cohort": "beta"})


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[SubprocessSidecar]:
    catalog = tmp_path / "catalog" / "catalog.yaml"
    catalog.parent.mkdir()
    catalog.write_text(CATALOG, encoding="utf-8")
    running = SubprocessSidecar(catalog, tmp_path / "state.db").start()
    try:
        yield running
    finally:
        running.kill()


def _seats_grant_until(stubs: Stubs, at: datetime) -> None:
    request = pb.CreateGrantRequest(
        account_id="acct_pro", feature="seats", value=struct_pb2.Value(number_value=9)
    )
    request.ends_at.FromDatetime(at)
    stubs.admin.CreateGrant(request, timeout=5)


def test_last_known_answers_stale_while_the_sidecar_is_gone_and_the_sidecar_again_after(
    sidecar: SubprocessSidecar,
) -> None:
    modes = {"sso": "last_known", "seats": "last_known", "editor": "last_known"}
    modes |= {"regional": "last_known", "api-calls": "last_known", "*": "default"}
    with (
        Stubs(sidecar.target) as stubs,
        EventLog() as log,
        provider(sidecar.target, on_unavailable=modes, deadline_ms=300, grace_period_ms=500),
    ):
        log.wait(READY)
        expires = datetime.now(UTC) + timedelta(seconds=4)
        _seats_grant_until(stubs, expires)
        client = api.get_client()
        wait_for(lambda: client.get_integer_value("seats", 0, CTX) == 9, timeout=10)
        assert client.get_boolean_value("sso", False, CTX) is True
        assert client.get_string_value("support-tier", "?", CTX) == "priority"
        assert client.get_string_value("editor", "?", BETA) == "new"  # reads the context
        assert client.get_boolean_value("regional", False, CTX) is True  # reads plans only
        assert client.get_boolean_value("api-calls", False, CTX) is True

        mark = log.mark()
        sidecar.kill()
        log.wait(STALE, mark, timeout=5)

        sso = client.get_boolean_details("sso", False, CTX)
        assert (sso.value, sso.reason, sso.error_code) == (True, Reason.STALE, None)
        sso = asyncio.run(client.get_boolean_details_async("sso", False, CTX))
        assert (sso.value, sso.reason) == (True, Reason.STALE)
        regional = client.get_boolean_details("regional", False, CTX)
        assert (regional.value, regional.reason) == (True, Reason.STALE)
        api_calls = client.get_boolean_details("api-calls", False, CTX)
        assert (api_calls.value, api_calls.reason) == (True, Reason.STALE)
        seats = client.get_integer_details("seats", 0, CTX)
        assert (seats.value, seats.reason) == (9, Reason.STALE)
        tier = client.get_string_details("support-tier", "offline", CTX)  # "*": default
        assert (tier.value, tier.error_code) == ("offline", ErrorCode.PROVIDER_NOT_READY)
        editor = client.get_string_details("editor", "offline", BETA)  # context-dependent
        assert (editor.value, editor.error_code) == ("offline", ErrorCode.PROVIDER_NOT_READY)
        unknown = client.get_boolean_details("sso", False, EvaluationContext("acct_never_seen"))
        assert (unknown.value, unknown.error_code) == (False, ErrorCode.PROVIDER_NOT_READY)

        # The grant's own end: from then on the last-known 9 could be wrong.
        wait_for(lambda: datetime.now(UTC) > expires + timedelta(seconds=0.2), timeout=10)
        seats = client.get_integer_details("seats", 0, CTX)
        assert (seats.value, seats.error_code) == (0, ErrorCode.PROVIDER_NOT_READY)
        assert client.get_boolean_details("sso", False, CTX).reason == Reason.STALE

        sidecar.start()  # same ports
        log.wait(READY, mark, timeout=15)
        back = client.get_boolean_details("sso", False, CTX)
        assert (back.value, back.error_code) == (True, None)
        assert back.reason != Reason.STALE
        assert client.get_integer_value("seats", 0, CTX) == 5  # the sidecar's answer again


def test_default_mode_and_the_environment(sidecar: SubprocessSidecar) -> None:
    env = {"PLANGATE_ON_UNAVAILABLE": "last_known"}
    assert PlanGateProvider(env=env).config.on_unavailable == "last_known"
    with pytest.raises(ValueError, match="on_unavailable"):
        PlanGateProvider(env={"PLANGATE_ON_UNAVAILABLE": "cached"})
    with EventLog() as log, provider(sidecar.target, deadline_ms=300):
        log.wait(READY)
        client = api.get_client()
        assert client.get_boolean_value("sso", False, CTX) is True
        mark = log.mark()
        sidecar.kill()
        log.wait(STALE, mark, timeout=5)
        sso = client.get_boolean_details("sso", False, CTX)  # "default" unless configured
        assert (sso.value, sso.error_code) == (False, ErrorCode.PROVIDER_NOT_READY)
