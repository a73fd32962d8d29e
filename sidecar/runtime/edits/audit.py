"""Audit entries (design §12): who changed which account, what part of it, before and after.

An entry is built here and written by the store in the same transaction as the change it
describes, so the log never shows a change that did not happen nor misses one that did.
`before` and `after` hold only the top-level parts of the record that differ (the whole
record when one side does not exist), each bounded to `MAX_PART` characters of JSON so one
huge record cannot bloat the log; a part over the bound is replaced by a note of its size.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ...store.base import AuditEntry, Record

MAX_PART = 16_384
"""Characters of JSON one side of an entry may hold."""

ANONYMOUS = "anonymous"
"""The actor of an API call to a sidecar started without `--token-file` (no one is named)."""


def bounded(part: dict[str, Any] | None) -> dict[str, Any] | None:
    """`part`, or a note of its size and keys when its JSON is longer than `MAX_PART`."""
    if part is None:
        return None
    size = len(json.dumps(part, separators=(",", ":"), default=str))
    if size <= MAX_PART:
        return part
    return {"truncated": True, "size": size, "keys": sorted(part)}


def record_entry(
    at: datetime,
    actor: str,
    action: str,
    before: Record | None,
    after: Record | None,
    target: str = "",
) -> AuditEntry:
    """The entry of one record change (`before` None: created; `after` None: deleted)."""
    source = after if after is not None else before
    assert source is not None, "a change has at least one side"
    if before is None or after is None:
        old, new = before, after
    else:
        keys = [k for k in dict.fromkeys((*before, *after)) if before.get(k) != after.get(k)]
        old = {k: before[k] for k in keys if k in before}
        new = {k: after[k] for k in keys if k in after}
    return AuditEntry(at, actor, action, str(source["id"]), target, bounded(old), bounded(new))
