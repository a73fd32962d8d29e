"""The small pages: the overview, sign-in, and "not found"."""

from __future__ import annotations

from collections.abc import Mapping

from ...catalog.model import Catalog
from ...store.base import DeliveryStatus
from .catalog_page import rejected_banner
from .format import number
from .html import Html, el
from .layout import Viewer, link, page


def overview_page(
    viewer: Viewer,
    catalog: Catalog,
    catalog_error: str | None,
    accounts: int,
    counts: Mapping[DeliveryStatus, int],
    environment: str,
) -> Html:
    return page(
        "Overview",
        viewer,
        rejected_banner(catalog_error, catalog.version),
        el(
            "table",
            el("tr", el("th", "environment", scope="row"), el("td", environment)),
            el(
                "tr",
                el("th", "catalog", scope="row"),
                el("td", link("/catalog", catalog.version), " ", el("code", catalog.source)),
            ),
            el(
                "tr",
                el("th", "accounts", scope="row"),
                el("td", link("/accounts", number(accounts))),
            ),
            el(
                "tr",
                el("th", "deliveries", scope="row"),
                el(
                    "td",
                    link(
                        "/deliveries?status=pending",
                        f"{number(counts[DeliveryStatus.PENDING])} pending",
                    ),
                    ", ",
                    link(
                        "/deliveries?status=failed",
                        f"{number(counts[DeliveryStatus.FAILED])} failed",
                    ),
                ),
            ),
            class_="overview",
        ),
    )


def login_page(viewer: Viewer, next_path: str, error: str = "") -> Html:
    return page(
        "Sign in",
        viewer,
        el(
            "form",
            el(
                "fieldset",
                el("legend", "A token from the sidecar's --token-file"),
                el("input", type="hidden", name="next", value=next_path),
                el(
                    "label",
                    "token ",
                    el(
                        "input",
                        type="password",
                        name="token",
                        id="token",
                        required=True,
                        autocomplete="current-password",
                        autofocus=True,
                    ),
                ),
                " ",
                el("button", "Sign in", type="submit"),
            ),
            method="post",
            action="/console/login",
        ),
        el(
            "p",
            "The console remembers the token's name (the audit log's “who”) for 8 hours, "
            "in a cookie only this console reads.",
            class_="muted",
        ),
        error=error,
    )


def message_page(viewer: Viewer, title: str, what: str) -> Html:
    return page(title, viewer, el("p", what), el("p", link("/", "Back to the overview")))


def not_found_page(viewer: Viewer, what: str) -> Html:
    return message_page(viewer, "Not found", what)
