"""Reading a plan's `quotas:` (design §7): thresholds on metered features and their actions.

Called by the catalog builder once every plan is known, since a `change_plan` action may
name any plan and an `override` any feature of the product.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .features import read_entitlement
from .model import Feature, Plan, Quota, QuotaAction, Threshold
from .source import Document, Path
from .values import check_keys, is_number, read_list, read_mapping, read_str

FindFeature = Callable[[Any, Path], Feature | None]
"""Resolve a feature reference written at a path in the product's scope (reports a problem if unknown)."""


def read_quotas(
    doc: Document,
    path: Path,
    raw: Any,
    plan: Plan,
    find_feature: FindFeature,
    plan_refs: Mapping[str, str],
) -> tuple[Quota, ...]:
    """The quotas of `plan`; `plan_refs` maps every way to name a plan to its key."""
    out: list[Quota] = []
    for i, qraw in enumerate(read_list(doc, path, raw)):
        qpath = (*path, i)
        data = read_mapping(doc, qpath, qraw)
        check_keys(doc, qpath, data, {"feature", "at", "actions"})
        feature = find_feature(data.get("feature"), (*qpath, "feature"))
        if feature is None:
            continue
        if not feature.counted:
            doc.error(
                (*qpath, "feature"),
                f"quotas apply to metered features; {feature.key} is {feature.type.value}",
            )
            continue
        if feature.key not in plan.entitlements:
            doc.error((*qpath, "feature"), f"plan {plan.key!r} has no limit for {feature.key}")
            continue
        thresholds = [
            _threshold(doc, (*qpath, "at", j), t)
            for j, t in enumerate(read_list(doc, (*qpath, "at"), data.get("at")))
        ]
        if not thresholds:
            doc.error((*qpath, "at"), "needs at least one threshold, e.g. [80%, 100%] or [5000]")
        actions = [
            _action(doc, (*qpath, "actions", j), a, find_feature, plan_refs)
            for j, a in enumerate(read_list(doc, (*qpath, "actions"), data.get("actions")))
        ]
        out.append(
            Quota(
                feature.key,
                tuple(t for t in thresholds if t is not None),
                tuple(a for a in actions if a is not None),
            )
        )
    return tuple(out)


def _threshold(doc: Document, path: Path, raw: Any) -> Threshold | None:
    if isinstance(raw, str) and raw.endswith("%"):
        try:
            percent = float(raw[:-1])
        except ValueError:
            percent = -1
        if percent > 0:
            return Threshold(percent=percent)
    elif is_number(raw) and raw > 0:
        return Threshold(amount=float(raw))
    doc.error(path, f'a threshold is a percentage like "80%" or a positive number, got {raw!r}')
    return None


def _action(
    doc: Document,
    path: Path,
    raw: Any,
    find_feature: FindFeature,
    plan_refs: Mapping[str, str],
) -> QuotaAction | None:
    data = read_mapping(doc, path, raw)
    kinds = [k for k in ("webhook", "override", "change_plan") if k in data]
    if len(kinds) != 1:
        doc.error(
            path,
            "an action is exactly one of `webhook: URL`, `override: {feature, value}`, `change_plan: PLAN`",
        )
        return None
    kind = kinds[0]
    if kind == "webhook":
        check_keys(doc, path, data, {"webhook", "secret_env", "secret_file"})
        url = read_str(doc, (*path, "webhook"), data["webhook"])
        if url is None:
            return None
        if not url.startswith(("http://", "https://")):
            doc.error((*path, "webhook"), f"must be an http:// or https:// URL, got {url!r}")
            return None
        return QuotaAction(
            "webhook",
            target=url,
            secret_env=str(data.get("secret_env") or ""),
            secret_file=str(data.get("secret_file") or ""),
        )
    if kind == "change_plan":
        check_keys(doc, path, data, {"change_plan"})
        target = data["change_plan"]
        if not isinstance(target, str) or target not in plan_refs:
            doc.error((*path, "change_plan"), f"unknown plan {target!r}")
            return None
        return QuotaAction("change_plan", target=plan_refs[target])
    check_keys(doc, path, data, {"override"})
    spec = read_mapping(doc, (*path, "override"), data["override"])
    check_keys(doc, (*path, "override"), spec, {"feature", "value"})
    feature = find_feature(spec.get("feature"), (*path, "override", "feature"))
    if feature is None:
        return None
    value = read_entitlement(doc, (*path, "override", "value"), spec.get("value"), feature)
    if value is None:
        return None
    return QuotaAction("override", feature=feature.key, value=value)
