"""One settings table (design §15): every `plangate serve` option is declared once, and the
flags, the environment fallback and the docs' table all come from that declaration."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from types import ModuleType

import pytest
from plangate.provider import ProviderConfig
from plangate.provider import config as provider_config
from plangate.sidecar import settings
from plangate.sidecar.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    settings.add_flags(parser)
    return parser.parse_args(argv)


def gen_settings_doc() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_settings_doc", ROOT / "scripts" / "gen_settings_doc.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_table_matches_the_declarations() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_settings_doc.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    doc = (ROOT / "docs" / "operating.md").read_text()
    for d in settings.declarations():
        assert f"| `{d.flag}` | `{d.env}` |" in doc, d.name
    # a stale table is caught: the check compares the whole table, not only its rows' names
    stale = doc.replace(
        "| `--port` | `PLANGATE_PORT` | `8013` |", "| `--port` | `PLANGATE_PORT` | `9999` |"
    )
    assert stale != doc and gen_settings_doc().rendered(stale) == doc


def test_every_field_is_declared_with_a_literal_variable_and_help() -> None:
    source = (ROOT / "sidecar" / "settings.py").read_text()
    declared = list(settings.declarations())
    assert [d.name for d in declared] == [f.name for f in fields(Settings)]
    for d in declared:
        assert d.env == "PLANGATE_" + d.name.upper(), d.name
        assert f'"{d.env}"' in source, f"{d.env} is not written out literally"  # grep finds it
        assert d.help and d.kind in (str, int, float), d.name
    names = {d.name for d in declared}
    assert {"history_days", "housekeeping_seconds", "max_catalog_bytes", "catalog_settle_seconds",
            "management_host", "webhook_max_attempts", "reconcile_seconds"} <= names  # fmt: skip


def test_a_flag_beats_its_variable_which_beats_the_default() -> None:
    env = {
        "PLANGATE_CATALOG": "env.yaml",
        "PLANGATE_PORT": "9000",
        "PLANGATE_WEBHOOK_MAX_ATTEMPTS": "3",
    }
    config = settings.from_args(parse("--port", "7000", "--reconcile-seconds", "0.5"), env)
    assert (config.catalog, config.port, config.webhook_max_attempts) == ("env.yaml", 7000, 3)
    assert config.reconcile_seconds == 0.5 and config.history_days == 400
    assert config.socket is None and config.management_host == "127.0.0.1"
    assert type(config.port) is int and type(config.heartbeat_seconds) is float


def test_bad_or_missing_values_name_the_flag_or_variable() -> None:
    with pytest.raises(ValueError, match="PLANGATE_PORT='eighty' is not a whole number"):
        settings.from_args(parse("--catalog", "c.yaml"), {"PLANGATE_PORT": "eighty"})
    with pytest.raises(ValueError, match="--history-days='x' is not a whole number"):
        settings.from_args(parse("--catalog", "c.yaml", "--history-days", "x"), {})
    with pytest.raises(ValueError, match=r"--catalog is required \(or set PLANGATE_CATALOG\)"):
        settings.from_args(parse(), {})


def test_settings_never_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANGATE_WEBHOOK_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("PLANGATE_RECONCILE_SECONDS", "1")
    config = Settings(catalog="c.yaml")
    assert (config.webhook_max_attempts, config.reconcile_seconds) == (10, 30.0)


def test_the_provider_declares_its_variables_as_literals() -> None:
    source = (ROOT / "clients" / "python" / "plangate" / "provider" / "config.py").read_text()
    field_names = {f.name for f in fields(ProviderConfig)}
    for variable in provider_config.VARIABLES:
        assert variable.field in field_names, variable
        assert f'"{variable.env}"' in source, variable.env
    env = {v.env: "7" for v in provider_config.VARIABLES if v.kind in ("text", "ms", "count")}
    config = ProviderConfig.resolve(env={**env, "PLANGATE_CACHE": "off"})
    assert (config.target, config.deadline, config.cache_size, config.cache) == (
        "7",
        0.007,
        7,
        False,
    )
