"""Reading a catalog file into plain data plus a map from document path to line.

Validation errors must name the line of the offending value, so the YAML node tree is
walked once beside the constructed data; JSON is parsed by the same YAML loader (JSON
is a subset of YAML for every catalog we accept), so both formats get line numbers.

Nothing in a file may stop catalog sync or exhaust memory (the watcher reads whatever the
directory holds), so reading is bounded before any parsing: only regular files, at most
`max_bytes`, opened without blocking (a FIFO would otherwise wait for a writer forever);
and the node tree is bounded before it is walked: at most `MAX_DEPTH` levels of nesting
and at most `MAX_ALIAS_NODES` nodes added by aliases (a 200-byte "billion laughs" file
expands to ~10^9 nodes). Each limit is a `CatalogError` naming the file, like any other.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml

Path = tuple[str | int, ...]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""`--max-catalog-bytes`: larger files are refused before they are read."""
MAX_DEPTH = 100
"""Deepest nesting of mappings and lists; a catalog needs about 8."""
MAX_ALIAS_NODES = 100_000
"""Nodes that aliases (`*name`, `<<: *name`) may add beyond those written in the file."""


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
    warnings: list[Problem] = field(default_factory=list)  # served anyway (decision 2000)

    def line(self, path: Path) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: Path, message: str) -> None:
        self.problems.append(Problem(self.file, self.line(path), format_path(path), message))

    def warn(self, path: Path, message: str) -> None:
        """Something the catalog is served with but its author should know (decision 2000)."""
        problem = Problem(self.file, self.line(path), format_path(path), message)
        if problem not in self.warnings:  # an evaluator shared by many features: once
            self.warnings.append(problem)


def _refused(file: str, message: str, line: int = 1) -> CatalogError:
    return CatalogError([Problem(file, line, "(document)", message)])


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
}


def read_text(file: str | FsPath, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """The text of a catalog file, newlines normalised as Python's text mode does (a CRLF
    file is the same version as its LF twin).

    Symlinks are followed (a ConfigMap's catalog is one), but what they end at must be a
    regular file: `/dev/zero` would read forever and a FIFO would block. The open never
    blocks (`O_NONBLOCK`), and at most `max_bytes + 1` bytes are read, so a file that
    grows while it is read cannot take more memory than the limit either.
    """
    name = str(file)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(file, flags)
    except OSError as exc:
        raise _refused(name, f"cannot read file: {exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
            raise _refused(name, f"cannot read file: it is {kind}, not a regular file")
        data = b""
        if info.st_size <= max_bytes:
            chunks: list[bytes] = []
            left = max_bytes + 1
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
                chunks.append(chunk)
                left -= len(chunk)
            data = b"".join(chunks)
    except OSError as exc:
        raise _refused(name, f"cannot read file: {exc}") from exc
    finally:
        os.close(fd)
    if info.st_size > max_bytes or len(data) > max_bytes:
        size = max(info.st_size, len(data))
        raise _refused(
            name,
            f"file is larger than the catalog limit of {max_bytes} bytes ({size} bytes or more); "
            "raise --max-catalog-bytes if it is meant to be this big",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _refused(name, f"not UTF-8 text (byte {exc.start}: {exc.reason})", line) from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def version_of(text: str) -> str:
    """A catalog's version: the hash of its (newline-normalised) text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _collections(node: yaml.Node) -> list[yaml.Node]:
    """The mapping and list nodes directly inside `node` (keys and values alike)."""
    if isinstance(node, yaml.MappingNode):
        items = [n for pair in node.value for n in pair]
    else:
        items = node.value
    return [n for n in items if not isinstance(n, yaml.ScalarNode)]


def check_shape(root: yaml.Node, file: str) -> None:
    """Refuse nesting beyond `MAX_DEPTH` and alias expansion beyond `MAX_ALIAS_NODES`.

    Every later step (constructing values, the line map, the duplicate-key check, validation)
    walks the tree with aliases expanded and recursion per level, so the bounds are checked
    first, in one iterative pass over the distinct mappings and lists: each one's height and
    expanded size (in mappings and lists) come from its children's. Scalars are left out: an
    alias of a scalar adds one node per `*name` written, so it cannot multiply. An alias of
    an enclosing node (`&a [*a]`) is refused too.
    """
    if isinstance(root, yaml.ScalarNode):
        return
    height: dict[int, int] = {}
    size: dict[int, int] = {}
    inside: dict[int, list[yaml.Node]] = {}  # open nodes (on the current path) -> children
    widest: yaml.Node | None = None  # innermost node whose expansion alone passes the bound
    stack = [root]
    while stack:
        node = stack[-1]
        key = id(node)
        if key in height:
            stack.pop()
            continue
        kids = inside.get(key)
        if kids is None:
            kids = inside[key] = _collections(node)
            for child in kids:
                if id(child) in inside:
                    raise _refused(
                        file,
                        "an alias refers to a node that contains it (a recursive structure)",
                        child.start_mark.line + 1,
                    )
                if id(child) not in height:
                    stack.append(child)
            continue
        stack.pop()
        del inside[key]
        height[key] = h = 1 + max((height[id(c)] for c in kids), default=0)
        size[key] = s = 1 + sum(size[id(c)] for c in kids)
        if h >= MAX_DEPTH:  # its scalars are one level deeper
            raise _refused(file, f"nested deeper than {MAX_DEPTH} levels", node.start_mark.line + 1)
        if widest is None and s > MAX_ALIAS_NODES:
            widest = node
    added = size[id(root)] - len(size)
    if added > MAX_ALIAS_NODES:
        raise _refused(
            file,
            f"aliases expand to {added} more nodes than the file holds; "
            f"at most {MAX_ALIAS_NODES} are allowed",
            (widest or root).start_mark.line + 1,
        )


def _check_data_depth(data: Any, file: str) -> None:
    """`MAX_DEPTH` for JSON read without the YAML node tree (there are no aliases in JSON)."""
    level: list[tuple[Any, int]] = [(data, 1)]
    while level:
        value, depth = level.pop()
        if depth > MAX_DEPTH:
            raise _refused(file, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            level.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            level.extend((v, depth + 1) for v in value)


class _TooDeep(yaml.composer.ComposerError):
    """Nesting beyond `MAX_DEPTH`, found while composing (before Python's recursion limit)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader whose impossible dates (2026-02-30) stay strings, so the catalog reader
    reports them with their line and path instead of the loader raising ValueError; and
    whose composer stops at `MAX_DEPTH` (it recurses once per level, and a file nested
    2,000 deep would otherwise end in RecursionError, which no caller expects)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # untyped in the stubs
                raise _TooDeep(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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
    except (ValueError, RecursionError):  # too deep for json: YAML reports it with its line
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
        if is_json and not isinstance(exc, _TooDeep):
            # valid JSON that YAML cannot read: load it, without line numbers
            _check_data_depth(data, file)
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
    check_shape(node, file)
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
