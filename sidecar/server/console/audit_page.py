"""The audit log (design §12): who changed what and when, with the changed part before and
after, newest first; all accounts or one."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from ...store.base import AuditEntry
from .accounts_page import account_path
from .format import when
from .html import Html, el
from .layout import Viewer, link, page


def _json(value: Any) -> Html:
    if value is None:
        return el("span", "—", class_="muted")
    return el("pre", json.dumps(value, indent=1, sort_keys=True, default=str))


def audit_page(
    viewer: Viewer, rows: Sequence[AuditEntry], account: str, next_before: int | None
) -> Html:
    scope = (
        el(
            "p",
            "Changes of account ",
            link(account_path(account), account),
            " · ",
            link("/audit", "all accounts"),
        )
        if account
        else el(
            "p", "Every admin change, from the API, the CLI, the console, quotas and the scheduler."
        )
    )
    form = el(
        "form",
        el("label", "account ", el("input", name="account", value=account, id="account")),
        " ",
        el("button", "Show", type="submit"),
        method="get",
        action="/console/audit",
    )
    table = el(
        "table",
        el(
            "tr",
            el("th", "when"),
            el("th", "who"),
            el("th", "what"),
            el("th", "account"),
            el("th", "target"),
            el("th", "before"),
            el("th", "after"),
        ),
        [
            el(
                "tr",
                el("td", when(e.at)),
                el("td", el("b", e.actor)),
                el("td", e.action),
                el("td", link(account_path(e.account), e.account) if e.account else "—"),
                el("td", el("code", e.target) if e.target else "—"),
                el("td", _json(e.before)),
                el("td", _json(e.after)),
                class_="entry",
            )
            for e in rows
        ],
        class_="audit",
    )
    query = {"account": account} if account else {}
    more = (
        link("/audit?" + urlencode({**query, "before": next_before}), "older →")
        if next_before is not None
        else None
    )
    return page(
        "Audit log",
        viewer,
        scope,
        form,
        table if rows else el("p", "No entries.", class_="muted"),
        el("nav", more, class_="pages"),
    )
