"""flagd's flag-set selector (`Flagd-Selector` header): PlanGate's flag sets are its products.

A selector `flagSetId=<product slug>` limits the flagd `ResolveAll` and `EventStream` and the
OFREP bulk evaluation to one product's features, named by their own slugs (decision 2007);
single resolves are not filtered, as in flagd.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..engine import ErrorCode, EvaluationError

HEADER = "flagd-selector"  # gRPC metadata keys are lowercase; HTTP headers match any case


def flag_set(selector: str | None) -> str | None:
    """The product slug a selector names; None without one (every product)."""
    if selector is None or not selector.strip():
        return None
    name, sep, value = selector.partition("=")
    if sep and name.strip() == "flagSetId" and value.strip():
        return value.strip()
    raise EvaluationError(
        ErrorCode.INVALID_CONTEXT,
        f"the Flagd-Selector {selector!r} is not understood: PlanGate's flag sets are its "
        "products, select one with flagSetId=<product slug>",
    )


def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The product a gRPC call's `flagd-selector` metadata names."""
    for key, value in metadata or ():
        if key.lower() == HEADER:
            return flag_set(value if isinstance(value, str) else value.decode())
    return None
