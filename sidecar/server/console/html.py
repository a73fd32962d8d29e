"""A small HTML builder that escapes by default (decision 1200).

Every `str` that reaches a page is escaped; only `Html` values — built by `el` from escaped
parts, or the few constants this package writes itself (`trusted`) — pass through as markup.
Account names, attribute values, feature values and error messages are user input, so a
forgotten escape would be a cross-site scripting hole; here forgetting is not possible:
putting a plain string into a page escapes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import TypeAlias


class Html(str):
    """Markup that is safe to send as is."""

    __slots__ = ()


Child: TypeAlias = "Html | str | int | float | Iterable[Child] | None"
AttrValue: TypeAlias = str | int | float | bool | None

VOID = frozenset({"br", "hr", "img", "input", "meta", "link"})
"""HTML elements without a closing tag."""


def trusted(markup: str) -> Html:
    """Markup written in this package (CSS, fixed fragments): never user input."""
    return Html(markup)


def text(value: Child) -> Html:
    """`value` as markup: `Html` as is, anything else escaped; iterables joined."""
    if value is None:
        return Html("")
    if isinstance(value, Html):
        return value
    if isinstance(value, str):
        return Html(escape(value, quote=True))
    if isinstance(value, bool):
        return Html("true" if value else "false")
    if isinstance(value, int | float):
        return Html(escape(str(value)))
    return Html("".join(text(v) for v in value))


def _attrs(attrs: dict[str, AttrValue]) -> str:
    out = []
    for name, value in attrs.items():
        name = name.rstrip("_").replace("_", "-")  # class_ -> class, aria_label -> aria-label
        if value is None or value is False:
            continue
        if value is True:
            out.append(f" {name}")
        else:
            out.append(f' {name}="{escape(str(value), quote=True)}"')
    return "".join(out)


def el(tag: str, *children: Child, **attrs: AttrValue) -> Html:
    """`<tag attrs>children</tag>`; attribute values and children are escaped."""
    opening = f"<{tag}{_attrs(attrs)}"
    if tag in VOID:
        return Html(opening + ">")
    return Html(f"{opening}>{text(children)}</{tag}>")
