"""The console over plain HTTP against real sidecars (design §12): what a page escapes, what a
read-only console offers, and what a signed-in console refuses (CSRF, origin), with nothing
changed by a refused request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from support.console import HOSTILE, TOKEN_NAME, Http, bearer, seed, write_token_file
from support.sidecar import Stubs, copy_catalog, in_process


@pytest.fixture(scope="module")
def open_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """No --token-file: a read-only console."""
    d = tmp_path_factory.mktemp("console-open")
    with in_process(copy_catalog(d), d / "state.db") as sc:
        with Stubs(f"127.0.0.1:{sc.port}") as stubs:
            seed(stubs)
        yield sc


@pytest.fixture(scope="module")
def token_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("console-token")
    with in_process(copy_catalog(d), d / "state.db", token_file=str(write_token_file(d))) as sc:
        with Stubs(f"127.0.0.1:{sc.port}") as stubs:
            seed(stubs, bearer())
        yield sc


def overrides(sc: Any, account_id: str) -> list[str]:
    with Stubs(f"127.0.0.1:{sc.port}") as stubs:
        account = stubs.admin.GetAccount(pb.GetAccountRequest(id=account_id), metadata=bearer())
    return sorted(o.feature for o in account.overrides)


# -- escaping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/console/accounts/acct_hostile", "/console/accounts?q=crm-9931"])
def test_a_name_that_is_markup_is_shown_as_text(open_console: Any, path: str) -> None:
    status, page = Http(open_console.management_port).get(path)
    assert status == 200
    assert "<script>" not in page  # the page has no script of its own, and the name is text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;Co&quot;" in page
    assert HOSTILE not in page


def test_a_search_term_is_escaped_where_the_page_repeats_it(open_console: Any) -> None:
    status, page = Http(open_console.management_port).get(
        "/console/accounts?q=%22%3E%3Cimg%20src%3Dx%3E"
    )
    assert status == 200
    assert "<img" not in page
    assert 'value="&quot;&gt;&lt;img src=x&gt;"' in page


# -- read-only without a token file ----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/console/", "/console/accounts/acct_hostile", "/console/deliveries", "/console/catalog"],
)
def test_read_only_pages_offer_no_forms_that_change_anything(open_console: Any, path: str) -> None:
    status, page = Http(open_console.management_port).get(path)
    assert status == 200
    assert "read-only" in page
    assert 'method="post"' not in page and "csrf" not in page


def test_read_only_has_no_sign_in(open_console: Any) -> None:
    client = Http(open_console.management_port)
    assert client.get("/console/login")[0] == 404
    status, _ = client.post("/console/login", {"token": "anything"})
    assert status == 404
    assert not client.cookies


# -- not found ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/console/accounts/acct_nobody", "No account &#x27;acct_nobody&#x27;."),
        ("/console/accounts/acct_acme?explain=nope", "No feature &#x27;nope&#x27; to explain."),
        ("/console/deliveries?status=lost", "No such delivery listing"),
        ("/console/nothing-here", "No such console page."),
    ],
)
def test_unknown_things_are_404_pages(open_console: Any, path: str, says: str) -> None:
    status, page = Http(open_console.management_port).get(path)
    assert status == 404
    assert says in page


def test_a_member_without_a_record_has_a_page(open_console: Any) -> None:
    status, page = Http(open_console.management_port).get("/console/accounts/user_ann")
    assert status == 200
    assert "Member of" in page and "acct_acme/0" in page


# -- signed in: sign-in, cookie, CSRF and origin -----------------------------------------------


def test_pages_ask_for_the_token_first(token_console: Any) -> None:
    client = Http(token_console.management_port)
    status, headers, _ = client.request("GET", "/console/accounts/acct_acme")
    assert status == 303
    assert headers["location"] == "/console/login?next=/console/accounts/acct_acme"
    status, page = client.get("/console/login?next=/console/accounts/acct_acme")
    assert status == 200 and 'type="password"' in page


def test_the_session_cookie_is_http_only_and_same_site_strict(token_console: Any) -> None:
    client = Http(token_console.management_port)
    status, headers, _ = client.request(
        "POST",
        "/console/login",
        {"token": "console-test-token-4f1c", "next": "/console/catalog"},
        {"Origin": client.origin},
    )
    assert status == 303 and headers["location"] == "/console/catalog"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "console-test-token" not in cookie  # the session id, never the token


def test_a_wrong_token_signs_nobody_in(token_console: Any) -> None:
    client = Http(token_console.management_port)
    status, page = client.post("/console/login", {"token": "guess"})
    assert status == 403 and "not in the sidecar" in page
    assert not client.cookies


@pytest.mark.parametrize("origin", [None, "http://evil.example", "null"])
def test_sign_in_from_another_origin_is_refused(token_console: Any, origin: str | None) -> None:
    client = Http(token_console.management_port)
    status, page = client.post(
        "/console/login", {"token": "console-test-token-4f1c"}, origin=origin
    )
    assert status == 403 and "does not come from this console" in page
    assert not client.cookies


def test_sign_in_goes_only_to_console_pages(token_console: Any) -> None:
    client = Http(token_console.management_port)
    status, where = client.post(
        "/console/login", {"token": "console-test-token-4f1c", "next": "//evil.example/x"}
    )
    assert (status, where) == (303, "/console/")


def test_signed_in_pages_name_the_token(token_console: Any) -> None:
    client = Http(token_console.management_port)
    client.sign_in()
    status, page = client.get("/console/accounts/acct_hostile")
    assert status == 200 and f"signed in as <b>{TOKEN_NAME}</b>" in page


@pytest.mark.parametrize(
    ("csrf", "origin"),
    [("", ""), ("wrong", ""), (None, "http://evil.example"), (None, None)],
)
def test_sign_out_without_the_sessions_csrf_token_or_origin_is_refused(
    token_console: Any, csrf: str | None, origin: str | None
) -> None:
    client = Http(token_console.management_port)
    client.sign_in()
    good = client.csrf("/console/")
    status, _ = client.post("/console/logout", {"csrf": good if csrf is None else csrf}, origin)
    assert status == 403
    assert client.get("/console/")[0] == 200  # still signed in: nothing happened
    status, where = client.post("/console/logout", {"csrf": good})
    assert (status, where) == (303, "/console/login")
    assert client.request("GET", "/console/")[0] == 303  # signed out


def test_pages_forbid_scripts_and_framing(open_console: Any) -> None:
    _, headers, _ = Http(open_console.management_port).request("GET", "/console/")
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src" not in policy  # so default-src 'none' forbids every script
