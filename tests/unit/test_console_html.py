"""The console's templates escape every value a page shows (decision 1210): text, attribute
values and the labels of inline pictures; a misspelt name is an error, never an empty cell."""

from __future__ import annotations

import pytest
from jinja2 import UndefinedError
from plangate.sidecar.server.console.layout import Viewer
from plangate.sidecar.server.console.other_pages import login_page, message_page
from plangate.sidecar.server.console.render import ENV, render
from plangate.sidecar.server.console.svg import Meter, meter

HOSTILE = "<b>&\"'"
ESCAPED = "&lt;b&gt;&amp;&#34;&#39;"


def test_text_and_attributes_are_escaped() -> None:
    page = login_page(Viewer(HOSTILE, HOSTILE, True), next_path='x" onclick="y', error=HOSTILE)
    assert HOSTILE not in page and 'onclick="y' not in page
    assert f"signed in as <b>{ESCAPED}</b>" in page  # the name
    assert f'name="csrf" value="{ESCAPED}"' in page  # an attribute
    assert 'name="next" value="x&#34; onclick=&#34;y"' in page
    assert f'role="alert">{ESCAPED}</div>' in page  # the error banner


def test_message_and_title_are_text() -> None:
    page = message_page(Viewer(None, "", False), HOSTILE, HOSTILE)
    assert f"<title>{ESCAPED} · PlanGate</title>" in page
    assert f"<h1>{ESCAPED}</h1>" in page and f"<p>{ESCAPED}</p>" in page


def test_picture_labels_are_escaped() -> None:
    picture = meter(Meter(used=1, allowance=2, topups=0, overage_cap=None, soft=False), HOSTILE)
    page = ENV.from_string('{% import "_macros.html" as m %}{{ m.picture(p) }}').render(p=picture)
    assert HOSTILE not in page
    assert f"<title>{ESCAPED}</title>" in page and f'aria-label="{ESCAPED}"' in page


def test_autoescape_is_on_and_undefined_names_fail() -> None:
    assert ENV.autoescape is True
    with pytest.raises(UndefinedError):
        render("message.html", title="t", viewer=Viewer(None, "", False))  # no `what`
