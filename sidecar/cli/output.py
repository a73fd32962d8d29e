"""How client commands print a reply: clean JSON for scripts, aligned text for people.

JSON (`--json`) is the reply message with the API's field names (proto/plangate/v1), where
  - a field that is unset is left out (no `""`, no `null` for "not given"),
  - numbers are numbers and whole numbers are integers (`10`, not `10.0` or `"10"`),
  - times are ISO-8601 UTC strings (`2026-12-15T00:00:00Z`),
  - enum values are lower case without their prefix (`applied`, not `STATUS_APPLIED`),
  - booleans are always there (`"granted": false` says something).
Text is for reading: a feature's answer on one line with a usage bar for metered features,
the reason on the next, lists as aligned columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ...protocol.values import from_struct, from_value

BAR = 10  # cells of a usage bar


def plain(message: Message) -> dict[str, Any]:
    """The message as JSON data, by the rules in the module docstring."""
    out: dict[str, Any] = {}
    for fd in message.DESCRIPTOR.fields:
        value = getattr(message, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            if value:
                out[fd.name] = {
                    k: _item(fd.message_type.fields_by_name["value"], v) for k, v in value.items()
                }
        elif fd.is_repeated:
            if value:
                out[fd.name] = [_item(fd, v) for v in value]
        elif fd.has_presence:
            if message.HasField(fd.name):
                out[fd.name] = _item(fd, value)
        elif fd.type == FieldDescriptor.TYPE_STRING:
            if value:
                out[fd.name] = value
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            if value:
                out[fd.name] = _enum(fd, value)
        else:
            out[fd.name] = _item(fd, value)
    return out


def _item(fd: Any, value: Any) -> Any:  # a FieldDescriptor (upb or pure-Python)
    if fd.message_type is not None:
        name = fd.message_type.full_name
        if name == "google.protobuf.Timestamp":
            return value.ToJsonString()
        if name == "google.protobuf.Struct":
            return from_struct(value)
        if name == "google.protobuf.Value":
            return from_value(value)
        return plain(value)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return _enum(fd, value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _enum(fd: Any, number: int) -> str:
    name: str = fd.enum_type.values_by_number[number].name
    prefix = name.split("_")[0] + "_"
    return name.removeprefix(prefix).lower()


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


# -- text --------------------------------------------------------------------------------------


def number(value: Any) -> str:
    """`70000` as `70,000`, `1.5` as `1.5`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.6g}"


def day(text: str) -> str:
    """An ISO time as its date, or its date and minute when not at midnight."""
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return at.strftime("%Y-%m-%d" if (at.hour, at.minute) == (0, 0) else "%Y-%m-%d %H:%M")


def _bar(used: float, limit: float) -> str:
    share = 1.0 if limit <= 0 else min(used / limit, 1.0)
    cells = round(share * BAR)
    return f"{'█' * cells}{'░' * (BAR - cells)} {number(used)} / {number(limit)}"


def usage_bar(metering: Mapping[str, Any]) -> str:
    """`███████░░░ 70,000 / 100,000 (30,000 left, resets 2026-12-15)`."""
    used = metering.get("used", 0)
    notes: list[str] = []
    own_unlimited = metering.get("unlimited") or "limit" not in metering
    if own_unlimited and metering.get("pool") and "remaining" in metering:
        # credit-priced, capped only by its pool: what the pool still allows (design §12.1)
        left = metering["remaining"]
        head = _bar(used, used + left)
        notes.append(
            f"{number(left)} left: what the {metering['pool']} pool allows at "
            f"{number(metering.get('per_unit', 0))} credits each"
        )
    elif own_unlimited:
        head = f"{number(used)} used (unlimited)"
    else:
        limit = metering["limit"]
        head = _bar(used, limit)
        notes.append(f"{number(metering.get('remaining', 0))} left")
        if metering.get("soft_limit"):
            notes.append("soft limit")
    if metering.get("overage"):
        notes.append(f"{number(metering['overage'])} over")
    if metering.get("held"):
        notes.append(f"{number(metering['held'])} held")
    if "period_end" in metering:
        notes.append(f"resets {day(metering['period_end'])}")
    return head + (f" ({', '.join(notes)})" if notes else "")


def value_text(value: Any, yes: str = "on", no: str = "off") -> str:
    """A value for reading; a feature's boolean is on/off, a field's yes/no."""
    if isinstance(value, bool):
        return yes if value else no
    if value is None:
        return "none"
    if value in ({}, []):
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return number(value)


def resolution(r: Mapping[str, Any]) -> str:
    """One feature's answer: `FEATURE  allowed|denied  value-or-bar`, then why."""
    off = r.get("feature_type") in ("boolean", "flag") and r.get("value") is False
    answer = "allowed" if r.get("has_access") else "off" if off else "denied"
    if r.get("error_code"):
        answer = "error"
    detail = usage_bar(r["metering"]) if "metering" in r else value_text(r.get("value"))
    why = [f"source {r['variant']}"] if r.get("variant") else []
    why.append(f"reason {r.get('reason', 'none')}")
    if r.get("denial") and answer != "off":
        why.append(f"denied: {r['denial']}")
    if r.get("error_code"):
        why.append(f"{r['error_code']}: {r.get('error_message', '')}")
    return f"{r.get('feature', '?')}  {answer}  {detail}\n  why: {'; '.join(why)}"


def fields(data: Mapping[str, Any], indent: str = "") -> str:
    """Aligned `key  value` lines; nested objects indented under their key."""
    if not data:
        return f"{indent}(nothing)"
    width = max(len(k) for k in data)
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}")
            lines.append(fields(value, indent + "  "))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{indent}{key}")
            for item in value:  # each item a block, its first line marked with "- "
                block = fields(item, indent + "    ")
                lines.append(f"{indent}  - {block.removeprefix(indent + '    ')}")
        elif isinstance(value, list):
            lines.append(f"{indent}{key:<{width}}  {', '.join(map(value_text, value)) or '-'}")
        else:
            lines.append(f"{indent}{key:<{width}}  {value_text(value, 'yes', 'no')}")
    return "\n".join(lines)


def table(rows: Iterable[Sequence[str]], header: Sequence[str], empty: str) -> str:
    """Columns padded to their widest cell."""
    body = [list(r) for r in rows]
    if not body:
        return empty
    all_rows = [list(header), *body]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in all_rows
    )
