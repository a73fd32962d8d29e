"""The console's subscription actions (design §12.1): change plan, cancel, resume, cancel a
scheduled change — each an `Admin` operation named by the form, and the confirmation page
that shows the account's decisions before → after (a dry run, `runtime.preview`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from ...runtime.serve.admin import Admin
from ...runtime.serve.preview import Effect
from .layout import Viewer
from .render import render

Operation = Callable[[Admin, str], object]
"""(the admin facade, the actor) -> the change, applied or dry-run."""

WHEN = {"now": "now", "period_end": "at the end of the billing period"}


def _when(form: Mapping[str, str]) -> str:
    when = form.get("when", "now") or "now"
    if when not in WHEN:
        raise ValueError(f"when must be one of {', '.join(WHEN)}, got {when!r}")
    return when


def subscription_operation(
    op: str, account_id: str, sub_id: str, form: Mapping[str, str]
) -> tuple[str, Operation]:
    """The change a form asks for, and its label; `LookupError` for an unknown action,
    `ValueError` for a form the action cannot take."""
    if op == "change-plan":
        plan, when = form.get("plan", "").strip(), _when(form)
        if not plan:
            raise ValueError("plan: choose the plan to move to")
        return (
            f"change subscription {sub_id} to plan {plan} {WHEN[when]}",
            lambda a, actor: a.change_plan(account_id, sub_id, plan, when=when, actor=actor),
        )
    if op == "cancel":
        when = _when(form)
        return (
            f"cancel subscription {sub_id} {WHEN[when]}",
            lambda a, actor: a.cancel_subscription(account_id, sub_id, when=when, actor=actor),
        )
    if op == "resume":
        return (
            f"resume subscription {sub_id} (drop its end)",
            lambda a, actor: a.resume_subscription(account_id, sub_id, actor=actor),
        )
    if op == "cancel-change":
        return (
            f"cancel the scheduled changes of subscription {sub_id}",
            lambda a, actor: a.cancel_scheduled_change(account_id, sub_id, actor=actor),
        )
    if op == "extend-trial":
        until = _instant(form.get("until", ""))
        return (
            f"extend the trial of subscription {sub_id} to {until:%Y-%m-%d %H:%M} UTC",
            lambda a, actor: a.extend_trial(account_id, sub_id, until, actor=actor),
        )
    raise LookupError(f"No subscription action {op!r}.")


def _instant(text: str) -> datetime:
    """A form's instant: `2027-01-31T00:00:00Z`, or a date (midnight UTC)."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        at = None
    if at is None:
        raise ValueError(f"until: give a date or an instant, e.g. 2027-01-31, got {text!r}")
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def confirm_page(
    viewer: Viewer,
    account_id: str,
    label: str,
    effect: Effect,
    action: str,
    form: Mapping[str, str],
) -> str:
    """The confirmation step: what the change would do, and the same form with `confirm=1`."""
    return render(
        "confirm.html",
        title=f"Confirm: {label}",
        viewer=viewer,
        account_id=account_id,
        effect=effect,
        action=action,
        fields=[(k, v) for k, v in form.items() if k not in ("csrf", "confirm")],
    )
