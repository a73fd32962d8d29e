"""Inline SVG: the usage meter of one metered decision and the usage chart of one feature.

Pictures only: every number drawn here is also written as text next to it (and in the SVG's
`<title>`), so a screen reader, a text browser and a test read the same figures. The geometry
is computed here; `templates/_macros.html` (`picture`) writes the shapes, escaping every value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...runtime.serve.history import HistoryPoint
from .format import number

WIDTH = 360
HEIGHT = 22

ALLOWANCE = "#dfe7f1"
TOPUPS = "#d6efe9"
OVERAGE = "#fbe3c8"
USED = "#3b74c4"
USED_TOPUP = "#1f9a80"
USED_OVER = "#d9822b"


Attr = str | int | float


@dataclass(frozen=True, slots=True)
class Shape:
    """One SVG element: its tag, attributes (SVG names), and an optional tooltip or text."""

    tag: str
    attrs: dict[str, Attr]
    title: str = ""
    text: str = ""


@dataclass(frozen=True, slots=True)
class Picture:
    """An inline SVG: its own attributes, its label (the `<title>`) and its shapes."""

    attrs: dict[str, Attr]
    label: str
    shapes: list[Shape]


def el(tag: str, text: str = "", title: str = "", **attrs: Attr) -> Shape:
    """A shape; `class_` -> `class`, `text_anchor` -> `text-anchor`."""
    named = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
    return Shape(tag, named, title, text)


def _svg(
    css: str, width: int, height: int, label: str, shapes: list[Shape], **extra: str
) -> Picture:
    attrs: dict[str, Attr] = {
        "class": css,
        "width": width,
        "height": height,
        "viewBox": f"0 0 {width} {height}",
        "role": "img",
        "aria-label": label,
        **extra,
    }
    return Picture(attrs, label, shapes)


@dataclass(frozen=True, slots=True)
class Meter:
    """What a meter shows, read from a decision's metering (design §5, §5.1)."""

    used: float
    allowance: float | None  # None: unlimited
    topups: float  # burned this period + still available: what top-ups add to the allowance
    overage_cap: float | None  # soft limits: how far past the ceiling usage may go
    soft: bool


def _x(value: float, scale: float) -> float:
    return round(WIDTH * min(value, scale) / scale, 1) if scale > 0 else 0.0


def meter(m: Meter, label: str) -> Picture:
    """A bar: allowance, then top-ups, then the soft-limit overage room; usage drawn over it."""
    if m.allowance is None:
        shapes = [
            el("rect", x=0, y=0, width=WIDTH, height=HEIGHT, fill=ALLOWANCE),
            el("text", "unlimited", x=6, y=15),
        ]
        return _svg("meter", WIDTH, HEIGHT, label, shapes)
    ceiling = m.allowance + m.topups
    room = m.overage_cap if m.soft and m.overage_cap is not None else 0.0
    scale = max(ceiling + room, m.used, 1.0)
    shapes = [el("rect", x=0, y=0, width=_x(m.allowance, scale), height=HEIGHT, fill=ALLOWANCE)]
    if m.topups:
        shapes.append(
            el(
                "rect",
                x=_x(m.allowance, scale),
                y=0,
                width=_x(m.topups, scale),
                height=HEIGHT,
                fill=TOPUPS,
                class_="topups",
            )
        )
    if room:
        shapes.append(
            el(
                "rect",
                x=_x(ceiling, scale),
                y=0,
                width=_x(room, scale),
                height=HEIGHT,
                fill=OVERAGE,
                class_="overage-room",
            )
        )
    for start, end, colour, name in (
        (0.0, min(m.used, m.allowance), USED, "used"),
        (m.allowance, min(m.used, ceiling), USED_TOPUP, "used-topups"),
        (ceiling, m.used, USED_OVER, "used-overage"),
    ):
        if end > start:
            shapes.append(
                el(
                    "rect",
                    x=_x(start, scale),
                    y=5,
                    width=round(_x(end, scale) - _x(start, scale), 1),
                    height=HEIGHT - 10,
                    fill=colour,
                    class_=name,
                )
            )
    shapes.append(
        el("line", x1=_x(ceiling, scale), y1=0, x2=_x(ceiling, scale), y2=HEIGHT, stroke="#333")
    )
    return _svg("meter", WIDTH, HEIGHT, label, shapes)


CHART_W = 560
CHART_H = 120
PAD_L = 56
PAD_B = 22


def chart(points: Sequence[HistoryPoint], label: str, unit: str) -> Picture:
    """Usage per window as bars, scaled to the highest; the limit (the period allowance) as a
    line where it is in sight — up to twice the highest bar, so a 500,000 allowance does not
    flatten a day of 1,234 to nothing (the label says the limit either way)."""
    peak = max([p.usage for p in points] or [0.0])
    limits = [p.limit for p in points if p.limit is not None and p.limit <= 2 * max(peak, 1.0)]
    top = max([peak, *limits, 1.0])
    inner_w, inner_h = CHART_W - PAD_L - 4, CHART_H - PAD_B - 6
    step = inner_w / max(len(points), 1)
    shapes = [
        el("rect", x=PAD_L, y=6, width=inner_w, height=inner_h, fill="#fff", stroke="#d5dae1"),
        el("text", number(top), x=PAD_L - 4, y=14, text_anchor="end"),
        el("text", "0", x=PAD_L - 4, y=6 + inner_h, text_anchor="end"),
        el("text", unit, x=4, y=CHART_H / 2),
    ]
    for i, p in enumerate(points):
        h = inner_h * p.usage / top
        shapes.append(
            el(
                "rect",
                title=f"{p.window_start:%Y-%m-%d}: {number(p.usage)} {unit}",
                x=round(PAD_L + i * step + 1, 1),
                y=round(6 + inner_h - h, 1),
                width=round(max(step - 2, 1), 1),
                height=round(h, 1),
                fill=USED,
                class_="bar",
            )
        )
        if p.limit is not None and p.limit <= top:
            y = round(6 + inner_h - inner_h * p.limit / top, 1)
            shapes.append(
                el(
                    "line",
                    x1=round(PAD_L + i * step, 1),
                    y1=y,
                    x2=round(PAD_L + (i + 1) * step, 1),
                    y2=y,
                    stroke=USED_OVER,
                    stroke_width=2,
                    class_="limit",
                )
            )
    if points:
        for p, anchor, x in (
            (points[0], "start", PAD_L),
            (points[-1], "end", CHART_W - 4),
        ):
            shapes.append(
                el("text", f"{p.window_start:%m-%d}", x=x, y=CHART_H - 6, text_anchor=anchor)
            )
    return _svg("chart", CHART_W, CHART_H, label, shapes, style="font-size:11px")
