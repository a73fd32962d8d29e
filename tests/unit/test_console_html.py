"""The console's HTML builder escapes everything that is not markup it built itself."""

from __future__ import annotations

from plangate.sidecar.server.console.html import el, text, trusted


def test_text_and_attributes_are_escaped() -> None:
    page = el("a", "<b>&\"'", href='x" onclick="y', title=None, hidden=True)
    assert page == ('<a href="x&quot; onclick=&quot;y" hidden>&lt;b&gt;&amp;&quot;&#x27;</a>')


def test_built_markup_nests_unescaped_and_plain_strings_never_do() -> None:
    inner = el("b", "<i>")
    assert el("p", inner, "<i>", None, [1, 2.5]) == "<p><b>&lt;i&gt;</b>&lt;i&gt;12.5</p>"
    assert text("<x>") == "&lt;x&gt;"
    assert el("style", trusted("a>b{}")) == "<style>a>b{}</style>"


def test_void_elements_and_attribute_names() -> None:
    assert el("input", name="q", class_="c", aria_label="l") == (
        '<input name="q" class="c" aria-label="l">'
    )
