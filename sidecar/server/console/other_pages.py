"""The small pages: the overview, sign-in, and "not found"."""

from __future__ import annotations

from collections.abc import Mapping

from ...catalog.model import Catalog
from ...store.base import DeliveryStatus
from .layout import Viewer
from .render import render


def overview_page(
    viewer: Viewer,
    catalog: Catalog,
    catalog_error: str | None,
    accounts: int,
    counts: Mapping[DeliveryStatus, int],
    environment: str,
) -> str:
    return render(
        "overview.html",
        title="Overview",
        viewer=viewer,
        catalog=catalog,
        catalog_error=catalog_error,
        accounts=accounts,
        pending=counts[DeliveryStatus.PENDING],
        failed=counts[DeliveryStatus.FAILED],
        environment=environment,
    )


def login_page(viewer: Viewer, next_path: str, error: str = "") -> str:
    return render("login.html", title="Sign in", viewer=viewer, next_path=next_path, error=error)


def message_page(viewer: Viewer, title: str, what: str) -> str:
    return render("message.html", title=title, viewer=viewer, what=what)


def not_found_page(viewer: Viewer, what: str) -> str:
    return message_page(viewer, "Not found", what)
