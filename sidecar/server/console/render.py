"""The console's Jinja2 environment (decision 1210): templates under `templates/`, shipped as
package data, with autoescaping on for every template and undefined names as errors.

Account names, attribute values, override values and error messages are user input; with
autoescape every `{{ value }}` is escaped unless the value is already `Markup` (what a macro or
a `|safe`-free include returns), so forgetting to escape is not possible. `StrictUndefined`
turns a misspelt name into an error in the tests instead of an empty cell on a page.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined

from .format import entitlement, number, plain
from .layout import BASE, account_path

ENV = Environment(
    loader=PackageLoader(__package__ or "plangate.sidecar.server.console", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)
ENV.globals.update(BASE=BASE, account_path=account_path, urlencode=urlencode)
ENV.filters.update(
    number=number,
    plain=plain,
    entitlement=entitlement,
    tojson_pretty=lambda v: json.dumps(v, indent=1, sort_keys=True, default=str),
)

# Compile every template now, at start-up: a first compile costs tens of milliseconds, and the
# small pages (sign-in, refusals) are rendered on the event loop, which nothing may block.
for _name in ENV.list_templates():
    ENV.get_template(_name)


def render(template: str, **context: Any) -> str:
    """One page (or fragment) as HTML text."""
    return ENV.get_template(template).render(**context)
