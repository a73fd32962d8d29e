"""Reading the catalog's top-level `webhooks:` (design §7.1): lifecycle endpoints.

Each entry names a URL, the events it receives and its signing secret (`secret_env` or
`secret_file`, read at delivery time exactly as for a quota webhook action). An unknown event
name is refused with the list of known ones: a typo would otherwise silently receive nothing.
"""

from __future__ import annotations

from typing import Any

from .model import LIFECYCLE_EVENTS, Webhook
from .source import Document, Path
from .values import check_keys, read_list, read_mapping, read_str

_KEYS = {"url", "events", "secret_env", "secret_file"}


def read_webhooks(doc: Document, raw: Any) -> tuple[Webhook, ...]:
    out: list[Webhook] = []
    for i, item in enumerate(read_list(doc, ("webhooks",), raw)):
        path = ("webhooks", i)
        data = read_mapping(doc, path, item)
        check_keys(doc, path, data, _KEYS)
        url = read_str(doc, (*path, "url"), data.get("url"))
        if url is not None and not url.startswith(("http://", "https://")):
            doc.error((*path, "url"), f"must be an http:// or https:// URL, got {url!r}")
            url = None
        events: list[str] = []
        listed = read_list(doc, (*path, "events"), data.get("events"))
        if data.get("events") in (None, []):
            doc.error(
                (*path, "events"),
                f"needs at least one event (known: {', '.join(LIFECYCLE_EVENTS)})",
            )
        for j, name in enumerate(listed):
            if name not in LIFECYCLE_EVENTS:
                doc.error(
                    (*path, "events", j),
                    f"unknown event {name!r} (known: {', '.join(LIFECYCLE_EVENTS)})",
                )
            elif name not in events:
                events.append(name)
        secret_env = _optional(doc, (*path, "secret_env"), data.get("secret_env"))
        secret_file = _optional(doc, (*path, "secret_file"), data.get("secret_file"))
        if url is not None and events:
            out.append(Webhook(url, frozenset(events), secret_env, secret_file))
    return tuple(out)


def _optional(doc: Document, path: Path, value: Any) -> str:
    """A secret's name: absent is "", anything but a non-empty string is an error."""
    if value is None:
        return ""
    return read_str(doc, path, value) or ""
