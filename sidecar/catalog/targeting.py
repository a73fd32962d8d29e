"""Reading a feature's `variants` and `targeting`, and the top-level `evaluators` (design §4.1).

The rule is flagd's JSON Logic dialect, evaluated later by `openfeature-flagd-core`. Here it
is checked once, at load, so that what flagd would only find at evaluation time — an unknown
operator, a dangling `$ref`, an evaluator cycle, a weight that cannot be bucketed — is a catalog
error with its line and path. A literal result that names no variant is only a warning
(decision 2000): flagd files carry such literals on branches that are never reached, and
reaching one is flagd's `GENERAL` error at evaluation. Fractional weights follow flagd:
negative or non-numeric literals count 0, and all zero chooses no variant. Every `$ref` is
replaced by its evaluator here, as flagd does on load, so the engine only walks plain JSON Logic.

Resolving copies each evaluator into every place that names it, so a few kilobytes of
evaluators naming each other twice per level would expand to hundreds of megabytes (the
alias bomb of `source.py`, spelled with `$ref`); and every evaluation walks the whole rule.
So the walk is bounded as it goes: one feature's rule at most `MAX_RULE_NODES` nodes once
resolved, the whole catalog's `$ref`s at most `MAX_REF_NODES` added nodes, a `fractional` at
most `MAX_FRACTIONAL_BUCKETS` buckets. Each is a problem with its line, found after at most
that many steps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from openfeature.contrib.tools.flagd.core.targeting.custom_ops import MAX_WEIGHT_SUM
from openfeature.contrib.tools.flagd.core.targeting.targeting import OPERATORS

from .model import Entitlement, Feature, Targeting, thaw
from .source import Document, Path, Problem, format_path

# json_logic's `apply` handles these itself (they decide which arguments to evaluate)
_SPECIAL_FORMS = frozenset(
    {"if", "?:", "and", "or", "filter", "reduce", "map", "all", "some", "none"}
)
KNOWN_OPERATORS = frozenset(OPERATORS) | _SPECIAL_FORMS
_UNTARGETABLE = frozenset({"metered", "credits", "rate"})  # access comes from usage, not a variant
# The data names the sidecar sets over the context (engine/targeting.py `rule_data`).
_SIDECAR_NAMES = frozenset({"targetingKey", "$flagd", "account", "plans", "addons"})

MAX_RULE_NODES = 10_000
"""Nodes (operations, lists, values) of one rule with its `$ref`s resolved: an evaluation
walks all of them, so this bounds what one evaluation costs."""
MAX_REF_NODES = 100_000
"""Nodes that resolving `$ref`s may add to the catalog's rules, all features together."""
MAX_FRACTIONAL_BUCKETS = 1_000
"""Buckets of one `fractional`: flagd scans them on every evaluation (200,000 took 0.8 s)."""


class _TooBig(Exception):
    """A bound of the walk was passed (the problem is recorded): stop walking this rule."""


ReadValue = Callable[[Document, Path, Any, Feature], Entitlement | None]
"""`features.read_entitlement`, passed in: variant values are checked like entitlements."""


@dataclass(frozen=True, slots=True)
class Evaluator:
    path: Path
    rule: Any


def read_evaluators(doc: Document, raw: Any) -> Mapping[str, Evaluator]:
    """The top-level `evaluators` (flagd's `$evaluators`): name -> shared rule."""
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        doc.error(("evaluators",), "must be a mapping of name -> JSON Logic rule")
        return MappingProxyType({})
    out = {str(k): Evaluator(("evaluators", str(k)), v) for k, v in raw.items()}
    found = MappingProxyType(out)
    for name, ev in out.items():  # checked even when no feature uses it
        _Walk(doc, found, None).check(ev.rule, ev.path, (name,))
    return found


def read_targeting(
    doc: Document,
    path: Path,
    data: dict[str, Any],
    feature: Feature,
    evaluators: Mapping[str, Evaluator],
    read_value: ReadValue,
) -> Targeting | None:
    """The feature's `Targeting`, or None when it has none (or it is in error)."""
    if "variants" not in data and "targeting" not in data:
        return None
    if feature.type.value in _UNTARGETABLE:
        key = "targeting" if "targeting" in data else "variants"
        doc.error(
            (*path, key),
            f"{feature.key} is a {feature.type.value} feature: its access comes from usage, "
            "so it cannot have variants or targeting",
        )
        return None
    variants = _variants(doc, (*path, "variants"), data.get("variants"), feature, read_value)
    if variants is None:
        return None
    rule: Any = None
    walk = _Walk(doc, evaluators, set(variants))
    if "targeting" in data and data["targeting"] != {}:  # `{}` is flagd's "no targeting"
        rule = walk.check(data["targeting"], (*path, "targeting"), ())
        if walk.failed:
            return None
    canonical = json.dumps(
        {"variants": {k: thaw(v) for k, v in variants.items()}, "rule": rule},
        sort_keys=True,
        default=repr,  # UNLIMITED
    )
    return Targeting(rule, MappingProxyType(variants), walk.volatile, canonical, walk.reads_context)


def _variants(
    doc: Document, path: Path, raw: Any, feature: Feature, read_value: ReadValue
) -> dict[str, Entitlement] | None:
    if not isinstance(raw, dict) or not raw:
        where = path if raw is not None else (*path[:-1], "targeting")
        doc.error(where, "targeting needs `variants`: a mapping of variant name -> value")
        return None
    out: dict[str, Entitlement] = {}
    ok = True
    for name, value in raw.items():
        if not isinstance(name, str):
            quoted = {True: '"on"', False: '"off"'}.get(name, '"..."')
            hint = f" (YAML reads a bare on/off/yes/no as a boolean: write it in quotes, {quoted})"
            doc.error(_spelled(doc, path, name), f"variant name {name!r} is not a string{hint}")
            ok = False
            continue
        parsed = read_value(doc, (*path, name), value, feature)
        if parsed is None:
            ok = False
        else:
            out[name] = parsed
    return out if ok else None


def _spelled(doc: Document, path: Path, name: Any) -> Path:
    """The path of the variant key YAML read as `name` (a boolean or number), for its line."""
    words = {str(name).lower()} | (
        _BOOL_WORDS.get(name, set()) if isinstance(name, bool) else set()
    )
    for known in doc.lines:
        if len(known) == len(path) + 1 and known[:-1] == path and str(known[-1]).lower() in words:
            return known
    return path


_BOOL_WORDS = {True: {"on", "yes", "y", "true"}, False: {"off", "no", "n", "false"}}


class _Walk:
    """One pass over a rule: checks it, resolves `$ref`s and notes whether it reads the clock.

    `variants` None checks an evaluator on its own (no variant names to compare with)."""

    def __init__(
        self, doc: Document, evaluators: Mapping[str, Evaluator], variants: set[str] | None
    ) -> None:
        self.doc = doc
        self.evaluators = evaluators
        self.variants = variants
        self.volatile = False
        self.reads_context = False
        self.failed = False
        self.nodes = 0  # of this rule, `$ref`s resolved (`MAX_RULE_NODES`)
        self.top: Path = ()  # where the rule being checked is written

    def check(self, node: Any, path: Path, stack: tuple[str, ...]) -> Any:
        """The whole rule at `path` (a feature's targeting when `stack` is empty, else the
        evaluator it names) with refs resolved; None once a bound stopped the walk."""
        self.top = path
        try:
            return self.rule(node, path, not stack, stack)
        except _TooBig:
            self.failed = True
            return None

    def _count(self, stack: tuple[str, ...]) -> None:
        """One more node of the rule; raises `_TooBig` past a bound (the problem is at the
        rule's own line, not deep inside an evaluator it names)."""
        self.nodes += 1
        if self.nodes > MAX_RULE_NODES:
            self.error(
                self.top,
                f"this rule has more than {MAX_RULE_NODES} nodes once its $refs are resolved; "
                "an evaluation walks all of them: simplify it or split it across features",
            )
            raise _TooBig
        if len(stack) > (0 if self.variants is not None else 1):  # inside a `$ref`
            self.doc.ref_nodes += 1
            if self.doc.ref_nodes == MAX_REF_NODES + 1:
                self.error(
                    self.top,
                    f"$ref evaluators add more than {MAX_REF_NODES} nodes to the catalog's "
                    "rules (each $ref copies its evaluator, and the evaluators it names): "
                    "use fewer or smaller evaluators",
                )
            if self.doc.ref_nodes > MAX_REF_NODES:
                raise _TooBig

    def error(self, path: Path, message: str) -> None:
        self.failed = True
        problem = Problem(self.doc.file, self.doc.line(path), format_path(path), message)
        if problem not in self.doc.problems:  # an evaluator shared by many features: once
            self.doc.problems.append(problem)

    def rule(self, node: Any, path: Path, result: bool, stack: tuple[str, ...]) -> Any:
        """`node` with refs resolved; `result`: its value is what the rule answers."""
        self._count(stack)
        if isinstance(node, list):
            if result:
                self.error(path, "a list cannot name a variant")
            return [self.rule(x, (*path, i), False, stack) for i, x in enumerate(node)]
        if isinstance(node, dict):
            return self._operation(node, path, result, stack)
        if result:
            self._literal(node, path)
        elif not (node is None or isinstance(node, str | int | float | bool)):
            self.error(path, f"not a JSON value: {node!r}")
        return node

    def _literal(self, node: Any, path: Path) -> None:
        if node is None or self.variants is None:
            return  # null falls through to the feature's other sources
        name = str(node).lower() if isinstance(node, bool) else str(node)
        if name not in self.variants:
            self.doc.warn(
                path,
                f"{node!r} names no variant (variants: {', '.join(sorted(self.variants))}); "
                "an evaluation that reaches it answers GENERAL",
            )

    def _operation(
        self, node: dict[Any, Any], path: Path, result: bool, stack: tuple[str, ...]
    ) -> Any:
        if len(node) != 1:
            keys = ", ".join(map(repr, node)) or "none"
            self.error(path, f"a JSON Logic operation has exactly one operator, got keys {keys}")
            return node
        op, args = next(iter(node.items()))
        if op == "$ref":
            return self._ref(args, path, result, stack)
        if op not in KNOWN_OPERATORS:
            self.error(
                (*path, op),
                f"unknown operator {op!r} (flagd's targeting knows {', '.join(sorted(KNOWN_OPERATORS))})",
            )
            return node
        at: Path = (*path, op)
        items = args if isinstance(args, list) else [args]
        if op == "fractional":
            out = self._fractional(items, at, result, stack)
        else:
            last = len(items) - 1
            out = [
                self.rule(
                    a,
                    (*at, i) if isinstance(args, list) else at,
                    result and op in ("if", "?:") and (i % 2 == 1 or (i == last and i % 2 == 0)),
                    stack,
                )
                for i, a in enumerate(items)
            ]
        if op == "var":
            self._note_clock(items)
            self._note_context(items)
        return {op: out if isinstance(args, list) else out[0]}

    def _note_clock(self, items: list[Any]) -> None:
        key = items[0] if items else ""
        if not isinstance(key, str | int | float) or isinstance(key, bool):
            self.volatile = True  # a computed name might be the clock
        elif isinstance(key, str) and (key in ("", "$flagd") or key.startswith("$flagd.timestamp")):
            self.volatile = True

    def _note_context(self, items: list[Any]) -> None:
        """A `var` outside the names the sidecar sets itself (engine/targeting.py `rule_data`)
        reads the caller's context; a computed name might."""
        key = items[0] if items else ""
        if not isinstance(key, str) or key.split(".", 1)[0] not in _SIDECAR_NAMES:
            self.reads_context = True

    def _ref(self, name: Any, path: Path, result: bool, stack: tuple[str, ...]) -> Any:
        evaluator = self.evaluators.get(name) if isinstance(name, str) else None
        if evaluator is None:
            known = ", ".join(sorted(self.evaluators)) or "none are declared"
            self.error((*path, "$ref"), f"unknown evaluator {name!r} (evaluators: {known})")
            return None
        if name in stack:
            cycle = " -> ".join((*stack[stack.index(name) :], name))
            self.error((*path, "$ref"), f"evaluator cycle: {cycle}")
            return None
        return self.rule(evaluator.rule, evaluator.path, result, (*stack, name))

    def _fractional(
        self, items: list[Any], at: Path, result: bool, stack: tuple[str, ...]
    ) -> list[Any]:
        """flagd's `fractional`: an optional bucketing expression, then [variant, weight]s."""
        out: list[Any] = []
        start = 0
        if items and not isinstance(items[0], list):
            out.append(self.rule(items[0], (*at, 0), False, stack))
            start = 1
        if start == len(items):
            self.error(at, "fractional needs at least one [variant, weight] bucket")
            return out
        if len(items) - start > MAX_FRACTIONAL_BUCKETS:
            self.error(
                at,
                f"fractional has {len(items) - start} buckets; at most "
                f"{MAX_FRACTIONAL_BUCKETS} are allowed (each evaluation scans them): "
                "give a variant a larger weight instead of repeating it",
            )
            raise _TooBig
        total: int | None = 0
        for i in range(start, len(items)):
            bucket, where = items[i], (*at, i)
            if not isinstance(bucket, list) or not 1 <= len(bucket) <= 2:
                self.error(
                    where, f"a fractional bucket is [variant, weight] or [variant], got {bucket!r}"
                )
                total = None
                continue
            variant = self.rule(bucket[0], (*where, 0), result, stack)
            weight: Any = bucket[1] if len(bucket) == 2 else 1
            if isinstance(weight, dict):
                out.append([variant, self.rule(weight, (*where, 1), False, stack)])
                total = None  # computed at evaluation time
                continue
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                weight = 0  # flagd: a negative or non-numeric weight counts 0
            if total is not None:
                total += weight
            out.append([variant, weight] if len(bucket) == 2 else [variant])
        if total is not None and total > MAX_WEIGHT_SUM:
            self.error(
                at, f"fractional weights must add up to at most {MAX_WEIGHT_SUM}, got {total}"
            )
        return out
