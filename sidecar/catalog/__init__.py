"""The pricing catalog as code: parsing, validation and the immutable model."""

from .build import load_catalog, parse_catalog
from .model import (
    UNLIMITED,
    Account,
    AddOn,
    Aggregation,
    Anchor,
    Catalog,
    Entitlement,
    Feature,
    FeatureType,
    Grant,
    MeteredLimit,
    Override,
    Plan,
    Reset,
    Scope,
    Subscription,
)
from .source import CatalogError, Problem

__all__ = [
    "UNLIMITED",
    "Account",
    "AddOn",
    "Aggregation",
    "Anchor",
    "Catalog",
    "CatalogError",
    "Entitlement",
    "Feature",
    "FeatureType",
    "Grant",
    "MeteredLimit",
    "Override",
    "Plan",
    "Problem",
    "Reset",
    "Scope",
    "Subscription",
    "load_catalog",
    "parse_catalog",
]
