"""Reading a catalog file into plain data plus a map from document path to line.

Validation errors must name the line of the offending value, so the YAML node tree is
walked once beside the constructed data; JSON is parsed by the same YAML loader (JSON
is a subset of YAML for every catalog we accept), so both formats get line numbers.
"""

from __future__ import annotations

import json
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


class _Loader(yaml.SafeLoader):
    """SafeLoader whose impossible dates (2026-02-30) stay strings, so the catalog reader
    reports them with their line and path instead of the loader raising ValueError."""


def _timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)

# Composing (text -> node tree with line marks) is most of the cost of a large catalog; libyaml
# does it ~7x faster than pure Python and yields the same nodes. Constructing values stays in
# `_Loader`, whose timestamp rule the C loader does not know.
_COMPOSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_NOT_JSON = object()


def _json(text: str) -> Any:
    """The JSON value of `text`, or `_NOT_JSON`.

    JSON is read by the json module: YAML 1.1 reads `1e6` as a string and rejects
    tab indentation, both fine in JSON. YAML still supplies the line numbers.
    """
    if not text.lstrip().startswith(("{", "[")):
        return _NOT_JSON
    try:
        return json.loads(text)
    except ValueError:
        return _NOT_JSON


def parse(text: str, file: str) -> Document:
    """Parse YAML/JSON text; syntax errors and duplicate keys become problems."""
    data = _json(text)
    is_json = data is not _NOT_JSON
    # Outside strings a JSON tab is whitespace (inside one it is invalid JSON), so
    # replacing tabs keeps every line number and lets YAML compose the node tree.
    source = text.replace("\t", " ") if is_json else text
    try:
        try:
            node = yaml.compose(source, Loader=_COMPOSER)
        except yaml.YAMLError:
            # Re-read the broken text in pure Python: the message then does not depend
            # on whether libyaml is installed.
            node = yaml.compose(source, Loader=_Loader)
    except yaml.YAMLError as exc:
        if is_json:  # valid JSON that YAML cannot read: load it, without line numbers
            return Document(file, data)
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        reason = getattr(exc, "problem", None) or str(exc)
        raise CatalogError(
            [Problem(file, line, "(document)", f"not valid YAML/JSON: {reason}")]
        ) from exc
    doc = Document(file, None)
    if node is None:
        doc.data = {}
        return doc
    if is_json:
        doc.data = data
    else:
        loader = _Loader("")
        try:
            doc.data = loader.construct_document(node)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            raise CatalogError([Problem(file, line, "(document)", str(exc))]) from exc
    for path, line in _walk(node, ()):
        doc.lines.setdefault(path, line)
    _find_duplicate_keys(node, (), doc)
    return doc


def _walk(node: yaml.Node, path: Path, line: int | None = None) -> Iterator[tuple[Path, int]]:
    """(path, line) of every node; a mapping entry's line is its key's, so an error about
    `plans:` whose block value starts on the next line still points at `plans:`."""
    yield path, node.start_mark.line + 1 if line is None else line
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            yield from _walk(value_node, (*path, str(key_node.value)), key_node.start_mark.line + 1)
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
