"""How the console writes times, numbers and entitlement values for people."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ...catalog.features import notation
from ...catalog.model import Entitlement


def number(value: float | None) -> str:
    if value is None:
        return "unlimited"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def plain(value: Any) -> str:
    """A JSON-shaped value as one line of text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return number(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return ", ".join(plain(v) for v in value) if value else "(none)"
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    return "—" if value is None else str(value)


def entitlement(value: Entitlement) -> str:
    """An entitlement as a pricing table writes it: `100,000 (soft, overage up to 20,000)`."""
    shown = notation(value)
    if isinstance(shown, Mapping) and shown.get("soft"):
        cap = shown.get("overage_cap")
        extra = f", overage up to {number(cap)}" if cap is not None else ", overage unlimited"
        return f"{number(shown['limit'])} (soft{extra})"
    return plain(shown)


def relative(at: datetime, now: datetime) -> str:
    """How far ahead `at` is, in the two largest units: `in 3 days 4 h`, `in 12 min`."""
    seconds = max(0, int((at - now).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"in {days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")
    if hours:
        return f"in {hours} h" + (f" {minutes} min" if minutes else "")
    return f"in {minutes} min" if minutes else "in under a minute"
