"""A quicker `__init__` for the frozen, slotted dataclasses built once per stored account.

A frozen dataclass's generated `__init__` sets each field through `object.__setattr__`
(its own `__setattr__` refuses), which is most of the cost of building an `Account` and its
`Subscription`: at a million stored accounts, about a second of start-up. `quick_init`
replaces that `__init__` with one of the same signature and defaults that stores each field
through its slot's descriptor directly. Everything else — frozenness, equality, hashing,
`replace`, `repr` — stays the dataclass's own.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_NO_VALUE = object()  # stands for "not given" where a field has a default factory


def quick_init(cls: type[T]) -> type[T]:
    """Give `cls` (a `@dataclass(frozen=True, slots=True)` with no `__post_init__` and no
    `InitVar`) an `__init__` that sets its slots directly; returns `cls`."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]  # TypeError when not a dataclass
    if (
        hasattr(cls, "__post_init__")
        or "__slots__" not in cls.__dict__
        or any(f.kw_only or not f.init for f in fields)
    ):
        raise TypeError(
            f"{cls.__name__}: quick_init takes a slotted dataclass without __post_init__, "
            "keyword-only or non-init fields"
        )
    names: dict[str, Any] = {"_NO_VALUE": _NO_VALUE}
    params: list[str] = []
    body: list[str] = []
    for f in fields:
        names[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is not dataclasses.MISSING:
            names[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            names[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_NO_VALUE")
            body.append(f"    if {f.name} is _NO_VALUE: {f.name} = _factory_{f.name}()")
        else:
            params.append(f.name)
        body.append(f"    _set_{f.name}(self, {f.name})")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body or ["    pass"])
    exec(source, names)  # the same technique `dataclasses` itself uses to build __init__
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]  # replacing the generated one is the point
    return cls
