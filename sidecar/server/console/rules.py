"""Targeting rules (flagd's JSON Logic, design §4.1) as sentences a person reads on the catalog
page: `plan in [pro] and account.region = eu → 20 % on, 80 % off` (design §12.1).

Only wording: what a rule decides is the engine's (flagd's evaluator); an operator this module
does not know is written as its compact JSON, so nothing is ever hidden or invented.
"""

from __future__ import annotations

import json
from typing import Any

_COMPARE = {"==": "=", "===": "=", "!=": "≠", "!==": "≠", "<": "<", "<=": "≤", ">": ">", ">=": "≥"}
_LISTS = {"plans": "plan", "addons": "add-on"}  # context lists a rule tests membership of


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, str | int | float):
        return str(value)
    return _json(value)


def _var(value: Any) -> str | None:
    """The name a `{"var": name}` reads, else None."""
    if isinstance(value, dict) and len(value) == 1 and "var" in value:
        name = value["var"]
        name = name[0] if isinstance(name, list) and name else name
        return str(name)
    return None


def expression(rule: Any, nested: bool = False) -> str:
    """One JSON Logic expression as words; `nested` parenthesises and/or inside another."""
    if not isinstance(rule, dict) or len(rule) != 1:
        return _literal(rule)
    op, args = next(iter(rule.items()))
    args = args if isinstance(args, list) else [args]
    name = _var(rule)
    if name is not None:
        return name
    if op in ("and", "or") and args:
        text = f" {op} ".join(expression(a, nested=True) for a in args)
        return f"({text})" if nested and len(args) > 1 else text
    if op == "!" and len(args) == 1:
        inner = expression(args[0], nested=True)
        return f"not {inner}" if _var(args[0]) is not None else f"not ({inner})"
    if op == "!!" and len(args) == 1:
        return f"{expression(args[0], nested=True)} is set"
    if op in _COMPARE and len(args) == 2:
        return f"{expression(args[0], True)} {_COMPARE[op]} {expression(args[1], True)}"
    if op == "in" and len(args) == 2:
        return _membership(args[0], args[1])
    if op in ("starts_with", "ends_with") and len(args) == 2:
        verb = op.replace("_", " ")
        return f"{expression(args[0], True)} {verb} {expression(args[1], True)}"
    if op == "sem_ver" and len(args) == 3:
        return f"{expression(args[0], True)} {args[1]} {_literal(args[2])} (semver)"
    if op == "fractional":
        return _fractional(args)
    return _json(rule)


def _membership(needle: Any, hay: Any) -> str:
    """`in`: `plan in [pro]` for the account's plans and add-ons, `tags contains x` for another
    list the context holds, `x in [a, b]` for a literal list."""
    listed = _var(hay)
    if listed in _LISTS and _var(needle) is None:
        return f"{_LISTS[listed]} in [{_literal(needle)}]"
    if listed is not None:
        return f"{listed} contains {expression(needle, True)}"
    return f"{expression(needle, True)} in {_literal(hay)}"


def _fractional(args: list[Any]) -> str:
    """`20 % on, 80 % off`, bucketed by the targeting key unless the rule names what."""
    by = ""
    if args and not isinstance(args[0], list):
        by = f" by {expression(args[0], True)}"
        args = args[1:]
    buckets = [a for a in args if isinstance(a, list) and a]
    weights = [float(b[1]) if len(b) > 1 else 1.0 for b in buckets]
    total = sum(weights) or 1.0
    parts = [
        f"{round(100 * w / total, 1):g} % {_literal(b[0])}"
        for b, w in zip(buckets, weights, strict=True)
    ]
    return ", ".join(parts) + by


def _result(value: Any) -> str:
    if value is None:
        return "no variant: the plans decide"
    return expression(value)


def sentences(rule: Any) -> list[str]:
    """The rule as lines `condition → result`, top to bottom, like flagd reads an `if`."""
    if rule is None:
        return ["no rule: the plans decide"]
    if isinstance(rule, dict) and len(rule) == 1 and "if" in rule:
        args = rule["if"] if isinstance(rule["if"], list) else [rule["if"]]
        lines = []
        for i in range(0, len(args) - 1, 2):
            then = args[i + 1]
            nested = sentences(then) if isinstance(then, dict) and "if" in then else None
            lead = "otherwise, if " if i else ""
            if nested is None:
                lines.append(f"{lead}{expression(args[i])} → {_result(then)}")
            else:
                lines.append(f"{lead}{expression(args[i])} →")
                lines += [f"    {line}" for line in nested]
        if len(args) % 2 == 1:
            lines.append(f"otherwise → {_result(args[-1])}")
        return lines
    return [f"always → {_result(rule)}"]
