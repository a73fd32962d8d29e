"""Which text a store can hold: one rule for usage reports and admin records.

PostgreSQL's `text` and `jsonb` cannot hold NUL (U+0000), no UTF-8 database can hold an
unpaired surrogate, and a B-tree key (every id and key is part of one) is limited to about
2.7 kB. Text that breaks any of these used to reach the store and fail there as an unexpected
error, failing every request that shared the transaction; it is refused up front instead,
with the same answer on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MAX_KEY_BYTES = 512
"""The longest id or key (UTF-8 bytes): account, feature, subscription, unique and idempotency
keys. Several of them form one index key in PostgreSQL; together they stay under its limit."""


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored, in words for the sender, or None if it can."""
    if value.isascii():
        return _nul(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"is not valid Unicode (an unpaired surrogate at position {exc.start}); send UTF-8 text"
        )
    return _nul(value)


def key_problem(value: str) -> str | None:
    """`text_problem`, and the length bound of an id or key."""
    problem = text_problem(value)
    if problem is None and len(value) * (1 if value.isascii() else 4) > MAX_KEY_BYTES:
        size = len(value.encode("utf-8"))
        if size > MAX_KEY_BYTES:
            problem = (
                f"is {size} bytes long; ids and keys are at most {MAX_KEY_BYTES} bytes (UTF-8)"
            )
    return problem


def _nul(value: str) -> str | None:
    at = value.find("\x00")
    if at < 0:
        return None
    return f"contains a NUL character (\\x00) at position {at}; remove it (NUL cannot be stored)"


SHOWN_CHARS = 64
"""How much of an input an error message quotes."""


def shown(value: str) -> str:
    """`value` quoted for an error message, cut to `SHOWN_CHARS` with its full length named:
    a message must not echo a whole input back (a 20 kB id in a gRPC status overflowed the
    client's metadata limit and came back as RESOURCE_EXHAUSTED)."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}… ({len(value)} characters)"


MAX_NAME_CHARS = 256
"""The longest account name: a label for people, shown in the console and the CLI."""

MAX_ATTRIBUTES_BYTES = 64 * 1024
"""An account's custom attributes, as JSON: what targeting rules read, like a context."""

MAX_MEMBERS = 1000
"""Members of one subscription: every membership edit rewrites the whole record."""


def size_problem(record: Mapping[str, Any]) -> str | None:
    """Why an account record is larger than an admin edit may make it, or None: its name,
    its attributes, the members of each subscription. Checked before anything is stored."""
    name = record.get("name")
    if isinstance(name, str) and len(name) > MAX_NAME_CHARS:
        return f"name is {len(name)} characters long; names are at most {MAX_NAME_CHARS}"
    attributes = record.get("attributes") or {}
    # surrogatepass: a lone surrogate is counted here and refused by the text check
    size = len(
        json.dumps(attributes, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")
    )
    if size > MAX_ATTRIBUTES_BYTES:
        return (
            f"attributes are {size} bytes as JSON; an account's attributes are at most "
            f"{MAX_ATTRIBUTES_BYTES} bytes (keep what targeting rules read)"
        )
    for i, sub in enumerate(record.get("subscriptions") or ()):
        members = sub.get("members") or ()
        if len(members) > MAX_MEMBERS:
            return (
                f"subscriptions[{i}] has {len(members)} members; a subscription has at most "
                f"{MAX_MEMBERS}"
            )
    return None
