"""What an evaluation or usage request may carry: one check for every face (design §15).

The native API, flagd and OFREP each decode their own wire format (a protobuf `Struct`, a
JSON body) into plain Python values and hand them here; the faces only translate the
`EvaluationError` or `UsageRejected` raised. Three copies of this rule used to drift apart: a
context holding NaN was `INVALID_CONTEXT` on the native and flagd faces and an answer on OFREP,
and OFREP took `Infinity` as `requested` (decision 1330).

The bounds keep the cost of one request small before any work is done: a context is a few
attributes in practice, and a targeting rule walks it on every evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .decision import ErrorCode, EvaluationError
from .text import shown
from .usage import UsageRejected

MAX_CONTEXT_DEPTH = 16
"""Nesting levels of a context: `{"a": 1}` is 1, `{"a": {"b": 1}}` is 2."""

MAX_CONTEXT_SIZE = 64 * 1024
"""Characters of a context's keys and strings (8 for any other value)."""

TARGETING_KEY = "targetingKey"


def _invalid(message: str) -> EvaluationError:
    return EvaluationError(ErrorCode.INVALID_CONTEXT, message)


def check_context(context: Mapping[str, Any]) -> None:
    """`INVALID_CONTEXT` for a context no rule can use: a number that is not finite (JSON has
    no NaN or Infinity and no comparison means anything with them), nesting deeper than
    `MAX_CONTEXT_DEPTH`, or more than `MAX_CONTEXT_SIZE` of text. Walked without recursion,
    so a deep value costs no stack."""
    size = 0
    stack: list[tuple[Any, int, str]] = [(context, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_CONTEXT_DEPTH:
            raise _invalid(
                f"context attribute {shown(where)} is nested more than {MAX_CONTEXT_DEPTH} "
                "levels deep; send a flatter context"
            )
        items = value.items() if isinstance(value, Mapping) else enumerate(value)
        for key, item in items:
            name = where or str(key)
            if isinstance(key, str):
                size += len(key)
            if isinstance(item, str):
                size += len(item)
            elif isinstance(item, Mapping | list | tuple):
                stack.append((item, depth + 1, name))
            else:
                size += 8
                if isinstance(item, float) and not math.isfinite(item):
                    raise _invalid(
                        f"context attribute {shown(name)} holds {item}; context values must be "
                        "finite numbers (no NaN or Infinity)"
                    )
            if size > MAX_CONTEXT_SIZE:
                raise _invalid(
                    f"the context is larger than {MAX_CONTEXT_SIZE} characters (keys and "
                    f"strings; attribute {shown(name)}); send only what rules read"
                )


def split_targeting(context: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(account id, the other attributes) of a checked flagd or OFREP context; "" for no key.

    A `targetingKey` that is missing, empty, null or not a string counts as no key, as in
    flagd (decisions 1330, 2000): a feature with variants answers without one, any other
    feature answers `TARGETING_KEY_MISSING` from the engine."""
    check_context(context)
    attributes = dict(context)
    account = attributes.pop(TARGETING_KEY, None)
    return (account if isinstance(account, str) else ""), attributes


def consume_amount(amount: float) -> float:
    """The amount a `Consume` may ask for: finite and not negative (refunds are reports)."""
    if not math.isfinite(amount) or amount < 0:
        raise UsageRejected(f"amount must be a finite number >= 0, got {amount}")
    return amount
