"""An audit entry's before and after as a field-level diff (design §12.1): which fields
changed, from what to what, instead of two whole JSON documents side by side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .format import plain

ABSENT = "—"


@dataclass(frozen=True, slots=True)
class Change:
    """One changed field: its dotted path and its value before and after (`—`: absent)."""

    field: str
    before: str
    after: str


def _shown(value: Any, present: bool) -> str:
    return plain(value) if present else ABSENT


def changes(before: Any, after: Any, path: str = "") -> list[Change]:
    """Every field whose value differs, objects compared field by field (lists and scalars
    as whole values), in field order."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[Change] = []
        for key in sorted(set(before) | set(after), key=str):
            name = f"{path}.{key}" if path else str(key)
            if key not in after:
                out += (
                    changes(before[key], None, name)
                    if isinstance(before[key], dict)
                    else [Change(name, plain(before[key]), ABSENT)]
                )
            elif key not in before:
                out += (
                    changes(None, after[key], name)
                    if isinstance(after[key], dict)
                    else [Change(name, ABSENT, plain(after[key]))]
                )
            elif before[key] != after[key]:
                out += changes(before[key], after[key], name)
        return out
    if isinstance(before, dict) and after is None:
        return [c for k, v in before.items() for c in changes({k: v}, {}, path)]
    if isinstance(after, dict) and before is None:
        return [c for k, v in after.items() for c in changes({}, {k: v}, path)]
    if before == after:
        return []
    return [
        Change(
            path or "value", _shown(before, before is not None), _shown(after, after is not None)
        )
    ]
