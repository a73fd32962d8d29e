"""No catalog file can hang, crash or exhaust the loader (design §3; decision 0400).

Each bad file is a `CatalogError` naming the file (and its line where there is one), the
same at start-up, on reload and in `plangate validate`, since all three use `load_catalog`.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from pathlib import Path

import pytest
from plangate.sidecar.catalog import CatalogError, load_catalog, parse_catalog
from plangate.sidecar.catalog.source import MAX_ALIAS_NODES, MAX_DEPTH, read_text
from support.sidecar import EXAMPLE_CATALOG

MINIMAL = """\
products:
  - name: P
    features:
      - name: SSO
        type: boolean
"""


def problem_of(path: Path, max_bytes: int | None = None) -> str:
    """The single problem `load_catalog` reports for `path`, as printed."""
    with pytest.raises(CatalogError) as info:
        if max_bytes is None:
            load_catalog(path)
        else:
            load_catalog(path, max_bytes)
    (problem,) = info.value.problems
    assert problem.file == str(path)
    return str(problem)


def nested_flow(depth: int) -> str:
    return MINIMAL + "        default: " + "[" * depth + "]" * depth + "\n"


def nested_block(depth: int) -> str:
    lines = [f"{'  ' * (i + 4)}k{i}:" for i in range(depth)]
    return MINIMAL + "        default:\n" + "\n".join(lines) + " x\n"


ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


# -- what is in the document -------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "\n", "# being rewritten\n", "products:\n", "products: []\n", "accounts: []\n"],
    ids=["empty", "newline", "comment", "null-products", "no-products", "only-accounts"],
)
def test_a_catalog_without_products_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    assert "declares no products" in problem_of(path)


def test_a_catalog_without_features_is_refused() -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog("products:\n  - name: P\n    plans: [{name: Free}]\n", "c.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.path) == (1, "products")
    assert "declares no features" in problem.message


def test_a_file_cut_short_of_its_products_is_refused(tmp_path: Path) -> None:
    text = EXAMPLE_CATALOG.read_text()
    path = tmp_path / "catalog.yaml"
    path.write_text(text[: text.index("    features:")])  # cut inside the first product
    assert "declares no features" in problem_of(path)


# -- nesting and aliases -----------------------------------------------------------------


@pytest.mark.parametrize("builder", [nested_flow, nested_block], ids=["flow", "block"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 20, 2000])
def test_deep_nesting_is_refused_with_its_line(tmp_path: Path, builder: object, depth: int) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(builder(depth))  # type: ignore[operator]
    message = problem_of(path)
    assert f"nested deeper than {MAX_DEPTH} levels" in message
    line = int(message.split(":")[1].split()[0])
    assert line >= 6  # inside the feature's default, not the document's first line


def test_deep_json_is_refused(tmp_path: Path) -> None:
    data = json.loads(json.dumps({"products": []}))
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data)[:-1] + ', "x": ' + "[" * 2000 + "]" * 2000 + "}")
    assert f"nested deeper than {MAX_DEPTH} levels" in problem_of(path)


def test_an_alias_bomb_fails_fast_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 400
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.monotonic()
    message = problem_of(path)
    elapsed = time.monotonic() - started
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert f"at most {MAX_ALIAS_NODES} are allowed" in message
    assert elapsed < 5.0 and grown_mib < 100, (elapsed, grown_mib)


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(MINIMAL + "        default: &loop {again: *loop}\n")
    assert "refers to a node that contains it" in problem_of(path)


def test_ordinary_anchors_still_load() -> None:
    text = """\
products:
  - name: P
    features:
      - {name: Seats, type: metered}
      - {name: SSO, type: boolean}
    plans:
      - name: Free
        entitlements: &base {seats: 1, sso: false}
      - name: Pro
        entitlements: *base
      - name: Team
        entitlements: {<<: *base}
"""
    catalog = parse_catalog(text, "c.yaml")
    assert catalog.plans["pro"].entitlements == catalog.plans["team"].entitlements
    assert catalog.plans["pro"].entitlements["sso"] is False


# -- what the path is ----------------------------------------------------------------------


def test_a_symlink_to_dev_zero_is_refused_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    os.symlink("/dev/zero", path)
    assert "it is a character device, not a regular file" in problem_of(path)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    os.mkfifo(path)
    outcome: list[str] = []
    reader = threading.Thread(target=lambda: outcome.append(problem_of(path)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the stuck open so the test process can end
        with open(path, "w"):
            pass
    assert outcome and "it is a FIFO, not a regular file" in outcome[0]


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert "it is a directory" in problem_of(tmp_path)


def test_a_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(MINIMAL + "#" * 1000 + "\n")
    message = problem_of(path, max_bytes=1000)
    assert "larger than the catalog limit of 1000 bytes" in message
    assert "--max-catalog-bytes" in message
    assert load_catalog(path, max_bytes=len(path.read_bytes())).features  # at the limit: fine


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_bytes(MINIMAL.encode() + b"# caf\xe9\n")
    message = problem_of(path)
    assert f"{path}:6 " in message and "not UTF-8" in message


def test_crlf_and_lf_files_are_one_version(tmp_path: Path) -> None:
    lf, crlf = tmp_path / "lf.yaml", tmp_path / "crlf.yaml"
    lf.write_bytes(MINIMAL.encode())
    crlf.write_bytes(MINIMAL.replace("\n", "\r\n").encode())
    assert read_text(crlf) == read_text(lf) == MINIMAL
    assert load_catalog(crlf).version == load_catalog(lf).version


# -- the same limits in `plangate validate` ------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "alias-bomb"])
def test_validate_refuses_what_the_loader_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    from plangate.sidecar.cli.main import main

    path = tmp_path / "catalog.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        os.symlink("/dev/zero", path)
    else:
        path.write_text(ALIAS_BOMB)
    started = time.monotonic()
    assert main(["validate", str(path)]) == 1
    assert time.monotonic() - started < 5.0
    err = capsys.readouterr().err
    assert f"{path}:" in err and "1 problem(s)" in err
