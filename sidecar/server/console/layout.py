"""The page shell every console page shares: head, inline style, navigation, who is signed in.

Everything is inline (design §12: no CDN, works offline): one small stylesheet, no script.
"""

from __future__ import annotations

from dataclasses import dataclass

from .html import Child, Html, el, trusted

BASE = "/console"

STYLE = trusted(
    """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d2b3a;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:center}
header a{color:#cfe3ff;text-decoration:none}header a:hover{text-decoration:underline}
header .who{margin-left:auto;display:flex;gap:.6em;align-items:center}
header .badge{color:#1d232a}
header form{margin:0}
main{padding:1em 1.5em;max-width:1200px}
h1{font-size:1.5em;margin:.3em 0 .6em}h2{font-size:1.2em;margin:1.4em 0 .5em}
h3{font-size:1.05em;margin:1em 0 .4em}
table{border-collapse:collapse;background:#fff;margin:.4em 0 1em}
th,td{border:1px solid #d5dae1;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#66707c}.badge{display:inline-block;padding:0 .45em;border-radius:.6em;
background:#e4e8ee;font-size:.85em}
.ok{background:#dcf3e3}.bad{background:#fde2e0}.warn{background:#fff1cc}
.banner{padding:.6em 1em;border-radius:4px;margin:.6em 0}
.banner.bad{border:1px solid #e6a19b}.banner.ok{border:1px solid #9bd3ac}
pre{background:#fff;border:1px solid #d5dae1;padding:.6em;overflow:auto;white-space:pre-wrap}
form.inline{display:inline}
fieldset{border:1px solid #d5dae1;background:#fff;margin:.6em 0;padding:.6em 1em}
input,select,button{font:inherit}
.meter text{font-size:11px}
nav.pages{margin:.6em 0}
"""
)


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


def link(path: str, label: Child, **attrs: str) -> Html:
    return el("a", label, href=f"{BASE}{path}", **attrs)


def csrf_field(viewer: Viewer) -> Html:
    return el("input", type="hidden", name="csrf", value=viewer.csrf)


def page(title: str, viewer: Viewer, *body: Child, notice: str = "", error: str = "") -> Html:
    who: Child
    if viewer.name is not None:
        who = [
            el("span", "signed in as ", el("b", viewer.name)),
            el(
                "form",
                csrf_field(viewer),
                el("button", "Sign out", type="submit"),
                method="post",
                action=f"{BASE}/logout",
            ),
        ]
    elif viewer.actions:
        who = link("/login", "Sign in")
    else:
        who = el("span", "read-only (no --token-file)", class_="badge")
    header = el(
        "header",
        el("b", "PlanGate console"),
        link("/", "Overview"),
        link("/catalog", "Catalog"),
        link("/accounts", "Accounts"),
        link("/deliveries", "Deliveries"),
        link("/audit", "Audit log"),
        el("span", who, class_="who"),
    )
    notice, error = notice or viewer.notice, error or viewer.error
    banners = [
        el("div", notice, class_="banner ok", role="status") if notice else None,
        el("div", error, class_="banner bad", role="alert") if error else None,
    ]
    doc = el(
        "html",
        el(
            "head",
            el("meta", charset="utf-8"),
            el("meta", name="viewport", content="width=device-width, initial-scale=1"),
            el("title", f"{title} · PlanGate"),
            el("style", STYLE),
        ),
        el("body", header, el("main", el("h1", title), banners, *body)),
        lang="en",
    )
    return Html("<!doctype html>\n" + doc)
