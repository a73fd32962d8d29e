"""The audit log (design §12): who changed what and when, with the changed part before and
after, newest first; all accounts or one."""

from __future__ import annotations

from collections.abc import Sequence

from ...store.base import AuditEntry
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
    )
