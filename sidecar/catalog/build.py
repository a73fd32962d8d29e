"""Turning a parsed catalog document into a validated `Catalog`.

All problems in a file are collected before failing, so a person fixes a file in one pass.
References (extends, requires, feature keys, plans of subscriptions) are resolved here, so
the engine never meets a dangling name.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path as FsPath
from types import MappingProxyType
from typing import Any

from .accounts import read_accounts
from .connections import read_connections
from .features import read_entitlement, read_feature, read_metadata
from .meters import by_problem, check_meter_use, read_meters
from .model import (
    AddOn,
    Aggregation,
    Catalog,
    Entitlement,
    Feature,
    FeatureType,
    Meter,
    Plan,
    Price,
    Product,
    Quota,
    Trial,
)
from .quotas import read_quotas
from .source import (
    DEFAULT_MAX_BYTES,
    CatalogError,
    Document,
    Path,
    Problem,
    collector_paused,
    parse,
    read_text,
    version_of,
)
from .targeting import Evaluator, read_evaluators
from .values import check_keys, is_number, read_list, read_mapping, read_str, slugify
from .webhooks import read_webhooks

_TOP = {"products", "accounts", "evaluators", "webhooks", "meters", "connections"}
NOT_A_CATALOG = (
    "not a PlanGate catalog: a catalog is a mapping with `products:` (and optionally "
    "`accounts:`, `evaluators:`, `webhooks:`, `meters:`); nothing of this file is quoted, in case the "
    "path leads to some other file: check where it points"
)
"""The one problem of a file with none of the catalog's keys. It quotes no key or value: the
path may be a symlink to a secret, and the problem reaches `/readyz`, the console and the log."""
_PRODUCT = {"name", "slug", "description", "features", "plans", "addons", "metadata"}
_PLAN = {
    "name",
    "slug",
    "description",
    "extends",
    "price",
    "entitlements",
    "quotas",
    "trial",
    "superseded_by",
}
_ADDON = {"name", "slug", "description", "requires", "max_quantity", "entitlements"}


def load_catalog(file: str | FsPath, max_bytes: int = DEFAULT_MAX_BYTES) -> Catalog:
    """Read and validate a catalog file; raises `CatalogError` naming file, line and path.

    The same bounds (a regular file of at most `max_bytes`, limited nesting and aliases)
    hold at start-up, on every reload and in `plangate validate`."""
    return parse_catalog(read_text(file, max_bytes), str(file))


def parse_catalog(
    text: str, file: str = "catalog.yaml", stop: threading.Event | None = None
) -> Catalog:
    """Validate catalog text; raises `CatalogError`, or `source.Stopped` once `stop` is set
    (the catalog watcher's: a stopping sidecar does not wait for a large file)."""
    with collector_paused():
        doc = parse(text, file, stop)
        data = doc.data
        if not isinstance(data, dict) or (data and not _TOP.intersection(map(str, data))):
            raise CatalogError([Problem(file, 1, "(document)", NOT_A_CATALOG)])
        catalog = _Builder(doc).build(version_of(text))
    if doc.problems:
        raise CatalogError(sorted(doc.problems, key=lambda p: p.line))
    return catalog


def check_successor(served: Catalog, new: Catalog) -> None:
    """Refuse a reload that drops the whole `accounts:` section while accounts are declared.

    A file cut short (a writer that died, a full disk) is often still valid YAML, and the
    section at the end of a catalog is the one lost: served, every declared account would
    lose its subscriptions at once. Removing them all on purpose is written `accounts: []`
    (docs/decisions/1321-a-cut-catalog-keeps-its-accounts.md)."""
    if served.accounts and not new.has_accounts_key:
        raise CatalogError(
            [
                Problem(
                    new.source,
                    1,
                    "accounts",
                    f"the file has no `accounts:` section, but the served catalog declares "
                    f"{len(served.accounts)} accounts: was the file cut short while written? "
                    "To remove every declared account, write `accounts: []`",
                )
            ]
        )


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.products: dict[str, Product] = {}
        self.features: dict[str, Feature] = {}
        self.product_features: dict[str, dict[str, Feature]] = {}
        self.feature_paths: dict[tuple[str, str], Path] = {}  # (product, slug) -> where declared
        self.plans: dict[str, Plan] = {}
        self.addons: dict[str, AddOn] = {}
        self.evaluators: Mapping[str, Evaluator] = {}
        self.meters: Mapping[str, Meter] = {}

    def build(self, version: str) -> Catalog:
        doc = self.doc
        root = doc.data
        check_keys(doc, (), root, _TOP)
        self.evaluators = read_evaluators(doc, root.get("evaluators"))
        self.meters = read_meters(doc, root.get("meters"))
        products = [
            (i, read_mapping(doc, ("products", i), p))
            for i, p in enumerate(read_list(doc, ("products",), root.get("products")))
        ]
        for i, data in products:
            self._product_features(("products", i), data)
        self._qualify_shared_slugs()
        self._resolve_pools()
        self._resolve_meters()
        self._require_features(root, products)
        raw_plans = self._collect(products, "plans", _PLAN)
        raw_addons = self._collect(products, "addons", _ADDON)
        self._plans(raw_plans)
        self._addons(raw_addons)
        accounts = read_accounts(doc, root.get("accounts"), self.plans, self.addons, self.features)
        return Catalog(
            version=version,
            source=doc.file,
            products=MappingProxyType(self.products),
            features=MappingProxyType(self.features),
            plans=MappingProxyType(self.plans),
            addons=MappingProxyType(self.addons),
            accounts=MappingProxyType(accounts),
            webhooks=read_webhooks(doc, root.get("webhooks")),
            has_accounts_key="accounts" in root,
            meters=self.meters,
            stripe=read_connections(
                doc, root.get("connections"), self.plans, self.addons, self.features
            ),
            warnings=tuple(str(w) for w in sorted(doc.warnings, key=lambda p: p.line)),
        )

    # -- products and features -------------------------------------------------------------

    def _require_features(self, root: dict[str, Any], products: list[Any]) -> None:
        """A catalog without a product or without a feature is refused: served, it would
        answer FLAG_NOT_FOUND for every flag. An empty file is what `cp` and many editors
        leave for a moment before writing, and an empty list what a file cut short leaves."""
        where: Path = ("products",) if "products" in root else ()
        if not products and not self.doc.problems:
            self.doc.error(
                where,
                "the catalog declares no products; it needs at least one product with a "
                "feature (an empty catalog would answer FLAG_NOT_FOUND for every flag)",
            )
        elif not self.features and not self.doc.problems:
            self.doc.error(
                where,
                "the catalog declares no features; it needs at least one "
                "(an empty catalog would answer FLAG_NOT_FOUND for every flag)",
            )

    def _product_features(self, path: Path, data: dict[str, Any]) -> None:
        doc = self.doc
        check_keys(doc, path, data, _PRODUCT)
        name = read_str(doc, (*path, "name"), data.get("name"))
        if name is None:
            return
        slug = slugify(str(data.get("slug") or name))
        if slug in self.products:
            doc.error((*path, "name"), f"product slug {slug!r} is already used by another product")
            return
        product_metadata = read_metadata(doc, (*path, "metadata"), data.get("metadata"))
        self.products[slug] = Product(slug, name, product_metadata)
        by_slug: dict[str, Feature] = {}
        for j, raw in enumerate(read_list(doc, (*path, "features"), data.get("features"))):
            fpath = (*path, "features", j)
            feature = read_feature(
                doc, fpath, read_mapping(doc, fpath, raw), slug, self.evaluators, product_metadata
            )
            if feature is None:
                continue
            if feature.slug in by_slug:
                doc.error(
                    (*fpath, "name"),
                    f"feature slug {feature.slug!r} is already used in product {slug!r}; "
                    "slugs are unique within a product (rename it or set `slug:`)",
                )
                continue
            by_slug[feature.slug] = feature
            self.feature_paths[(slug, feature.slug)] = fpath
        self.product_features[slug] = by_slug

    def _qualify_shared_slugs(self) -> None:
        """A slug shared by two products is addressed as `product/slug` (design §3)."""
        counts: dict[str, int] = {}
        for by_slug in self.product_features.values():
            for s in by_slug:
                counts[s] = counts.get(s, 0) + 1
        for product, by_slug in self.product_features.items():
            for s, feature in list(by_slug.items()):
                if counts[s] > 1:
                    feature = _with_key(feature, f"{product}/{s}")
                    by_slug[s] = feature
                self.features[feature.key] = feature

    def _resolve_pools(self) -> None:
        """`credits: {pool}` references resolved to the pool's key (design §5.1): the pool must
        be a `credits` feature, and only `sum` features draw on one (a distinct count or a
        gauge has no amount to price)."""
        for key, feature in list(self.features.items()):
            price = feature.credits
            if price is None:
                continue
            path: Path = (*self.feature_paths[(feature.product, feature.slug)], "credits")
            by_slug = self.product_features.get(feature.product, {})
            pool = by_slug.get(price.pool) or self.features.get(price.pool)
            problem = None
            if pool is None:
                known = ", ".join(
                    sorted(f.key for f in self.features.values() if f.type is FeatureType.CREDITS)
                )
                problem = (
                    "pool",
                    f"unknown pool {price.pool!r} (credits features: {known or 'none'})",
                )
            elif pool.type is not FeatureType.CREDITS:
                problem = (
                    "pool",
                    f"pool {pool.key!r} is a {pool.type.value} feature; a pool must be a "
                    "`credits` feature",
                )
            elif feature.aggregation is not Aggregation.SUM:
                problem = (
                    "credits",
                    f"{feature.key} aggregates by {feature.aggregation.value}; only `sum` "
                    "features can be priced in credits",
                )
            if problem is not None:
                where, message = problem
                self.doc.error(path if where == "credits" else (*path, where), message)
                resolved = replace(feature, credits=None)
            else:
                assert pool is not None
                resolved = replace(feature, credits=replace(price, pool=pool.key))
            self.features[key] = resolved
            by_slug[feature.slug] = resolved

    def _resolve_meters(self) -> None:
        """Each feature's `meter:` checked against the declared meters, and each meter's
        `event_type` against the feature keys: a tracking name must mean one thing (design
        §16) — a usage report of that feature or an event, never both."""
        for key, feature in list(self.features.items()):
            where = self.feature_paths[(feature.product, feature.slug)]
            by = feature.credits.by if feature.credits is not None else None
            use = feature.meter
            if by is not None:
                problem = by_problem(by, None if use is None else self.meters.get(use.key))
                if problem:
                    self.doc.error((*where, "credits", "by"), problem)
            if use is None:
                continue
            path: Path = (*where, "meter")
            unique = feature.aggregation is Aggregation.UNIQUE
            if not check_meter_use(self.doc, path, use, self.meters, unique):
                resolved = replace(feature, meter=None)
                self.features[key] = resolved
                self.product_features[feature.product][feature.slug] = resolved
        raw = self.doc.data.get("meters")
        for i, item in enumerate(raw if isinstance(raw, list) else []):
            event_type = item.get("event_type") if isinstance(item, dict) else None
            if isinstance(event_type, str) and event_type in self.features:
                self.doc.error(
                    ("meters", i, "event_type"),
                    f"{event_type!r} is also a feature key; a tracking name must mean one "
                    "thing (a usage report of the feature or an event): rename the event type",
                )

    def _find_feature(self, product: str, ref: Any, path: Path) -> Feature | None:
        if isinstance(ref, str):
            found = self.product_features.get(product, {}).get(ref) or self.features.get(ref)
            if found is not None:
                return found
        known = ", ".join(sorted(f.key for f in self.product_features.get(product, {}).values()))
        self.doc.error(path, f"unknown feature {ref!r} (features of product {product!r}: {known})")
        return None

    def _entitlements(self, product: str, path: Path, raw: Any) -> dict[str, Entitlement]:
        out: dict[str, Entitlement] = {}
        for ref, value in read_mapping(self.doc, path, raw).items():
            feature = self._find_feature(product, ref, (*path, ref))
            if feature is None:
                continue
            parsed = read_entitlement(self.doc, (*path, ref), value, feature)
            if parsed is not None:
                out[feature.key] = parsed
        return out

    # -- plans and add-ons -----------------------------------------------------------------

    def _collect(
        self, products: list[tuple[int, dict[str, Any]]], kind: str, allowed: set[str]
    ) -> list[tuple[Path, str, str, dict[str, Any]]]:
        """(path, product, slug, data) for each plan/add-on, with slugs checked for clashes."""
        doc = self.doc
        out: list[tuple[Path, str, str, dict[str, Any]]] = []
        seen: set[tuple[str, str]] = set()
        for i, pdata in products:
            product = slugify(str(pdata.get("slug") or pdata.get("name") or ""))
            if product not in self.products:
                continue
            for j, raw in enumerate(read_list(doc, ("products", i, kind), pdata.get(kind))):
                path: Path = ("products", i, kind, j)
                data = read_mapping(doc, path, raw)
                check_keys(doc, path, data, allowed)
                name = read_str(doc, (*path, "name"), data.get("name"))
                if name is None:
                    continue
                slug = slugify(str(data.get("slug") or name))
                if (product, slug) in seen:
                    doc.error(
                        (*path, "name"),
                        f"{kind[:-1]} slug {slug!r} is already used in product {product!r}",
                    )
                    continue
                seen.add((product, slug))
                out.append((path, product, slug, data))
        return out

    @staticmethod
    def _keys(items: list[tuple[Path, str, str, dict[str, Any]]]) -> dict[tuple[str, str], str]:
        counts: dict[str, int] = {}
        for _, _, slug, _ in items:
            counts[slug] = counts.get(slug, 0) + 1
        return {(p, s): (s if counts[s] == 1 else f"{p}/{s}") for _, p, s, _ in items}

    def _plans(self, items: list[tuple[Path, str, str, dict[str, Any]]]) -> None:
        doc = self.doc
        keys = self._keys(items)
        by_key = {keys[(p, s)]: (path, p, s, d) for path, p, s, d in items}
        own: dict[str, dict[str, Entitlement]] = {}
        parents: dict[str, str | None] = {}
        for key, (path, product, _slug, data) in by_key.items():
            own[key] = self._entitlements(
                product, (*path, "entitlements"), data.get("entitlements")
            )
            parent = data.get("extends")
            if parent is None:
                parents[key] = None
                continue
            parent_key = keys.get((product, slugify(str(parent)))) or (
                parent if parent in by_key else None
            )
            if parent_key is None:
                doc.error(
                    (*path, "extends"),
                    f"unknown plan {parent!r} (plans: {', '.join(sorted(by_key))})",
                )
            parents[key] = parent_key
        for key, (path, product, slug, data) in by_key.items():
            chain = self._chain(key, parents, (*path, "extends"))
            merged: dict[str, Entitlement] = {}
            for ancestor in reversed(chain):
                merged.update(own[ancestor])
            self.plans[key] = Plan(
                key=key,
                slug=slug,
                name=str(data["name"]),
                product=product,
                extends=parents[key],
                own=MappingProxyType(own[key]),
                entitlements=MappingProxyType(merged),
                price=self._price((*path, "price"), data.get("price")),
            )
        plan_refs = self._all_plan_refs()
        for key, (path, product, _, data) in by_key.items():
            quotas = read_quotas(
                self.doc,
                (*path, "quotas"),
                data.get("quotas"),
                self.plans[key],
                partial(self._find_feature, product),
                plan_refs,
            )
            if quotas:
                self.plans[key] = _with_quotas(self.plans[key], quotas)
            trial = self._trial((*path, "trial"), data.get("trial"), product, plan_refs)
            if trial is not None:
                self.plans[key] = replace(self.plans[key], trial=trial)
            successor = data.get("superseded_by")
            if successor is not None:
                target = plan_refs.get(successor) if isinstance(successor, str) else None
                if target is None or target == key or self.plans[target].product != product:
                    self.doc.error(
                        (*path, "superseded_by"),
                        f"must name another plan of product {product!r}, got {successor!r}",
                    )
                else:
                    self.plans[key] = replace(self.plans[key], superseded_by=target)

    def _trial(self, path: Path, raw: Any, product: str, plan_refs: dict[str, str]) -> Trial | None:
        """`trial: {days, then}` (design §6.1); `then` names a plan of the same product."""
        if raw is None:
            return None
        data = read_mapping(self.doc, path, raw)
        check_keys(self.doc, path, data, {"days", "then"})
        days = data.get("days")
        if not isinstance(days, int) or isinstance(days, bool) or days < 1:
            self.doc.error((*path, "days"), f"must be a whole number of days >= 1, got {days!r}")
            return None
        then = data.get("then", "continue")
        if then in ("continue", "cancel"):
            return Trial(days, then)
        target = plan_refs.get(then) if isinstance(then, str) else None
        if target is None or self.plans[target].product != product:
            self.doc.error(
                (*path, "then"),
                f"must be continue, cancel or a plan of product {product!r}, got {then!r}",
            )
            return None
        return Trial(days, target)

    def _chain(self, key: str, parents: dict[str, str | None], path: Path) -> list[str]:
        chain = [key]
        parent = parents.get(key)
        while parent is not None:
            if parent in chain:
                cycle = " -> ".join([*chain, parent])
                self.doc.error(path, f"plans extend each other in a cycle: {cycle}")
                return chain
            chain.append(parent)
            parent = parents.get(parent)
        return chain

    def _price(self, path: Path, raw: Any) -> Price | None:
        if raw is None:
            return None
        data = read_mapping(self.doc, path, raw)
        check_keys(self.doc, path, data, {"amount", "currency", "interval"})
        if not is_number(data.get("amount")) or data["amount"] < 0:
            self.doc.error((*path, "amount"), "must be a non-negative number")
            return None
        return Price(
            float(data["amount"]),
            str(data.get("currency", "USD")),
            str(data.get("interval", "month")),
        )

    def _all_plan_refs(self) -> dict[str, str]:
        refs = {key: key for key in self.plans}
        refs.update(
            {
                plan.slug: key
                for key, plan in self.plans.items()
                if key != plan.slug and plan.slug not in refs
            }
        )
        return refs

    def _addons(self, items: list[tuple[Path, str, str, dict[str, Any]]]) -> None:
        doc = self.doc
        keys = self._keys(items)
        plan_refs = self._all_plan_refs()
        for path, product, slug, data in items:
            requires: set[str] = set()
            for j, ref in enumerate(read_list(doc, (*path, "requires"), data.get("requires"))):
                plan_key = plan_refs.get(f"{product}/{ref}") or plan_refs.get(str(ref))
                if plan_key is None:
                    doc.error(
                        (*path, "requires", j),
                        f"unknown plan {ref!r} (plans: {', '.join(sorted(self.plans))})",
                    )
                else:
                    requires.add(plan_key)
            max_quantity = data.get("max_quantity", 1)
            if (
                not isinstance(max_quantity, int)
                or isinstance(max_quantity, bool)
                or max_quantity < 1
            ):
                doc.error(
                    (*path, "max_quantity"), f"must be a positive integer, got {max_quantity!r}"
                )
                max_quantity = 1
            key = keys[(product, slug)]
            self.addons[key] = AddOn(
                key=key,
                slug=slug,
                name=str(data["name"]),
                product=product,
                requires=frozenset(requires),
                max_quantity=max_quantity,
                entitlements=MappingProxyType(
                    self._entitlements(product, (*path, "entitlements"), data.get("entitlements"))
                ),
            )


def _with_key(feature: Feature, key: str) -> Feature:
    return replace(feature, key=key)


def _with_quotas(plan: Plan, quotas: tuple[Quota, ...]) -> Plan:
    return replace(plan, quotas=quotas)
