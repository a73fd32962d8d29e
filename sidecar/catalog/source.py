"""Reading a catalog file into plain data plus a map from document path to line.

Validation errors must name the line of the offending value, so the YAML node tree is
walked once beside the constructed data; JSON is parsed by the same YAML loader (JSON
is a subset of YAML for every catalog we accept), so both formats get line numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    """`("products", 0, "plans", 1)` -> `products[0].plans[1]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.path}: {self.message}"


class CatalogError(Exception):
    """A catalog that cannot be loaded; `problems` holds every error found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class Document:
    """Parsed catalog data with the line of every node, and a sink for problems."""

    file: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line(self, path: Path) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: Path, message: str) -> None:
        self.problems.append(Problem(self.file, self.line(path), format_path(path), message))


def parse(text: str, file: str) -> Document:
    """Parse YAML/JSON text; syntax errors and duplicate keys become problems."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        reason = getattr(exc, "problem", None) or str(exc)
        raise CatalogError([Problem(file, line, "(document)", f"not valid YAML/JSON: {reason}")])
    doc = Document(file, None)
    if node is None:
        doc.data = {}
        return doc
    loader = yaml.SafeLoader("")
    try:
        doc.data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise CatalogError([Problem(file, line, "(document)", str(exc))])
    for path, child in _walk(node, ()):
        doc.lines.setdefault(path, child.start_mark.line + 1)
    _find_duplicate_keys(node, (), doc)
    return doc


def _walk(node: yaml.Node, path: Path) -> Iterator[tuple[Path, yaml.Node]]:
    yield path, node
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            yield from _walk(value_node, (*path, str(key_node.value)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _walk(item, (*path, index))


def _find_duplicate_keys(node: yaml.Node, path: Path, doc: Document) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                doc.problems.append(
                    Problem(
                        doc.file,
                        key_node.start_mark.line + 1,
                        format_path((*path, key)),
                        "duplicate key (each key may appear once)",
                    )
                )
            seen.add(key)
            _find_duplicate_keys(value_node, (*path, key), doc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _find_duplicate_keys(item, (*path, index), doc)
