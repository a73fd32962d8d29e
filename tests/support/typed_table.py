"""The design §4 typed-resolution table as test data: one feature of every type, and which
kinds each resolves as. Shared by the engine's and the wire conversion's unit tests."""

from __future__ import annotations

from datetime import UTC, datetime

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
JUNE = datetime(2026, 6, 1, tzinfo=UTC)

CATALOG = """\
products:
  - name: Acme
    features:
      - {name: SSO, type: boolean}
      - {name: Beta, type: flag}
      - {name: Concurrency, type: integer, infinite: 9999}
      - {name: Tier, type: string}
      - {name: Integrations, type: list}
      - {name: Theme, type: object}
      - {name: Calls, type: metered, reset: monthly, anchor: calendar}
    plans:
      - name: Pro
        entitlements:
          sso: true
          beta: true
          concurrency: 10
          tier: email
          integrations: [slack, github]
          theme: {accent: green, logo: {size: 3}}
          calls: 100
      - name: Max
        entitlements: {concurrency: unlimited, calls: unlimited}
accounts:
  - {id: pro, subscriptions: [{plan: pro}]}
  - {id: max, subscriptions: [{plan: max}]}
"""

# design §4: feature type -> kind -> what the resolution returns
TABLE = {
    "sso": {"boolean": "value", "object": "detail"},
    "beta": {"boolean": "value", "object": "detail"},
    "concurrency": {"integer": "value", "float": "value", "object": "detail"},
    "tier": {"string": "value", "object": "detail"},
    "integrations": {"object": "value"},
    "theme": {"object": "value"},
    "calls": {
        "boolean": "has_access",
        "integer": "remaining",
        "float": "remaining",
        "object": "detail",
    },
}
