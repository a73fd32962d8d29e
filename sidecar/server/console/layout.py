"""Who looks at a console page, and the paths the pages link to.

The page shell itself (head, inline style, navigation, who is signed in) is
`templates/base.html`; everything is inline (design §12: no CDN, works offline), no script.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

BASE = "/console"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who looks at the page: the signed-in token name (None: nobody), the form's CSRF token,
    and whether the console can act at all (a token file is configured)."""

    name: str | None
    csrf: str
    actions: bool
    notice: str = ""  # what the last action said (shown once)
    error: str = ""

    @property
    def can_act(self) -> bool:
        return self.actions and self.name is not None


def account_path(account_id: str, **query: str) -> str:
    path = f"/accounts/{quote(account_id, safe='')}"
    return f"{path}?{urlencode(query)}" if query else path
