"""The audit log (design §12): who changed what and when, newest first, all accounts or one;
each change as the fields it changed, from → to (design §12.1), the JSON on demand."""

from __future__ import annotations

from collections.abc import Sequence

from ...store.base import AuditEntry
from .diff import changes
from .layout import Viewer
from .render import render


def audit_page(
    viewer: Viewer, rows: Sequence[AuditEntry], account: str, next_before: int | None
) -> str:
    return render(
        "audit.html",
        title="Audit log",
        viewer=viewer,
        rows=rows,
        account=account,
        next_before=next_before,
        changes=changes,
    )
