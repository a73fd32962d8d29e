"""No import circles among `plangate.*` modules (issue 12; "no import circles" in the standards).

The graph is read from the source with `ast`, so it sees every module whether or not a test
imports it. Only imports that run when a module is loaded count: top-level ones, including
inside `try`/`if` blocks, but not `if TYPE_CHECKING:` (annotations only) nor imports inside
functions (deferred on purpose, e.g. psycopg only in shared mode).
"""

from __future__ import annotations

import ast
from pathlib import Path

from support.sidecar import ROOT

PACKAGES = {  # folder -> package (the provider's distribution lives in clients/python, design §21)
    "sidecar": "plangate.sidecar",
    "clients/python/plangate/provider": "plangate.provider",
    "clients/python/plangate/protocol": "plangate.protocol",
}


def modules() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package's __init__)."""
    out: dict[str, tuple[Path, bool]] = {}
    for folder, package in PACKAGES.items():
        for file in (ROOT / folder).rglob("*.py"):
            parts = list(file.relative_to(ROOT / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            out[".".join([package, *parts])] = (file, is_package)
    return out


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, file: Path, is_package: bool, known: set[str]) -> set[str]:
    """The plangate modules `name` imports when it is loaded."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for stmt in statements:
            if isinstance(stmt, ast.If):
                if not _type_checking_only(stmt):
                    visit(stmt.body)
                visit(stmt.orelse)
            elif isinstance(stmt, ast.Try):
                for block in (stmt.body, stmt.orelse, stmt.finalbody):
                    visit(block)
                for handler in stmt.handlers:
                    visit(handler.body)
            elif isinstance(stmt, ast.Import):
                found.update(alias.name for alias in stmt.names if alias.name in known)
            elif isinstance(stmt, ast.ImportFrom):
                if stmt.level:
                    base = package.split(".")[: len(package.split(".")) - (stmt.level - 1)]
                    target = ".".join([*base, *([stmt.module] if stmt.module else [])])
                else:
                    target = stmt.module or ""
                for alias in stmt.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in known:  # `from . import records`
                        found.add(submodule)
                    elif target in known:  # `from ..engine import evaluate`
                        found.add(target)

    visit(ast.parse(file.read_text()).body)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, file, pkg, known) for name, (file, pkg) in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None; iterative depth-first search."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, pending = stack[-1]
            if not pending:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            nxt = pending.pop()
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                stack.append((nxt, sorted(graph[nxt])))
                path.append(nxt)
                on_path.add(nxt)
    return None


def test_the_graph_sees_the_imports() -> None:
    graph = import_graph()
    state = graph["plangate.sidecar.runtime.live.state"]
    assert "plangate.sidecar.runtime.live.declared" in state  # from .declared import ...
    assert "plangate.sidecar.engine" in state  # from ..engine import (...)
    assert "plangate.sidecar.sync.pg_feed" not in graph["plangate.sidecar.server.app"]


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_plangate_has_no_import_circles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


# The sidecar's layers, lowest first (docs/architecture.md): a module may import its own layer
# and the layers below it, never one above — deferred imports inside functions included, since
# they tie the layers together just the same. `cli` sits on top (it starts the server).
LAYERS = ("settings", "catalog", "engine", "store", "runtime", "sync", "server", "cli")
# Inside runtime, the same rule between its groups (runtime/*/): record edits and write
# assembly under the live state, background jobs over it, the facades on top.
RUNTIME_GROUPS = ("edits", "writes", "live", "jobs", "serve")
# What the servers may reach of runtime: the facades, and the change events streams subscribe
# to. Only the assembly (app.py) builds the live state and its jobs; the console also reads the
# live snapshot for its search and overview (read only: its changes go through the facades).
SERVER_REACH = ("plangate.sidecar.runtime.serve", "plangate.sidecar.runtime.live.events")
CONSOLE_READS = ("plangate.sidecar.server.console.routes", "plangate.sidecar.runtime.live.state")
ASSEMBLY = "plangate.sidecar.server.app"


def all_imports(name: str, file: Path, is_package: bool, known: set[str]) -> set[str]:
    """Every plangate module `name` imports anywhere in its body (functions too)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    found.discard(name)
    return {m for m in found if m in known}


def _rank(module: str, order: tuple[str, ...], prefix: str) -> int | None:
    if not module.startswith(prefix):
        return None
    head = module[len(prefix) :].split(".")[0]
    return order.index(head) if head in order else None


def upward_imports() -> list[str]:
    mods = modules()
    known = set(mods)
    wrong: list[str] = []
    for name, (file, pkg) in sorted(mods.items()):
        for target in sorted(all_imports(name, file, pkg, known)):
            for order, prefix in (
                (LAYERS, "plangate.sidecar."),
                (RUNTIME_GROUPS, "plangate.sidecar.runtime."),
            ):
                low, high = _rank(target, order, prefix), _rank(name, order, prefix)
                if low is not None and high is not None and low > high:
                    wrong.append(f"{name} imports {target} (a layer above it)")
    return wrong


def test_no_layer_imports_one_above_it() -> None:
    assert upward_imports() == []


def test_the_servers_reach_the_runtime_only_through_its_facades() -> None:
    mods = modules()
    known = set(mods)
    wrong = [
        f"{name} imports {target}"
        for name, (file, pkg) in sorted(mods.items())
        if name.startswith("plangate.sidecar.server.") and name != ASSEMBLY
        for target in sorted(all_imports(name, file, pkg, known))
        if target.startswith("plangate.sidecar.runtime.")
        and not target.startswith(SERVER_REACH)
        and (name, target) != CONSOLE_READS
    ]
    assert wrong == []


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: an engine module importing the store is reported."""
    (tmp_path / "bad.py").write_text("from ..store.base import Record\n")
    name = "plangate.sidecar.engine.bad"
    known = {name, "plangate.sidecar.store.base"}
    found = all_imports(name, tmp_path / "bad.py", False, known)
    assert found == {"plangate.sidecar.store.base"}
    low = _rank("plangate.sidecar.store.base", LAYERS, "plangate.sidecar.")
    high = _rank(name, LAYERS, "plangate.sidecar.")
    assert low is not None and high is not None and low > high
