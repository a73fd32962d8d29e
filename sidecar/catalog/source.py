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

import gc
import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml

Path = tuple[str | int, ...]

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
"""`--max-catalog-bytes`: larger files are refused before they are read."""
MAX_DEPTH = 100
"""Deepest nesting of mappings and lists; a catalog needs about 8."""
MAX_NODES = 1_000_000
"""Values (mappings, lists and scalars) written in the file: each costs about a kilobyte
while it is read (marks, the line map), so this bounds a load's memory and time."""
MAX_ALIAS_NODES = 100_000
"""Nodes that aliases (`*name`, `<<: *name`) may add beyond those written in the file."""
MAX_VALUE_BYTES = 64 * 1024
"""An entitlement value (an override's, a grant's, a variant's), as text or as JSON."""
MAX_VALUE_ALIAS_NODES = 1_000
"""Nodes that aliases may add to one value written in a console form."""


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a catalog is read or a snapshot built:
    a million new objects (none in a reference cycle; they are freed by their reference
    counts) would otherwise set off full collections that walk everything built so far, in
    one call that holds the GIL: a catalog load stalled evaluations for a second and more,
    and a sixth of a start-up's time at 1M accounts went to them."""
    global _pausing, _was_enabled
    with _pause_lock:  # a reload and a snapshot build may overlap: the last one out restores
        if _pausing == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pausing += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pausing -= 1
            if _pausing == 0 and _was_enabled:
                gc.enable()


_pause_lock = threading.Lock()
_pausing = 0  # loads and builds inside `collector_paused` now
_was_enabled = True  # whether the collector ran before the first of them


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
    ref_nodes: int = 0  # nodes `$ref`s added to targeting rules so far (`targeting.MAX_REF_NODES`)
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


def check_shape(root: yaml.Node, file: str, max_added: int = MAX_ALIAS_NODES) -> None:
    """Refuse nesting beyond `MAX_DEPTH` and alias expansion beyond `max_added` nodes.

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
        if widest is None and s > max_added:
            widest = node
    added = size[id(root)] - len(size)
    if added > max_added:
        raise _refused(
            file,
            f"aliases expand to {added} more nodes than the file holds; "
            f"at most {max_added} are allowed",
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
    """Nesting beyond `MAX_DEPTH` or more than `MAX_NODES` nodes, found while composing
    (before Python's recursion limit, or memory, runs out)."""


class Stopped(Exception):
    """The load was abandoned because the sidecar is stopping (`parse`'s `stop` was set)."""


class _Bounded:
    """Composing that stops at `MAX_DEPTH` (it recurses once per level, and a file nested
    2,000 deep would otherwise end in RecursionError, which no caller expects), at
    `MAX_NODES` nodes, and as soon as `stop` is set (a stopping sidecar does not wait for a
    large catalog to be read)."""

    _depth = 0
    _nodes = 0
    stop: threading.Event | None = None

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH or self._nodes > MAX_NODES:
                mark = self.peek_event().start_mark  # type: ignore[attr-defined]
                what = (
                    f"nested deeper than {MAX_DEPTH} levels"
                    if self._depth > MAX_DEPTH
                    else f"more than {MAX_NODES} values (mappings, lists and scalars)"
                )
                raise _TooDeep(None, None, what, mark)
            if self.stop is not None and self._nodes % 1024 == 0 and self.stop.is_set():
                raise Stopped
            return super().compose_node(parent, index)  # type: ignore[misc, no-any-return]
        finally:
            self._depth -= 1


class _Loader(_Bounded, yaml.SafeLoader):
    """SafeLoader whose impossible dates (2026-02-30) stay strings, so the catalog reader
    reports them with their line and path instead of the loader raising ValueError; it also
    constructs values, and stops doing so as soon as `stop` is set."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if self.stop is not None and self.stop.is_set():
            raise Stopped
        return super().construct_object(node, deep)


def _timestamp(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)

_CParser: Any = getattr(getattr(yaml, "_yaml", None), "CParser", None)


class _EventComposer(_Bounded, yaml.composer.Composer, yaml.resolver.Resolver):
    """libyaml scans and parses (~5x faster than pure Python), one event per call, and the
    node tree is composed here in Python. libyaml's own composer builds the whole tree in a
    single call that holds the GIL: a 20 MB catalog stalled every evaluation for seconds
    while it was read. Python code gives the GIL up every few milliseconds."""

    def __init__(self, text: str) -> None:
        parser = _CParser(text)
        self.check_event = parser.check_event
        self.peek_event = parser.peek_event
        self.get_event = parser.get_event
        self.dispose = parser.dispose
        yaml.composer.Composer.__init__(self)
        yaml.resolver.Resolver.__init__(self)


def _compose(text: str, loader: type[Any], stop: threading.Event | None) -> yaml.Node | None:
    composer = loader(text)
    composer.stop = stop
    try:
        return composer.get_single_node()  # type: ignore[no-any-return]
    finally:
        composer.dispose()


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


def parse(text: str, file: str, stop: threading.Event | None = None) -> Document:
    """Parse YAML/JSON text; syntax errors and duplicate keys become problems. Raises
    `Stopped` once `stop` is set."""
    data = _json(text)
    is_json = data is not _NOT_JSON
    # Outside strings a JSON tab is whitespace (inside one it is invalid JSON), so
    # replacing tabs keeps every line number and lets YAML compose the node tree.
    source = text.replace("\t", " ") if is_json else text
    try:
        try:
            node = _compose(source, _EventComposer if _CParser else _Loader, stop)
        except _TooDeep:
            raise  # a bound passed: the same message either way, and no second pass
        except yaml.YAMLError:
            # Re-read the broken text in pure Python: the message then does not depend
            # on whether libyaml is installed.
            node = _compose(source, _Loader, stop)
    except yaml.YAMLError as exc:
        if is_json and not isinstance(exc, _TooDeep):
            # valid JSON that YAML cannot read: load it, without line numbers
            _check_data_depth(data, file)
            return Document(file, data)
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        reason = getattr(exc, "problem", None) or str(exc)
        raise CatalogError(
            [Problem(file, line, "(document)", f"not valid YAML/JSON: {_readable(reason)}")]
        ) from exc
    doc = Document(file, None)
    if node is None:
        doc.data = {}
        return doc
    _go_on(stop)
    check_shape(node, file)
    _go_on(stop)
    if is_json:
        doc.data = data
    else:
        loader = _Loader("")
        loader.stop = stop
        try:
            doc.data = loader.construct_document(node)
        except yaml.YAMLError as exc:  # the reason only: str(exc) quotes the file's line
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            reason = getattr(exc, "problem", None) or type(exc).__name__
            raise CatalogError([Problem(file, line, "(document)", reason)]) from exc
    _go_on(stop)
    for path, line in _walk(node, ()):
        doc.lines.setdefault(path, line)
    _find_duplicate_keys(node, (), doc)
    _go_on(stop)
    return doc


# PyYAML's words for the mistakes people make most, said as what to change; its own words
# follow in brackets for searching.
_SYNTAX_HINTS = (
    (
        "expected <block end>",
        "this line's indentation does not match the lines above it: keys of one mapping "
        "start in the same column, and a list item's keys line up under its first key",
    ),
    (
        "mapping values are not allowed here",
        "a `key: value` where none can start: is this line indented too far, or does a "
        "value contain `: ` (then quote it)?",
    ),
    ("cannot start any token", "tabs cannot indent YAML: use spaces"),
    (
        "could not find expected ':'",
        "a line that is neither `key: value` nor a list item `- ...` (a missing colon?)",
    ),
)


def _readable(problem: str) -> str:
    """A YAML syntax problem as a person can act on it, with PyYAML's own text kept."""
    for words, hint in _SYNTAX_HINTS:
        if words in problem:
            return f"{hint} [{problem}]"
    return problem


def _go_on(stop: threading.Event | None) -> None:
    """Between the steps of a load: raise `Stopped` if the sidecar is stopping."""
    if stop is not None and stop.is_set():
        raise Stopped


def parse_value(text: str) -> Any:
    """One value written in catalog notation (`25`, `unlimited`, `[slack]`, `{limit: 10}`),
    as the console's forms send it: at most `MAX_VALUE_BYTES` of text, read by the catalog's
    own loader with its bounds, aliases adding at most `MAX_VALUE_ALIAS_NODES` nodes (a
    300-byte alias bomb would otherwise build a value of tens of megabytes). Raises
    ValueError saying what is wrong."""
    size = len(text.encode("utf-8"))
    if size > MAX_VALUE_BYTES:
        raise ValueError(f"{size} bytes is more than a value may have ({MAX_VALUE_BYTES})")
    try:
        node = yaml.compose(text, Loader=_Loader)
        if node is None:
            return None
        check_shape(node, "value", MAX_VALUE_ALIAS_NODES)
        return _Loader("").construct_document(node)
    except CatalogError as exc:
        raise ValueError(exc.problems[0].message) from exc
    except yaml.YAMLError as exc:  # the reason and line, not the text echoed back
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"{getattr(exc, 'problem', None) or 'not YAML'}{where}") from exc


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
