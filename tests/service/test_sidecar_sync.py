"""Catalog sync (design §3): changes to the file go live at once; broken ones are rejected.

The sidecars here poll only every 30 s, so everything that happens within a second is the
file watcher's doing, not the safety-net poll.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families
from support.sidecar import EXAMPLE_CATALOG, Stubs, copy_catalog, in_process, wait_for

EXAMPLE = EXAMPLE_CATALOG.read_text()
WATCH_ONLY = {"poll_seconds": 30.0}

# Pro loses SSO and gets 12 concurrent executions instead of 10
PRO_OLD = "          sso: true\n          beta-dashboard: true\n"
PRO_NEW = "          sso: false\n          beta-dashboard: true\n"
CONCURRENCY_OLD = "          execution-concurrency: 10\n"
CONCURRENCY_NEW = "          execution-concurrency: 12\n"
assert EXAMPLE.count(PRO_OLD) == 1 and EXAMPLE.count(CONCURRENCY_OLD) == 1
CHANGED = EXAMPLE.replace(PRO_OLD, PRO_NEW).replace(CONCURRENCY_OLD, CONCURRENCY_NEW)


class Watcher:
    """A `Watch` stream read by a background thread."""

    def __init__(self, stubs: Stubs) -> None:
        self.events: queue.Queue[pb.WatchEvent] = queue.Queue()
        self.stream = stubs.evaluation.Watch(pb.WatchRequest())
        first = next(self.stream)
        assert first.HasField("ready")
        self.ready = first.ready
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for event in self.stream:
                self.events.put(event)
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    def next(self, kind: str, timeout: float = 5.0) -> Any:
        """The next event of `kind` (heartbeats and other kinds skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {kind} event within {timeout}s"
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event.HasField(kind):
                return getattr(event, kind)

    def kinds(self) -> list[str]:
        """The kinds of the events received so far (drains them)."""
        out = []
        while not self.events.empty():
            kind = self.events.get_nowait().WhichOneof("event")
            if kind != "heartbeat":
                out.append(kind)
        return out

    def close(self) -> None:
        self.stream.cancel()


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return copy_catalog(tmp_path / "conf")


@pytest.fixture
def sidecar(catalog: Path, tmp_path: Path) -> Iterator[Any]:
    with in_process(catalog, tmp_path / "state.db", **WATCH_ONLY) as sc:
        yield sc


@pytest.fixture
def stubs(sidecar: Any) -> Iterator[Stubs]:
    with Stubs(f"127.0.0.1:{sidecar.port}") as s:
        s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_pro"), timeout=5)
        s.admin.CreateSubscription(
            pb.CreateSubscriptionRequest(account_id="acct_pro", plan="pro"), timeout=5
        )
        yield s


@pytest.fixture
def watcher(stubs: Stubs) -> Iterator[Watcher]:
    w = Watcher(stubs)
    yield w
    w.close()


def pro_view(stubs: Stubs) -> tuple[bool, int]:
    """(sso, execution-concurrency) for a Pro account."""
    sso = stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id="acct_pro", feature="sso"), timeout=5
    )
    conc = stubs.evaluation.Evaluate(
        pb.EvaluateRequest(account_id="acct_pro", feature="execution-concurrency"), timeout=5
    )
    return sso.as_boolean, conc.as_integer


def time_until(predicate: Callable[[], bool], limit: float = 5.0) -> float:
    started = time.monotonic()
    wait_for(predicate, timeout=limit, interval=0.005)
    return time.monotonic() - started


def readyz(sidecar: Any) -> dict[str, Any]:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{sidecar.management_port}/readyz", timeout=5
    ) as r:
        detail: dict[str, Any] = json.loads(r.read())
    return detail


def metric(sidecar: Any, name: str, **labels: str) -> float:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{sidecar.management_port}/metrics", timeout=5
    ) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


# -- valid changes ---------------------------------------------------------------------------


def test_a_valid_change_is_live_within_a_second(
    catalog: Path, sidecar: Any, stubs: Stubs, watcher: Watcher
) -> None:
    assert watcher.ready.catalog_version == sidecar.state.catalog.version
    assert sorted(watcher.ready.all_features) == sorted(sidecar.state.catalog.features)
    assert pro_view(stubs) == (True, 10)
    catalog.write_text(CHANGED)
    elapsed = time_until(lambda: pro_view(stubs) == (False, 12))
    assert elapsed < 1.0, f"change took {elapsed:.3f}s to go live"
    event = watcher.next("catalog_changed")
    assert list(event.features) == ["execution-concurrency", "sso"]
    assert sorted(event.all_features) == sorted(sidecar.state.catalog.features)
    assert (
        event.catalog_version == sidecar.state.catalog.version == readyz(sidecar)["catalog_version"]
    )
    assert metric(sidecar, "plangate_catalog_reloads_total", result="ok") == 1
    # saving the same content again (touch, or an editor's no-op save) is not a change
    catalog.write_text(CHANGED)
    time.sleep(0.3)
    assert watcher.kinds() == []
    assert metric(sidecar, "plangate_catalog_reloads_total", result="ok") == 1


def test_an_editor_style_replace_is_picked_up(
    catalog: Path, sidecar: Any, stubs: Stubs, watcher: Watcher
) -> None:
    temp = catalog.with_name(".catalog.yaml.swp")
    temp.write_text(CHANGED)
    os.replace(temp, catalog)  # write a temporary file, rename it over the original
    elapsed = time_until(lambda: pro_view(stubs) == (False, 12))
    assert elapsed < 1.0
    assert list(watcher.next("catalog_changed").features) == ["execution-concurrency", "sso"]
    # and the watch survives the replace: a second one is seen too
    temp.write_text(EXAMPLE)
    os.replace(temp, catalog)
    assert time_until(lambda: pro_view(stubs) == (True, 10)) < 1.0


def test_a_configmap_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    """Kubernetes mounts a ConfigMap as ..<timestamp>/ dirs, a ..data symlink to the current
    one, and catalog.yaml -> ..data/catalog.yaml; an update re-points ..data atomically."""
    mount = tmp_path / "mount"
    (mount / "..2026_01").mkdir(parents=True)
    (mount / "..2026_01" / "catalog.yaml").write_text(EXAMPLE)
    os.symlink("..2026_01", mount / "..data")
    os.symlink("..data/catalog.yaml", mount / "catalog.yaml")
    with (
        in_process(mount / "catalog.yaml", tmp_path / "s.db", **WATCH_ONLY) as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as s,
    ):
        s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_pro"), timeout=5)
        s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id="acct_pro", plan="pro"))
        watcher = Watcher(s)
        try:
            assert pro_view(s) == (True, 10)
            (mount / "..2026_02").mkdir()
            (mount / "..2026_02" / "catalog.yaml").write_text(CHANGED)
            os.symlink("..2026_02", mount / "..data_tmp")
            os.replace(mount / "..data_tmp", mount / "..data")
            elapsed = time_until(lambda: pro_view(s) == (False, 12))
            assert elapsed < 1.0
            assert list(watcher.next("catalog_changed").features) == [
                "execution-concurrency",
                "sso",
            ]
            # the kubelet then removes the old directory; nothing breaks
            (mount / "..2026_01" / "catalog.yaml").unlink()
            (mount / "..2026_01").rmdir()
            time.sleep(0.3)
            assert pro_view(s) == (False, 12) and sidecar.state.catalog_error is None
        finally:
            watcher.close()


def test_crlf_line_endings_do_not_cause_reloads(tmp_path: Path) -> None:
    """A file saved with Windows line endings is one version, not a change on every poll."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_bytes(EXAMPLE.replace("\n", "\r\n").encode())
    with (
        in_process(catalog, tmp_path / "s.db", poll_seconds=0.05) as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as s,
    ):
        watcher = Watcher(s)
        try:
            time.sleep(0.5)  # ten safety-net polls
            assert watcher.kinds() == []
            assert metric(sidecar, "plangate_catalog_reloads_total", result="ok") == 0
            assert sidecar.state.catalog_error is None
        finally:
            watcher.close()


# -- rejected changes ------------------------------------------------------------------------


def test_an_invalid_change_keeps_the_last_good_catalog(
    catalog: Path,
    sidecar: Any,
    stubs: Stubs,
    watcher: Watcher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good_version = sidecar.state.catalog.version
    broken = CHANGED.replace("execution-concurrency: 12\n", "execution-concurrency: 1000\n")
    line = 1 + broken.split("execution-concurrency: 1000\n")[0].count("\n")
    with caplog.at_level(logging.ERROR, logger="plangate.sync"):
        catalog.write_text(broken)
        time_until(lambda: sidecar.state.catalog_error is not None, limit=2)
    # the last good snapshot keeps serving
    assert sidecar.state.catalog.version == good_version
    assert pro_view(stubs) == (True, 10)
    # ... and the error is reported: log, /readyz, metrics; with file, line and path
    where = f"{catalog}:{line} products[0].plans[1].entitlements.execution-concurrency"
    assert any(where in r.getMessage() for r in caplog.records), caplog.text
    detail = readyz(sidecar)
    assert detail["ready"] is True and detail["catalog_version"] == good_version
    assert detail["catalog_error"] == f"{where} (details in the sidecar's log)"  # no file text
    assert "previous" in detail["catalog"]
    assert metric(sidecar, "plangate_catalog_last_change_rejected") == 1.0
    assert metric(sidecar, "plangate_catalog_reloads_total", result="error") == 1
    assert watcher.kinds() == []  # nothing changed for clients
    # the next good version is loaded and clears the error
    catalog.write_text(CHANGED)
    assert time_until(lambda: pro_view(stubs) == (False, 12)) < 1.0
    assert list(watcher.next("catalog_changed").features) == ["execution-concurrency", "sso"]
    detail = readyz(sidecar)
    assert detail["catalog"] == "ok" and "catalog_error" not in detail
    assert metric(sidecar, "plangate_catalog_last_change_rejected") == 0.0
    assert metric(sidecar, "plangate_catalog_reloads_total", result="ok") == 1


def test_a_change_that_strands_stored_accounts_is_rejected(
    catalog: Path, sidecar: Any, stubs: Stubs
) -> None:
    # acct_pro (created through the API) is on Pro; a catalog without Pro cannot serve it
    start = EXAMPLE.index("      - name: Pro\n")
    end = EXAMPLE.index("      - name: Enterprise\n")
    without_pro = EXAMPLE[:start] + EXAMPLE[end:].replace("extends: pro", "extends: free")
    without_pro = without_pro.replace("requires: [pro, enterprise]", "requires: [enterprise]")
    without_pro = without_pro.replace("requires: [pro]", "requires: [enterprise]")
    without_pro = without_pro.replace("- plan: pro\n", "- plan: enterprise\n")
    catalog.write_text(without_pro)
    time_until(lambda: sidecar.state.catalog_error is not None, limit=2)
    assert "acct_pro" in sidecar.state.catalog_error  # the log has the whole message ...
    assert readyz(sidecar)["catalog_error"] == "see the sidecar's log"  # /readyz names no account
    assert pro_view(stubs) == (True, 10)


def test_a_vanished_file_is_reported_once_and_its_return_picked_up(tmp_path: Path) -> None:
    catalog = copy_catalog(tmp_path)
    with (
        in_process(catalog, tmp_path / "s.db", poll_seconds=0.05) as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as s,
    ):
        catalog.unlink()
        time_until(lambda: sidecar.state.catalog_error is not None, limit=2)
        time.sleep(0.4)  # several polls while the file is missing: one rejection, not one each
        assert "cannot read" in sidecar.state.catalog_error
        where = f"{catalog}:1 (document)"  # where, not what (design: /readyz is unauthenticated)
        assert readyz(sidecar)["catalog_error"] == f"{where} (details in the sidecar's log)"
        assert metric(sidecar, "plangate_catalog_reloads_total", result="error") == 1
        assert s.evaluation.Evaluate(
            pb.EvaluateRequest(account_id="acct_acme", feature="sso"), timeout=5
        ).as_boolean
        catalog.write_text(CHANGED)
        time_until(lambda: sidecar.state.catalog_error is None, limit=2)
        assert not s.evaluation.Evaluate(
            pb.EvaluateRequest(account_id="user_ann", feature="sso"), timeout=5
        ).as_boolean  # Pro (which acct_acme's member uses) lost SSO


# -- files that must not break sync (decision 0400) ----------------------------------------

DEPTH_2000 = EXAMPLE + "x: " + "[" * 2000 + "]" * 2000 + "\n"
ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
OVERSIZE_LIMIT = len(EXAMPLE.encode()) + 10_000  # room for the other bad files


def _write(catalog: Path, text: str) -> None:
    catalog.unlink()
    catalog.write_text(text)


def _fifo(catalog: Path) -> None:
    catalog.unlink()
    os.mkfifo(catalog)


def _dev_zero(catalog: Path) -> None:
    catalog.unlink()
    os.symlink("/dev/zero", catalog)


BAD_FILES: list[tuple[str, Callable[[Path], object], str]] = [
    ("empty", lambda c: c.write_text(""), "declares no products"),
    ("nested-2000", lambda c: c.write_text(DEPTH_2000), "nested deeper than 100 levels"),
    ("alias-bomb", lambda c: c.write_text(ALIAS_BOMB), "more nodes than the file holds"),
    ("dev-zero", _dev_zero, "character device, not a regular file"),
    ("fifo", _fifo, "FIFO, not a regular file"),
    ("oversize", lambda c: c.write_text(EXAMPLE + "#" * 20_000), "larger than the catalog limit"),
]


@pytest.mark.parametrize(
    ("spoil", "reason"), [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES]
)
def test_a_file_that_cannot_be_a_catalog_is_rejected_and_sync_goes_on(
    tmp_path: Path, spoil: Callable[[Path], None], reason: str
) -> None:
    catalog = copy_catalog(tmp_path / "conf")
    with (
        in_process(
            catalog, tmp_path / "s.db", max_catalog_bytes=OVERSIZE_LIMIT, **WATCH_ONLY
        ) as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as s,
    ):
        s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_pro"), timeout=5)
        s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id="acct_pro", plan="pro"))
        good = sidecar.state.catalog.version
        spoil(catalog)
        wait_for(lambda: reason in (sidecar.state.catalog_error or ""), timeout=5)
        # the last good catalog keeps serving, and /readyz says where (still 200: see 0400;
        # the message itself is in the log: 0101)
        assert sidecar.state.catalog.version == good and pro_view(s) == (True, 10)
        detail = readyz(sidecar)
        assert detail["ready"] is True and detail["catalog_version"] == good
        assert detail["catalog"] == "last change rejected; serving the previous version"
        assert detail["catalog_error"].startswith(f"{catalog}:")
        assert detail["catalog_error"].endswith("(details in the sidecar's log)")
        assert metric(sidecar, "plangate_catalog_last_change_rejected") == 1.0
        # putting the served content back clears the rejection without a reload
        _write(catalog, EXAMPLE)
        wait_for(lambda: readyz(sidecar)["catalog"] == "ok", timeout=5)
        assert "catalog_error" not in readyz(sidecar)
        assert metric(sidecar, "plangate_catalog_last_change_rejected") == 0.0
        assert metric(sidecar, "plangate_catalog_reloads_total", result="ok") == 0
        # and the watcher is alive: a later good change goes live
        catalog.write_text(CHANGED)
        wait_for(lambda: pro_view(s) == (False, 12), timeout=5)
        assert sidecar.state.catalog_error is None


def test_a_file_caught_mid_write_is_never_served(tmp_path: Path) -> None:
    """`cp` truncates, then writes: the empty file, and the file cut before `accounts:`
    (a valid catalog without the declared accounts), must not be served in between. The
    settle time is long here so that a loaded machine pausing the writer cannot pass it."""
    catalog = copy_catalog(tmp_path / "conf")
    with (
        in_process(catalog, tmp_path / "s.db", catalog_settle_seconds=1.0, **WATCH_ONLY) as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as s,
    ):
        s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_pro"), timeout=5)
        s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id="acct_pro", plan="pro"))
        watcher = Watcher(s)
        try:
            cut = CHANGED.index("accounts:")
            with catalog.open("w") as f:  # truncates: the file is empty now
                time.sleep(0.1)
                f.write(CHANGED[:cut])
                f.flush()
                time.sleep(0.1)
                f.write(CHANGED[cut:])
            wait_for(lambda: pro_view(s) == (False, 12), timeout=10)
            event = watcher.next("catalog_changed")
            assert list(event.features) == ["execution-concurrency", "sso"]
            time.sleep(0.3)
            assert watcher.kinds() == []  # one change, straight to the final content
            assert metric(sidecar, "plangate_catalog_reloads_total", result="ok") == 1
            assert metric(sidecar, "plangate_catalog_reloads_total", result="error") == 0
            assert "acct_acme" in sidecar.state.snapshot.accounts
        finally:
            watcher.close()


def test_a_file_cut_before_accounts_keeps_them_and_an_explicit_removal_is_applied(
    catalog: Path, sidecar: Any, stubs: Stubs
) -> None:
    """A settled file cut short before `accounts:` is valid YAML; served, every declared
    account would lose its subscriptions at once. So a reload without the section is refused
    while accounts are declared, and `accounts: []` says the removal is meant (decision 1321;
    main served the cut file)."""
    cut = EXAMPLE[: EXAMPLE.index("accounts:")]
    catalog.write_text(cut)
    wait_for(lambda: sidecar.state.catalog_error is not None, timeout=5)
    assert "no `accounts:` section" in sidecar.state.catalog_error
    assert "write `accounts: []`" in sidecar.state.catalog_error
    assert "acct_acme" in sidecar.state.snapshot.accounts
    assert readyz(sidecar)["catalog_error"].startswith(f"{catalog}:1 accounts")
    # the removal written out is what the operator meant: applied
    catalog.write_text(cut + "accounts: []\n")
    wait_for(lambda: "acct_acme" not in sidecar.state.snapshot.accounts, timeout=5)
    assert sidecar.state.catalog_error is None
    assert pro_view(stubs) == (True, 10)
    # with no account declared, a file without the section is an ordinary catalog
    catalog.write_text(cut.replace("execution-concurrency: 10\n", "execution-concurrency: 12\n"))
    wait_for(lambda: pro_view(stubs) == (True, 12), timeout=5)


def test_a_catalog_path_symlinked_to_a_secret_shows_none_of_it(
    catalog: Path, sidecar: Any, stubs: Stubs, caplog: pytest.LogCaptureFixture
) -> None:
    """Turn 2's D8: the rejection reaches the unauthenticated /readyz, the console and the
    log; a file that is no catalog is named, and nothing of it quoted."""
    secret = catalog.parent / "credentials"
    secret.write_text("aws_secret_access_key: wJalrXUtnFEMI\nsk_live_51HxYz: charge\n")
    with caplog.at_level(logging.ERROR, logger="plangate.sync"):
        catalog.unlink()
        catalog.symlink_to(secret)
        wait_for(lambda: sidecar.state.catalog_error is not None, timeout=5)
    shown = [
        sidecar.state.catalog_error,  # what the console's banner shows
        json.dumps(readyz(sidecar)),
        caplog.text,
    ]
    for text in shown:
        for word in ("aws_secret", "wJalrXUtnFEMI", "sk_live", "charge"):
            assert word not in text, text
    assert "not a PlanGate catalog" in sidecar.state.catalog_error
    assert pro_view(stubs) == (True, 10)


def test_writes_next_to_the_catalog_cause_no_reload_attempt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A log file and the SQLite database beside the catalog change all the time: they cost
    no look at the catalog and no log line."""
    conf = tmp_path / "conf"
    catalog = copy_catalog(conf)
    with (
        in_process(catalog, conf / "state.db", **WATCH_ONLY) as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as s,
    ):
        time.sleep(0.3)  # let start-up settle (the db files were just created)
        checks = sidecar.watcher.checks
        with caplog.at_level(logging.INFO), (conf / "sidecar.log").open("a") as log_file:
            for i in range(500):
                log_file.write(f"line {i}\n")
                log_file.flush()
                if i % 10 == 0:  # and the database (with its -wal and -shm files) too
                    s.admin.UpsertAccount(pb.UpsertAccountRequest(id=f"acct_{i}"), timeout=5)
            time.sleep(0.5)
        assert sidecar.watcher.checks == checks
        noise = [r for r in caplog.records if r.name.startswith(("watchfiles", "plangate.sync"))]
        assert noise == []
        catalog.write_text(CHANGED)  # the counter does count the catalog's own changes
        wait_for(lambda: sidecar.watcher.checks > checks, timeout=5)


@pytest.mark.parametrize("kind", ["fifo", "empty", "nested-2000"])
def test_start_up_refuses_what_a_reload_refuses(tmp_path: Path, kind: str) -> None:
    from plangate.sidecar.catalog import CatalogError
    from plangate.sidecar.server.app import Sidecar
    from plangate.sidecar.settings import Settings

    catalog = tmp_path / "catalog.yaml"
    if kind == "fifo":
        os.mkfifo(catalog)
    else:
        catalog.write_text("" if kind == "empty" else DEPTH_2000)
    with pytest.raises(CatalogError) as info:
        Sidecar(Settings(catalog=str(catalog), db=str(tmp_path / "s.db"), port=0))
    assert str(info.value).startswith(f"{catalog}:")


def test_a_symlink_into_another_directory_is_followed(tmp_path: Path) -> None:
    """catalog.yaml -> ../shared/catalog.yaml: the target's directory is watched too, and
    only the target itself concerns the watcher there."""
    shared = tmp_path / "shared"
    real = copy_catalog(shared)
    conf = tmp_path / "conf"
    conf.mkdir()
    os.symlink(real, conf / "catalog.yaml")
    with (
        in_process(conf / "catalog.yaml", tmp_path / "s.db", **WATCH_ONLY) as sidecar,
        Stubs(f"127.0.0.1:{sidecar.port}") as s,
    ):
        s.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_pro"), timeout=5)
        s.admin.CreateSubscription(pb.CreateSubscriptionRequest(account_id="acct_pro", plan="pro"))
        time.sleep(0.3)
        checks = sidecar.watcher.checks
        for i in range(100):
            (shared / "other.yaml").write_text(f"n: {i}\n")
        time.sleep(0.3)
        assert sidecar.watcher.checks == checks
        real.write_text(CHANGED)
        assert time_until(lambda: pro_view(s) == (False, 12)) < 2.0
