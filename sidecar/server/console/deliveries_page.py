"""The outbox (design §7): every delivery with its status, newest first, and (signed in) retry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ...store.base import Delivery, DeliveryStatus
from .layout import Viewer
from .render import render

PAGE_SIZE = 50

_BADGE = {
    DeliveryStatus.DELIVERED.value: "ok",
    DeliveryStatus.FAILED.value: "bad",
    DeliveryStatus.PENDING.value: "warn",
}


def deliveries_page(
    viewer: Viewer,
    rows: Sequence[Delivery],
    status: str,
    counts: Mapping[DeliveryStatus, int],
    next_before: int | None,
) -> str:
    return render(
        "deliveries.html",
        title="Deliveries",
        viewer=viewer,
        rows=rows,
        status=status,
        counts=[(s.value, counts[s]) for s in DeliveryStatus],
        failed=counts[DeliveryStatus.FAILED],
        next_before=next_before,
        badges=_BADGE,
    )
