"""Admin changes as edits of an account record (the catalog's account format).

Each function takes the current record and a request and returns the new record, or
raises `AdminError`; `validate` then runs the catalog's own account rules over it, so
the admin API refuses exactly what the catalog file would refuse.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from ...catalog.accounts import read_accounts, read_plain_account
from ...catalog.model import Account, Catalog
from ...catalog.source import Document
from ...catalog.values import parse_time
from ...engine.text import key_problem, size_problem, text_problem
from ...store.base import Record
from ...store.timefmt import ts


class AdminError(ValueError):
    """A request that cannot be applied; the message says what to change."""


class NotFound(AdminError):
    pass


class Refused(AdminError):
    """A well-formed request that the account's history rules out (a second trial)."""


class Declared(AdminError):
    """The account is declared in the catalog file, which stays the source of truth."""


def new_id(kind: str) -> str:
    """A generated id (`sub_…`, `grant_…`, `topup_…`) for what a request left unnamed."""
    return f"{kind}_{uuid.uuid4().hex[:12]}"


def new_record(
    account_id: str, name: str = "", attributes: Mapping[str, Any] | None = None
) -> Record:
    return {
        "id": account_id,
        "name": name,
        "attributes": dict(attributes or {}),
        "subscriptions": [],
        "overrides": {},
        "grants": [],
    }


def upsert_account(
    record: Record | None,
    account_id: str,
    name: str | None,
    attributes: Mapping[str, Any] | None,
    clear_attributes: bool = False,
) -> Record:
    """`UpsertAccount` as a merge (design §6), so two clients that each set what they know
    (the CLI a name, an app a region) do not undo each other: `None` keeps the stored value,
    given attributes are merged key by key (a `None` value removes that key, as in a JSON
    merge patch), and `clear_attributes` empties the stored ones first."""
    rec = edited(record) if record else new_record(account_id)
    if name is not None:
        rec["name"] = name
    merged: dict[str, Any] = {} if clear_attributes else dict(rec.get("attributes") or {})
    for key, value in (attributes or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    rec["attributes"] = merged
    return rec


def check_text(record: Record) -> None:
    """`AdminError` naming the first string in `record` (a key or a value, at any depth) that no
    store can hold, and ids longer than an index allows; run before a record is stored."""
    too_large = size_problem(record)
    if too_large is not None:
        raise AdminError(too_large)
    ids = [("id", record.get("id"))]
    for i, sub in enumerate(record.get("subscriptions") or ()):
        ids.append((f"subscriptions[{i}].id", sub.get("id")))
        ids += [
            (f"subscriptions[{i}].members[{j}]", m) for j, m in enumerate(sub.get("members") or ())
        ]
    for part in ("grants", "topups"):
        ids += [
            (f"{part}[{i}].id", item.get("id")) for i, item in enumerate(record.get(part) or ())
        ]
    for path, value in ids:
        problem = key_problem(value) if isinstance(value, str) else None
        if problem is not None:
            raise AdminError(f"{path} {problem}")
    for path, text in _strings(record, ""):
        problem = text_problem(text)
        if problem is not None:
            raise AdminError(f"{path or 'record'} {problem}")


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON-like value with its path (a mapping's keys included)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str):
                yield f"{where} (the key)", key
            yield from _strings(item, where)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


def validate(record: Record, catalog: Catalog) -> Account:
    """The record as an `Account`, or `AdminError` with every problem, in catalog words."""
    doc = Document(file="request", data=None)
    accounts = read_accounts(doc, [record], catalog.plans, catalog.addons, catalog.features)
    if doc.problems:
        raise AdminError(
            "; ".join(f"{p.path.removeprefix('accounts[0].')}: {p.message}" for p in doc.problems)
        )
    return accounts[record["id"]]


def validate_stored(record: Record, catalog: Catalog) -> Account:
    """`validate` for an account the store holds (so not declared in the file): the plain
    shape most records have is read in one pass (`read_plain_account`), anything else by
    the catalog's reader, so the errors are the reader's either way."""
    account = read_plain_account(record, catalog.plans, catalog.addons, catalog.features)
    if account is None:
        account = replace(validate(record, catalog), declared=False)
    return account


def time_text(at: datetime | None) -> str | None:
    return None if at is None else ts(at)


def find_subscription(record: Record, subscription_id: str) -> dict[str, Any]:
    subs: list[dict[str, Any]] = record["subscriptions"]
    for sub in subs:
        if sub.get("id") == subscription_id:
            return sub
    known = ", ".join(s.get("id", "?") for s in record["subscriptions"]) or "none"
    raise NotFound(
        f"account {record['id']!r} has no subscription {subscription_id!r} (subscriptions: {known})"
    )


def edited(record: Record) -> Record:
    """A deep copy to edit, so a refused change leaves the live record untouched."""
    return copy.deepcopy(record)


def add_subscription(
    record: Record,
    plan: str,
    addons: Mapping[str, int],
    starts_at: datetime,
    ends_at: datetime | None,
    trial: tuple[datetime, str] | None,
    members: list[str],
    subscription_id: str,
    allow_repeat_trial: bool = False,
) -> tuple[Record, str]:
    """A new subscription; `trial` (end, then) is written ahead of time (design §6.1): `cancel`
    as the end, a plan as a phase from the trial's end, `continue` as nothing more."""
    rec = edited(record)
    sub_id = subscription_id or new_id("sub")
    if any(s.get("id") == sub_id for s in rec["subscriptions"]):
        raise AdminError(f"subscription id {sub_id!r} already exists on account {rec['id']!r}")
    if rec["id"] in members:
        raise AdminError(f"{rec['id']!r} owns the subscription; owners are not listed as members")
    sub: dict[str, Any] = {
        "id": sub_id,
        "plan": plan,
        "addons": dict(addons),
        "starts_at": time_text(starts_at),
        "members": list(members),
    }
    if ends_at is not None:
        sub["ends_at"] = time_text(ends_at)
    if trial is not None:
        earlier = next(
            (s for s in rec["subscriptions"] if s.get("plan") == plan and s.get("trial_ends_at")),
            None,
        )
        if earlier is not None and not allow_repeat_trial:
            raise Refused(
                f"account {rec['id']!r} already had a trial of plan {plan!r} (subscription "
                f"{earlier.get('id')!r}); set allow_repeat_trial to grant another"
            )
        trial_end, then = trial
        sub["trial_ends_at"] = time_text(trial_end)
        if then == "cancel" and (ends_at is None or trial_end < ends_at):
            sub["ends_at"] = time_text(trial_end)
        elif then not in ("cancel", "continue"):
            sub["phases"] = [
                {"starts_at": time_text(trial_end), "plan": then, "addons": dict(addons)}
            ]
    rec["subscriptions"].append(sub)
    return rec, sub_id


def schedule_change(
    record: Record,
    subscription_id: str,
    at: datetime,
    now: datetime,
    plan: str | None = None,
    addons: Mapping[str, int] | None = None,
) -> Record:
    """A plan or add-on change taking effect at `at` (design §6.1). A phase holds the whole
    (plan, add-ons) pair, so the part not changed is taken from what is in force at `at`;
    a phase at the same instant is replaced, later ones stay. A change at `now` edits what is
    in force now instead of adding a phase (the record stays as small as before phases)."""
    rec = edited(record)
    sub = find_subscription(rec, subscription_id)
    phases: list[dict[str, Any]] = list(sub.get("phases") or ())
    started = [p for p in phases if _time(p) <= now]
    if at <= now:
        current = started[-1] if started else sub
        if plan is not None:
            current["plan"] = plan
        if addons is not None:
            current["addons"] = dict(addons)
        return rec
    before = [p for p in phases if _time(p) < at]
    base = next((p for p in reversed(phases) if _time(p) <= at), sub)
    phase = {
        "starts_at": time_text(at),
        "plan": plan if plan is not None else base.get("plan"),
        "addons": dict(addons) if addons is not None else dict(base.get("addons") or {}),
    }
    later = [p for p in phases if _time(p) > at]
    sub["phases"] = [*before, phase, *later]
    return rec


def end_subscription(record: Record, subscription_id: str, at: datetime) -> Record:
    """`CancelSubscription`: the subscription ends at `at`; phases from then on go with it."""
    rec = edited(record)
    sub = find_subscription(rec, subscription_id)
    sub["ends_at"] = time_text(at)
    kept = [p for p in sub.get("phases") or () if _time(p) < at]
    if kept:
        sub["phases"] = kept
    else:
        sub.pop("phases", None)
    return rec


def cancel_scheduled_change(
    record: Record, subscription_id: str, now: datetime, at: datetime | None
) -> Record:
    """Removes the pending phase starting at `at`, or every pending phase; phases already in
    force are history and stay."""
    rec = edited(record)
    sub = find_subscription(rec, subscription_id)
    phases = list(sub.get("phases") or ())
    kept = [p for p in phases if _time(p) <= now or (at is not None and _time(p) != at)]
    if len(kept) == len(phases):
        pending = ", ".join(str(p.get("starts_at")) for p in phases if _time(p) > now)
        what = f"at {time_text(at)}" if at is not None else "pending"
        raise NotFound(
            f"subscription {subscription_id!r} has no scheduled change {what} "
            f"(pending: {pending or 'none'})"
        )
    if kept:
        sub["phases"] = kept
    else:
        sub.pop("phases", None)
    return rec


def resume_subscription(record: Record, subscription_id: str, now: datetime) -> Record:
    """Removes a pending end; an end already reached stays (create a new subscription)."""
    rec = edited(record)
    sub = find_subscription(rec, subscription_id)
    ends_at = parse_time(sub.get("ends_at"))
    if ends_at is None:
        raise AdminError(f"subscription {subscription_id!r} has no scheduled end to remove")
    if ends_at <= now:
        raise AdminError(
            f"subscription {subscription_id!r} ended at {time_text(ends_at)}; "
            "create a new subscription instead"
        )
    del sub["ends_at"]
    return rec


def extend_trial(record: Record, subscription_id: str, until: datetime, now: datetime) -> Record:
    """A running trial ends later (design §12.1): what was written for its end moves with it
    — the phase that starts then (the `then` plan) or the end (`then: cancel`)."""
    rec = edited(record)
    sub = find_subscription(rec, subscription_id)
    old = parse_time(sub.get("trial_ends_at"))
    if old is None or old <= now:
        raise AdminError(f"subscription {subscription_id!r} has no running trial to extend")
    if until <= old:
        raise AdminError(
            f"the trial already ends at {time_text(old)}; give a later instant to extend it"
        )
    if any(old < _time(p) <= until for p in sub.get("phases") or ()):
        raise AdminError(
            f"subscription {subscription_id!r} has a change scheduled before {time_text(until)}; "
            "cancel it first"
        )
    sub["trial_ends_at"] = time_text(until)
    for phase in sub.get("phases") or ():
        if _time(phase) == old:
            phase["starts_at"] = time_text(until)
    if parse_time(sub.get("ends_at")) == old:
        sub["ends_at"] = time_text(until)
    return rec


def _time(phase: Mapping[str, Any]) -> datetime:
    """A stored phase's start (validated on the way in, so it parses)."""
    at = parse_time(phase.get("starts_at"))
    assert at is not None
    return at


def set_members(record: Record, subscription_id: str, member: str, add: bool) -> Record:
    if not member:
        raise AdminError("member_id is required")
    if member == record["id"]:
        raise AdminError(f"{member!r} owns the subscription; owners are not listed as members")
    rec = edited(record)
    sub = find_subscription(rec, subscription_id)
    members = list(sub.get("members", []))
    if add and member not in members:
        members.append(member)
    elif not add:
        if member not in members:
            raise NotFound(f"{member!r} is not a member of subscription {subscription_id!r}")
        members.remove(member)
    sub["members"] = members
    return rec


def set_override(record: Record, feature: str, value: Any, expires_at: datetime | None) -> Record:
    rec = edited(record)
    rec["overrides"][feature] = {"value": value, "expires_at": time_text(expires_at)}
    return rec


def clear_override(record: Record, feature: str) -> Record:
    if feature not in record.get("overrides", {}):
        raise NotFound(f"account {record['id']!r} has no override for {feature!r}")
    rec = edited(record)
    del rec["overrides"][feature]
    return rec


def add_grant(
    record: Record,
    feature: str,
    value: Any,
    starts_at: datetime | None,
    ends_at: datetime | None,
    grant_id: str,
) -> tuple[Record, str]:
    rec = edited(record)
    gid = grant_id or new_id("grant")
    if any(g.get("id") == gid for g in rec["grants"]):
        raise AdminError(f"grant id {gid!r} already exists on account {rec['id']!r}")
    grant: dict[str, Any] = {"id": gid, "feature": feature, "value": value}
    if starts_at is not None:
        grant["starts_at"] = time_text(starts_at)
    if ends_at is not None:
        grant["ends_at"] = time_text(ends_at)
    rec["grants"].append(grant)
    return rec, gid


def remove_grant(record: Record, grant_id: str) -> Record:
    rec = edited(record)
    kept = [g for g in rec["grants"] if g.get("id") != grant_id]
    if len(kept) == len(rec["grants"]):
        raise NotFound(f"account {record['id']!r} has no grant {grant_id!r}")
    rec["grants"] = kept
    return rec


def add_topup(
    record: Record,
    feature: str,
    amount: float,
    priority: int,
    effective_at: datetime | None,
    expires_at: datetime | None,
    topup_id: str,
) -> tuple[Record, str]:
    """A top-up (design §5.1) appended to the record; the catalog's rules then check it."""
    rec = edited(record)
    tid = topup_id or new_id("topup")
    topups = rec.setdefault("topups", [])
    if any(t.get("id") == tid for t in topups):
        raise AdminError(f"top-up id {tid!r} already exists on account {rec['id']!r}")
    topup: dict[str, Any] = {"id": tid, "feature": feature, "amount": amount, "priority": priority}
    if effective_at is not None:
        topup["effective_at"] = time_text(effective_at)
    if expires_at is not None:
        topup["expires_at"] = time_text(expires_at)
    topups.append(topup)
    return rec, tid


def void_topup(record: Record, topup_id: str, at: datetime) -> Record:
    """End a top-up's remainder at `at`; what it burned stays burned (and listed)."""
    rec = edited(record)
    for topup in rec.get("topups") or ():
        if topup.get("id") == topup_id:
            if topup.get("voided_at") is not None:
                raise AdminError(f"top-up {topup_id!r} is already voided")
            topup["voided_at"] = time_text(at)
            return rec
    raise NotFound(f"account {record['id']!r} has no top-up {topup_id!r}")
