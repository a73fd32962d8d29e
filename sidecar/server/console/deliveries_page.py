"""The outbox (design §7): every delivery with its status, newest first, and (signed in) retry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlencode

from ...store.base import Delivery, DeliveryStatus
from .accounts_page import account_path
from .format import when
from .html import Html, el
from .layout import Viewer, csrf_field, link, page

PAGE_SIZE = 50

_BADGE = {
    DeliveryStatus.DELIVERED: "ok",
    DeliveryStatus.FAILED: "bad",
    DeliveryStatus.PENDING: "warn",
}


def _retry_form(viewer: Viewer, delivery_id: str | None, label: str) -> Html:
    return el(
        "form",
        csrf_field(viewer),
        el("input", type="hidden", name="id", value=delivery_id) if delivery_id else None,
        el("input", type="hidden", name="all_failed", value="1") if delivery_id is None else None,
        el("button", label, type="submit"),
        method="post",
        action="/console/deliveries/retry",
        class_="inline",
    )


def deliveries_page(
    viewer: Viewer,
    rows: Sequence[Delivery],
    status: str,
    counts: Mapping[DeliveryStatus, int],
    next_before: int | None,
    notice: str = "",
    error: str = "",
) -> Html:
    filters = [
        link("/deliveries", "all") if status else el("b", "all"),
        *(
            [" · ", el("b", f"{s.value} ({counts[s]})")]
            if status == s.value
            else [
                " · ",
                link("/deliveries?" + urlencode({"status": s.value}), f"{s.value} ({counts[s]})"),
            ]
            for s in DeliveryStatus
        ),
    ]
    table = el(
        "table",
        el(
            "tr",
            el("th", "delivery"),
            el("th", "kind"),
            el("th", "account"),
            el("th", "to"),
            el("th", "status"),
            el("th", "attempts"),
            el("th", "last error"),
            el("th", "created"),
            el("th", "next attempt"),
            el("th", "") if viewer.can_act else None,
        ),
        [
            el(
                "tr",
                el("td", el("code", d.id)),
                el("td", d.kind),
                el("td", link(account_path(d.account), d.account)),
                el("td", d.target),
                el("td", el("span", d.status.value, class_=f"badge {_BADGE[d.status]}")),
                el("td", str(d.attempts), class_="num"),
                el("td", d.last_error),
                el("td", when(d.created_at)),
                el("td", when(d.next_attempt_at)),
                el(
                    "td",
                    _retry_form(viewer, d.id, "Retry")
                    if d.status is not DeliveryStatus.DELIVERED
                    else None,
                )
                if viewer.can_act
                else None,
                class_="delivery",
            )
            for d in rows
        ],
        class_="deliveries",
    )
    more = (
        link("/deliveries?" + urlencode({"status": status, "before": next_before}), "older →")
        if next_before is not None
        else None
    )
    return page(
        "Deliveries",
        viewer,
        el("p", "Webhook deliveries from the durable outbox, newest first. ", filters),
        _retry_form(viewer, None, "Retry every failed delivery")
        if viewer.can_act and counts[DeliveryStatus.FAILED]
        else None,
        table if rows else el("p", "No deliveries.", class_="muted"),
        el("nav", more, class_="pages"),
        notice=notice,
        error=error,
    )
