"""Acceptance (design §9): the unmodified `openfeature-provider-flagd` from PyPI, RPC resolver,
evaluates every feature type correctly against a sidecar.

Two process boundaries keep this honest and keep protobuf happy: the sidecar runs as
`plangate serve` (`SubprocessSidecar`), and the provider runs in `flagd_provider_check.py`,
a script of its own. The provider's generated stubs register the same `flagd.evaluation.*`
proto symbols as PlanGate's, and pytest runs every test module in one process, where
`test_flagd_protocol.py` loads PlanGate's; a separate interpreter is the only clean way for
both to be exercised in one test run. The script reports what the provider returned as JSON.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.event_lines import EventLines
from support.sidecar import ROOT, Stubs, SubprocessSidecar, copy_catalog

CHECK = ROOT / "tests" / "support" / "flagd_provider_check.py"

pytestmark = pytest.mark.slow

TM, DEFAULT, DISABLED = "TARGETING_MATCH", "DEFAULT", "DISABLED"


def listed(values: list[str], source: str) -> dict[str, Any]:
    """What a list feature resolves to over flagd: its detail object, the list under "value"."""
    out = {
        "feature": "integrations",
        "type": "list",
        "value": values,
        "has_access": bool(values),
        "source": source,
        "unlimited": False,
    }
    return out if values else {**out, "denial": "no_entitlement"}


# account -> label -> (value, reason, variant); labels as in flagd_provider_check.CALLS
EXPECTED: dict[str, dict[str, tuple[Any, str, str | None]]] = {
    "acct_acme": {  # pro + extra-seats + salesforce, override concurrency 25, api-calls grant 500k
        "sso": (True, TM, "pro"),
        "beta-dashboard": (True, TM, "pro"),
        "execution-concurrency": (25, TM, "override"),
        "execution-concurrency:float": (25.0, TM, "override"),
        "support-tier": ("email", TM, "pro"),
        "integrations": (
            listed(["slack", "github", "salesforce"], "pro+salesforce"),
            TM,
            "pro+salesforce",
        ),
        "theme": ({"accent": "blue", "logo": False}, DEFAULT, "default"),
        "api-calls:boolean": (True, TM, "grant"),
        "api-calls:integer": (500000, TM, "grant"),
        "api-calls:float": (500000.0, TM, "grant"),
        "legacy-reports": (True, DISABLED, None),  # the caller's default (decision 2002)
    },
    "acct_initech": {  # free
        "sso": (False, DEFAULT, "default"),
        "beta-dashboard": (False, DEFAULT, "default"),
        "execution-concurrency": (1, TM, "free"),
        "execution-concurrency:float": (1.0, TM, "free"),
        "support-tier": ("community", DEFAULT, "default"),
        "integrations": (listed([], "default"), DEFAULT, "default"),
        "theme": ({"accent": "blue", "logo": False}, DEFAULT, "default"),
        "api-calls:boolean": (True, TM, "free"),
        "api-calls:integer": (1000, TM, "free"),
        "api-calls:float": (1000.0, TM, "free"),
        "legacy-reports": (True, DISABLED, None),  # the caller's default (decision 2002)
    },
    "acct_globex": {  # enterprise: unlimited concurrency and api-calls -> `infinite` (-1)
        "sso": (True, TM, "enterprise"),
        "beta-dashboard": (True, TM, "enterprise"),
        "execution-concurrency": (-1, TM, "enterprise"),
        "execution-concurrency:float": (-1.0, TM, "enterprise"),
        "support-tier": ("priority", TM, "enterprise"),
        "integrations": (listed(["slack", "github", "jira"], "enterprise"), TM, "enterprise"),
        "theme": ({"accent": "custom", "logo": True}, TM, "enterprise"),
        "api-calls:boolean": (True, TM, "enterprise"),
        "api-calls:integer": (-1, TM, "enterprise"),
        "api-calls:float": (-1.0, TM, "enterprise"),
        "legacy-reports": (True, DISABLED, None),  # the caller's default (decision 2002)
    },
}


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("flagd-provider")
    catalog = copy_catalog(tmp / "catalog")  # its own folder: the watcher sees only the catalog
    with SubprocessSidecar(catalog, tmp / "state.db") as sidecar:
        proc = subprocess.run(
            [sys.executable, str(CHECK), "--port", str(sidecar.port), "--catalog", str(catalog)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        log = "".join(sidecar.log)
    assert proc.returncode == 0, f"{proc.stderr}\n--- sidecar log ---\n{log}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize("domain", ["default-cache", "no-cache"])
@pytest.mark.parametrize("account", sorted(EXPECTED))
def test_every_feature_type_resolves_as_the_native_api(
    observed: dict[str, Any], domain: str, account: str
) -> None:
    got = observed[domain][account]
    for label, (value, reason, variant) in EXPECTED[account].items():
        seen = got[label]
        assert (seen["value"], seen["reason"], seen["variant"]) == (value, reason, variant), label
        assert seen["error_code"] is None, label
        assert type(seen["value"]).__name__ == type(value).__name__, label  # int stays int


@pytest.mark.parametrize("domain", ["default-cache", "no-cache"])
def test_no_result_leaks_across_accounts_through_the_provider_cache(
    observed: dict[str, Any], domain: str
) -> None:
    # Round two repeats every call after the other accounts ran; any difference means a
    # cached answer (reason CACHED) or another account's value came back.
    for account, calls in observed[domain].items():
        assert not [label for label in calls if label.endswith(":round2")], account
        assert all(c["reason"] != "CACHED" for c in calls.values()), account
        assert all(c["reason"] != "STATIC" for c in calls.values()), account
    # and the accounts really differ, so a leak could not go unnoticed
    sso = {a: observed[domain][a]["sso"]["value"] for a in EXPECTED}
    assert sso == {"acct_acme": True, "acct_initech": False, "acct_globex": True}


def test_metered_object_is_the_whole_decision(observed: dict[str, Any]) -> None:
    acme = observed["no-cache"]["acct_acme"]["api-calls:object"]["value"]
    assert acme["limit"] == 500000 and acme["used"] == 0 and acme["remaining"] == 500000
    assert acme["has_access"] is True and acme["unlimited"] is False and acme["source"] == "grant"
    assert acme["period_start"] and acme["period_end"]
    globex = observed["no-cache"]["acct_globex"]["api-calls:object"]["value"]
    assert globex["unlimited"] is True and globex["limit"] is None


def test_errors_arrive_as_openfeature_error_codes(observed: dict[str, Any]) -> None:
    errors = observed["errors"]
    assert errors["unknown"]["error_code"] == "FLAG_NOT_FOUND"
    assert errors["unknown"]["value"] is True  # the caller's default
    assert errors["mismatch"]["error_code"] == "TYPE_MISMATCH"
    assert errors["mismatch"]["value"] == "fallback"
    # The provider turns every INVALID_ARGUMENT into TYPE_MISMATCH (it has no status code for
    # TARGETING_KEY_MISSING); what matters is an error and the caller's default, never a value.
    missing = errors["no-targeting-key"]
    assert missing["reason"] == "ERROR" and missing["error_code"] is not None
    assert missing["value"] is True


def test_catalog_change_reaches_the_provider_as_configuration_changed(
    observed: dict[str, Any],
) -> None:
    assert observed["event_arrived"], observed["flags_changed"]
    assert ["execution-concurrency"] in observed["flags_changed"]
    assert observed["before_change"] == 1
    assert observed["after_change"] == 3


EVENTS = ROOT / "tests" / "support" / "flagd_provider_events.py"


def test_sigterm_is_noticed_at_once_and_events_resume_after_a_restart(
    tmp_path: Path,
) -> None:
    """Issue 11.10: the graceful shutdown ends EventStream with UNAVAILABLE, so the provider
    goes STALE (or ERROR) at once; after a restart on the same port it is READY again and
    hears of usage and catalog changes."""
    catalog = copy_catalog(tmp_path / "catalog")
    sidecar = SubprocessSidecar(catalog, tmp_path / "state.db").start()
    provider = EventLines([sys.executable, str(EVENTS), "127.0.0.1", str(sidecar.port)], ROOT)
    try:
        provider.next("READY", timeout=20)
        assert sidecar.proc is not None
        signalled = time.monotonic()
        sidecar.proc.send_signal(signal.SIGTERM)
        _, noticed = provider.next("STALE", "ERROR")
        # at once: 1 s on a quiet machine; the bound leaves room for a loaded CI box, and is
        # still far below what the provider would take without the stream's end (its
        # keep-alive deadline, or the process's exit after the drain's 5 s grace)
        assert noticed - signalled < 3.0
        assert sidecar.proc.wait(10) == 0

        sidecar.start()  # the same ports again
        provider.next("READY", timeout=15)
        with Stubs(sidecar.target) as s:
            report = pb.UsageReport(account_id="acct_acme", feature="api-calls", amount=1)
            s.usage.Report(pb.ReportRequest(reports=[report]), timeout=5)
        changed, _ = provider.next("CONFIGURATION_CHANGED")
        assert "api-calls" in changed["flags"]
        catalog.write_text(catalog.read_text().replace("infinite: -1", "infinite: -2", 1))
        changed, _ = provider.next("CONFIGURATION_CHANGED")
        assert "execution-concurrency" in changed["flags"]
        assert provider.evaluate("sso", "acct_acme")["value"] is True
    finally:
        provider.close()
        sidecar.kill()
