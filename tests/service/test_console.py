"""The console over plain HTTP against real sidecars (design §12): what a page escapes, what a
read-only console offers, and what a signed-in console refuses (CSRF, origin), with nothing
changed by a refused request."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
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
    # escaped as markupsafe (Jinja2's autoescape) writes it
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &#34;Co&#34;" in page
    assert HOSTILE not in page


def test_a_search_term_is_escaped_where_the_page_repeats_it(open_console: Any) -> None:
    status, page = Http(open_console.management_port).get(
        "/console/accounts?q=%22%3E%3Cimg%20src%3Dx%3E"
    )
    assert status == 200
    assert "<img" not in page
    assert 'value="&#34;&gt;&lt;img src=x&gt;"' in page


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
        ("/console/accounts/acct_nobody", "No account &#39;acct_nobody&#39;."),
        ("/console/accounts/acct_acme?explain=nope", "No feature &#39;nope&#39; to explain."),
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


# -- actions: through the admin facade, in the token's name, only with CSRF and origin ---------


def audit_of(sc: Any, account_id: str) -> list[tuple[str, str, str]]:
    with Stubs(f"127.0.0.1:{sc.port}") as stubs:
        found = stubs.admin.ListAuditLog(
            pb.ListAuditLogRequest(account_id=account_id), metadata=bearer()
        )
    return [(e.actor, e.action, e.target) for e in found.entries]


OVERRIDE = {"feature": "sso", "value": "false"}


@pytest.mark.parametrize(
    ("csrf", "origin"),
    [(None, ""), ("", ""), ("wrong", ""), ("good", "http://evil.example"), ("good", None)],
)
def test_an_action_without_the_sessions_csrf_token_or_origin_changes_nothing(
    token_console: Any, csrf: str | None, origin: str | None
) -> None:
    client = Http(token_console.management_port)
    client.sign_in()
    good = client.csrf("/console/accounts/acct_hostile")
    form = dict(OVERRIDE)
    if csrf is not None:
        form["csrf"] = good if csrf == "good" else csrf
    before = (overrides(token_console, "acct_hostile"), audit_of(token_console, "acct_hostile"))
    status, page = client.post("/console/accounts/acct_hostile/override", form, origin)
    assert status == 403, page
    assert "Refused" in page
    after = (overrides(token_console, "acct_hostile"), audit_of(token_console, "acct_hostile"))
    assert after == before


def test_an_action_signed_out_is_refused(token_console: Any) -> None:
    client = Http(token_console.management_port)
    status, page = client.post("/console/accounts/acct_hostile/override", OVERRIDE)
    assert status == 403 and "Sign in first" in page
    assert "sso" not in overrides(token_console, "acct_hostile")


def test_a_read_only_console_refuses_every_action(open_console: Any) -> None:
    client = Http(open_console.management_port)
    for path, form in (
        ("/console/accounts/acct_hostile/override", OVERRIDE),
        ("/console/accounts/acct_hostile/topup", {"feature": "api-calls", "amount": "5"}),
        ("/console/deliveries/retry", {"all_failed": "1"}),
    ):
        status, page = client.post(path, form)
        assert status == 403 and "read-only" in page, path
    assert "sso" not in overrides(open_console, "acct_hostile")


def test_an_override_is_set_in_the_tokens_name(token_console: Any) -> None:
    client = Http(token_console.management_port)
    client.sign_in()
    form = {**OVERRIDE, "feature": "execution-concurrency", "value": "42"}
    form["csrf"] = client.csrf("/console/accounts/acct_hostile")
    status, where = client.post("/console/accounts/acct_hostile/override", form)
    assert (status, where) == (303, "/console/accounts/acct_hostile")
    assert "execution-concurrency" in overrides(token_console, "acct_hostile")
    assert (TOKEN_NAME, "SetOverride", "execution-concurrency") in audit_of(
        token_console, "acct_hostile"
    )
    status, page = client.get("/console/accounts/acct_hostile")
    assert "Override of execution-concurrency set on acct_hostile." in page
    assert "Override of" not in client.get("/console/accounts/acct_hostile")[1]  # said once


def test_a_top_up_is_added_in_the_tokens_name(token_console: Any) -> None:
    client = Http(token_console.management_port)
    client.sign_in()
    form = {"feature": "api-calls", "amount": "2500", "expires_at": "2030-01-01T00:00:00Z"}
    form["csrf"] = client.csrf("/console/accounts/acct_hostile")
    status, _ = client.post("/console/accounts/acct_hostile/topup", form)
    assert status == 303
    assert any(
        actor == TOKEN_NAME and action == "AddTopUp"
        for actor, action, _ in audit_of(token_console, "acct_hostile")
    )
    page = client.get("/console/accounts/acct_hostile")[1]
    assert "of 2500 added to api-calls" in page
    assert "2,500" in page  # the top-ups table


@pytest.mark.parametrize(
    ("path", "form", "says"),
    [
        (
            "/console/accounts/acct_hostile/override",
            {"feature": "no-such-feature", "value": "1"},
            "no-such-feature",
        ),
        (
            "/console/accounts/acct_hostile/override",
            {"feature": "sso", "value": "true", "expires_at": "tomorrow"},
            "give an instant with its zone",
        ),
        (
            "/console/accounts/acct_hostile/topup",
            {"feature": "api-calls", "amount": "lots"},
            "amount must be a number",
        ),
        (
            "/console/accounts/acct_hostile/topup",
            {"feature": "api-calls", "amount": "-5"},
            "amount must be a positive number",
        ),
        ("/console/accounts/acct_acme/override", OVERRIDE, "declared in"),
        ("/console/deliveries/retry", {"id": "nope"}, "no delivery &#39;nope&#39;"),
    ],
)
def test_a_refused_action_says_why_and_changes_nothing(
    token_console: Any, path: str, form: dict[str, str], says: str
) -> None:
    client = Http(token_console.management_port)
    client.sign_in()
    back = "/console/deliveries" if "deliveries" in path else path.rsplit("/", 1)[0]
    sent = {**form, "csrf": client.csrf(back)}
    entries = len(audit_of(token_console, ""))
    status, where = client.post(path, sent)
    assert (status, where) == (303, back)
    status, page = client.get(back)
    assert 'role="alert"' in page and says in page
    assert len(audit_of(token_console, "")) == entries


def test_the_audit_page_shows_who_changed_what(token_console: Any) -> None:
    client = Http(token_console.management_port)
    client.sign_in()
    form = {"feature": "support-tier", "value": "priority", "csrf": client.csrf("/console/")}
    client.post("/console/accounts/acct_trial/override", form)
    status, page = client.get("/console/audit?account=acct_trial")
    assert status == 200
    assert f"<b>{TOKEN_NAME}</b>" in page and "SetOverride" in page and "support-tier" in page
    status, everything = client.get("/console/audit")
    assert "CreateSubscription" in everything  # the seeding, through gRPC, is there too


def test_a_rejected_catalog_change_is_shown_with_its_error(open_console: Any) -> None:
    catalog = Path(open_console.settings.catalog)
    good = catalog.read_text()
    client = Http(open_console.management_port)

    def catalog_page_until(done: Callable[[str], bool]) -> str:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status, page = client.get("/console/catalog")
            assert status == 200
            if done(page):
                return page
            time.sleep(0.05)
        raise AssertionError("the console did not show the catalog change in 15 s")

    catalog.write_text(
        good.replace("type: metered\n        unit: call", "type: <metred>\n        unit: call", 1)
    )
    try:
        page = catalog_page_until(lambda p: "catalog-error" in p)
        assert "The last catalog change was rejected" in page
        assert "&lt;metred&gt;" in page  # the whole message, escaped
        assert "Pipewise" in page  # the served (previous) catalog is still shown
        assert "catalog-error" in client.get("/console/")[1]
    finally:
        catalog.write_text(good)
    catalog_page_until(lambda p: "catalog-error" not in p)


def test_each_metered_feature_has_a_usage_chart_from_the_history(open_console: Any) -> None:
    status, page = Http(open_console.management_port).get("/console/accounts/acct_acme")
    assert status == 200
    # every counted feature of the example catalog: a chart where there is usage, words where not
    assert page.count('class="chart"') == 2  # api-calls and exports
    assert page.count("no usage yet") == 5
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert f"<title>{today}: 1,234 call</title>" in page
    assert "API calls: usage per day, last 30 days; today 1,234 call; period limit 500,000" in page


def test_the_audit_page_shows_a_markup_name_as_text(open_console: Any) -> None:
    status, page = Http(open_console.management_port).get("/console/audit?account=acct_hostile")
    assert status == 200
    assert "UpsertAccount" in page and "anonymous" in page  # no token file: nobody is named
    assert "<script>" not in page and "&lt;script&gt;alert(" in page


def test_an_override_value_is_read_with_the_catalogs_bounds(token_console: Any) -> None:
    """A 300-byte form of nested aliases stored a 26 MB override on main, which every
    evaluation then copied; the console reads a value with the catalog's own bounded loader."""
    client = Http(token_console.management_port)
    client.sign_in()
    bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{b}: &{b} [{','.join([f'*{a}'] * 10)}]\n" for a, b in zip("abc", "bcd", strict=True)
    )
    assert len(bomb) < 304
    form = {"feature": "theme", "value": bomb}
    form["csrf"] = client.csrf("/console/accounts/acct_hostile")
    status, where = client.post("/console/accounts/acct_hostile/override", form)
    assert (status, where) == (303, "/console/accounts/acct_hostile")
    page = client.get("/console/accounts/acct_hostile")[1]
    assert "aliases expand to" in page
    assert "theme" not in overrides(token_console, "acct_hostile")


def decision_row(page: str, feature: str) -> str:
    """The account page's table row of one feature's decision."""
    start = page.index(f'<tr id="f-{feature}"')
    return page[start : page.index("</tr>", start)]


def test_meters_tell_the_truth(open_console: Any) -> None:
    """Design §12.1: a credit-priced feature its pool caps shows what the pool allows (the
    word "unlimited" nowhere in its row); an off boolean is "off", not a red "denied"; an
    unused meter says so instead of drawing an empty chart."""
    client = Http(open_console.management_port)
    page = client.get("/console/accounts/acct_initech")[1]  # Free: completions draw on 100 credits
    completions = decision_row(page, "ai-completions")
    assert "unlimited" not in completions, completions
    assert "the ai-credits pool allows" in completions and "more" in completions
    sso = decision_row(page, "sso")
    assert '<span class="badge off">off</span>' in sso and "denied" not in sso, sso
    exports = decision_row(page, "exports")
    assert "no usage yet" in exports and 'class="chart"' not in exports


def test_targeting_reads_as_sentences_with_the_json_on_demand(open_console: Any) -> None:
    """Design §12.1: the catalog page writes a rule as `condition → result`."""
    page = Http(open_console.management_port).get("/console/catalog")[1]
    assert "<li>plan in [pro] and account.region = eu → 20 % on, 80 % off</li>" in page
    assert "<li>otherwise → no variant: the plans decide</li>" in page
    assert '<details class="rule-json"><summary>the rule as JSON Logic</summary><pre>' in page


def test_the_audit_log_shows_each_changed_field_from_and_to(token_console: Any) -> None:
    """Design §12.1: a change reads as the fields it changed, from → to."""
    client = Http(token_console.management_port)
    client.sign_in()
    for value in ("3", "4"):
        form = {"feature": "seats", "value": value, "csrf": client.csrf("/console/")}
        assert client.post("/console/accounts/acct_trial/override", form)[0] == 303
    page = client.get("/console/audit?account=acct_trial")[1]
    newest = page[page.index('<tr class="entry">') :]
    newest = newest[: newest.index("</tr>")]
    assert '<span class="from">3</span> → <span class="to">4</span>' in newest, newest
    assert '<details class="raw">' in newest  # the whole JSON, on demand


def test_the_account_page_lists_what_changes_next_in_time_order(open_console: Any) -> None:
    """Design §12.1: every coming boundary — here the trial's end, the scheduled move to the
    free plan, the period resets — in time order, as UTC date-times and relative."""
    page = Http(open_console.management_port).get("/console/accounts/acct_trial")[1]
    section = page[page.index("<h2>What changes next</h2>") : page.index("<h2>Features</h2>")]
    rows = re.findall(
        r'<time datetime="([^"]+)">[^<]+</time></td><td>(in [^<]+)</td><td>([^<]+)<', section
    )
    assert rows, section
    instants = [datetime.fromisoformat(at) for at, _, _ in rows]
    assert instants == sorted(instants)
    whats = [what for _, _, what in rows]
    assert any("trial of subscription" in w and "ends" in w for w in whats), whats
    assert any("moves to plan free" in w for w in whats), whats
    assert any("starts again from 0 (period reset)" in w for w in whats), whats
    trial = next(rel for _, rel, what in rows if "trial" in what)
    assert trial.startswith("in 9 days") or trial.startswith("in 10 days"), trial


# -- subscription actions: a confirmation step showing the effect, then the change ------------


def subscription(sc: Any, account_id: str) -> pb.Subscription:
    with Stubs(f"127.0.0.1:{sc.port}") as stubs:
        account = stubs.admin.GetAccount(pb.GetAccountRequest(id=account_id), metadata=bearer())
    return account.subscriptions[0]


def new_pro_account(sc: Any, account_id: str) -> None:
    with Stubs(f"127.0.0.1:{sc.port}") as stubs:
        stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id=account_id), metadata=bearer())
        stubs.admin.CreateSubscription(
            pb.CreateSubscriptionRequest(account_id=account_id, plan="pro", id=f"{account_id}-sub"),
            metadata=bearer(),
        )


def test_a_plan_change_shows_its_effect_first_and_applies_only_when_confirmed(
    token_console: Any,
) -> None:
    new_pro_account(token_console, "acct_ops1")
    client = Http(token_console.management_port)
    client.sign_in()
    page = client.get("/console/accounts/acct_ops1")[1]
    action = "/console/accounts/acct_ops1/subscriptions/acct_ops1-sub/change-plan"
    assert f'action="{action}"' in page
    form = {"plan": "free", "when": "now", "csrf": client.csrf("/console/")}
    status, confirm = client.post(action, form)
    assert status == 200, confirm
    assert "Confirm: change subscription acct_ops1-sub to plan free now" in confirm
    effect = confirm[confirm.index('<table class="effect">') :]
    effect = effect[: effect.index("</table>")]
    sso = effect[effect.index("<code>sso</code>") :]
    assert '<td class="from">True</td><td class="to">False (no access)</td>' in sso, effect
    assert 'name="confirm" value="1"' in confirm
    assert subscription(token_console, "acct_ops1").plan == "pro"  # nothing changed yet
    assert not [a for a in audit_of(token_console, "acct_ops1") if a[1] == "ChangePlan"]
    status, where = client.post(action, {**form, "confirm": "1"})
    assert (status, where) == (303, "/console/accounts/acct_ops1")
    assert subscription(token_console, "acct_ops1").plan == "free"
    assert (TOKEN_NAME, "ChangePlan", "acct_ops1-sub") in audit_of(token_console, "acct_ops1")


def test_cancel_at_period_end_resume_and_a_refused_confirmation(token_console: Any) -> None:
    new_pro_account(token_console, "acct_ops2")
    client = Http(token_console.management_port)
    client.sign_in()
    base = "/console/accounts/acct_ops2/subscriptions/acct_ops2-sub"
    form = {"when": "period_end", "csrf": client.csrf("/console/")}
    status, confirm = client.post(f"{base}/cancel", form)
    assert status == 200 and '<table class="effect">' in confirm, confirm
    assert "<code>sso</code>" in confirm  # at the period end SSO goes with the plan
    # the confirmation without the session's CSRF token is refused and changes nothing
    status, _ = client.post(f"{base}/cancel", {"when": "period_end", "confirm": "1"})
    assert status == 403
    assert not subscription(token_console, "acct_ops2").HasField("ends_at")
    assert client.post(f"{base}/cancel", {**form, "confirm": "1"})[0] == 303
    assert subscription(token_console, "acct_ops2").HasField("ends_at")
    page = client.get("/console/accounts/acct_ops2")[1]
    assert f'action="{base}/resume"' in page
    form = {"csrf": client.csrf("/console/")}
    assert client.post(f"{base}/resume", form)[0] == 200
    assert client.post(f"{base}/resume", {**form, "confirm": "1"})[0] == 303
    assert not subscription(token_console, "acct_ops2").HasField("ends_at")
    actions = [a[1] for a in audit_of(token_console, "acct_ops2")]
    assert "CancelSubscription" in actions and "ResumeSubscription" in actions


def test_cancelling_a_scheduled_change_and_refusals_are_shown(token_console: Any) -> None:
    client = Http(token_console.management_port)
    client.sign_in()
    sub = subscription(token_console, "acct_trial").id
    base = f"/console/accounts/acct_trial/subscriptions/{sub}"
    form = {"csrf": client.csrf("/console/")}
    status, confirm = client.post(f"{base}/cancel-change", form)
    assert status == 200 and "Confirm: cancel the scheduled changes" in confirm, confirm
    assert client.post(f"{base}/cancel-change", {**form, "confirm": "1"})[0] == 303
    assert not subscription(token_console, "acct_trial").phases
    # an unknown plan: the admin facade's own refusal, shown on the account page
    status, where = client.post(f"{base}/change-plan", {**form, "plan": "nope", "when": "now"})
    assert (status, where) == (303, "/console/accounts/acct_trial")
    assert 'role="alert"' in client.get(where)[1]
    assert client.post(f"{base}/explode", form)[0] == 404


def test_extending_a_trial_moves_its_end_and_what_follows(token_console: Any) -> None:
    with Stubs(f"127.0.0.1:{token_console.port}") as stubs:
        stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_ops3"), metadata=bearer())
        create = pb.CreateSubscriptionRequest(account_id="acct_ops3", plan="pro", id="ops3-sub")
        create.trial_ends_at.FromDatetime(datetime.now(UTC) + timedelta(days=3))
        create.trial_then = "free"
        stubs.admin.CreateSubscription(create, metadata=bearer())
    client = Http(token_console.management_port)
    client.sign_in()
    base = "/console/accounts/acct_ops3/subscriptions/ops3-sub"
    assert f'action="{base}/extend-trial"' in client.get("/console/accounts/acct_ops3")[1]
    until = (datetime.now(UTC) + timedelta(days=20)).strftime("%Y-%m-%dT00:00:00Z")
    form = {"until": until, "csrf": client.csrf("/console/")}
    status, confirm = client.post(f"{base}/extend-trial", form)
    assert status == 200 and "Confirm: extend the trial of subscription ops3-sub" in confirm
    assert '<td class="from">False (no access)</td><td class="to">True</td>' in confirm, confirm
    assert client.post(f"{base}/extend-trial", {**form, "confirm": "1"})[0] == 303
    sub = subscription(token_console, "acct_ops3")
    assert sub.trial_ends_at.ToDatetime(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") == until
    assert sub.phases[0].starts_at.ToDatetime(UTC) == sub.trial_ends_at.ToDatetime(UTC)
    assert (TOKEN_NAME, "ExtendTrial", "ops3-sub") in audit_of(token_console, "acct_ops3")
    # an earlier instant is the facade's refusal, shown on the page; nothing changes
    status, where = client.post(f"{base}/extend-trial", {**form, "until": "2020-01-01"})
    assert status == 303 and "give a later instant" in client.get(where)[1]


# -- holds: listed on the account, released after a confirmation showing the effect -----------


def account_holds(sc: Any, account_id: str) -> list[str]:
    with Stubs(f"127.0.0.1:{sc.port}") as stubs:
        account = stubs.admin.GetAccount(pb.GetAccountRequest(id=account_id), metadata=bearer())
    return [h.hold_id for h in account.holds]


def test_an_active_hold_is_listed_and_released_only_when_confirmed(token_console: Any) -> None:
    new_pro_account(token_console, "acct_hold1")
    with Stubs(f"127.0.0.1:{token_console.port}") as stubs:
        hold = stubs.usage.Reserve(
            pb.ReserveRequest(account_id="acct_hold1", feature="exports", amount=100),
            metadata=bearer(),
        ).hold_id
    assert hold and account_holds(token_console, "acct_hold1") == [hold]
    client = Http(token_console.management_port)
    client.sign_in()
    page = client.get("/console/accounts/acct_hold1")[1]
    action = f"/console/accounts/acct_hold1/holds/{hold}/release"
    listed = page[page.index('<table class="holds">') :]
    assert f"<code>{hold}</code>" in listed and f'action="{action}"' in listed
    form = {"csrf": client.csrf("/console/")}
    status, confirm = client.post(action, form)
    assert status == 200, confirm
    assert f"Confirm: release hold {hold}" in confirm
    effect = confirm[confirm.index('<table class="effect">') :]
    exports = effect[effect.index("<code>exports</code>") :]
    assert '<td class="from">100 (no access)</td><td class="to">100</td>' in exports, effect
    assert account_holds(token_console, "acct_hold1") == [hold]  # nothing changed yet
    status, where = client.post(action, {**form, "confirm": "1"})
    assert (status, where) == (303, "/console/accounts/acct_hold1")
    assert account_holds(token_console, "acct_hold1") == []
    page = client.get("/console/accounts/acct_hold1")[1]
    assert "No active holds." in page and f"Done: release hold {hold}" in page
    # releasing it again is refused with the reason, and a confirmation of an ended hold too
    client.post(action, {**form, "confirm": "1"})
    assert f"hold {hold} was released" in client.get("/console/accounts/acct_hold1")[1]
    client.post(action, form)
    assert "has no active hold" in client.get("/console/accounts/acct_hold1")[1]
