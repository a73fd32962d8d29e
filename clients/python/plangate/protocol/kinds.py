"""Which OpenFeature types each feature type resolves as (design §4 table), by name.

Shared by the sidecar's typed resolution (`sidecar/engine/typed.py`) and the provider, which
checks it for an answer that carries no value (the caller's default, decision 2002), so the
table is written once.
"""

from __future__ import annotations

KINDS_OF: dict[str, frozenset[str]] = {
    "boolean": frozenset({"boolean", "object"}),
    "flag": frozenset({"boolean", "object"}),
    "integer": frozenset({"integer", "float", "object"}),
    "float": frozenset({"float", "object"}),
    "string": frozenset({"string", "object"}),
    "list": frozenset({"object"}),
    "object": frozenset({"object"}),
    "metered": frozenset({"boolean", "integer", "float", "object"}),
    "credits": frozenset({"boolean", "integer", "float", "object"}),
    "rate": frozenset({"boolean", "integer", "float", "object"}),  # like metered (design §17)
}
