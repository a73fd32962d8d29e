"""What a person sees in the console (design §12), in a real browser: Debian's `chromium`
driven through its `chromedriver` by Selenium, against a real sidecar on the example catalog.

One browser walks the pages in order, like a person would: sign in first, then the catalog,
a search, an account, the deliveries. Each page is saved as a screenshot in
`tests/browser/artifacts/` (ignored by git). A slow check of its own
(`scripts/browser-check.sh`, a separate `.ci/run` step); `scripts/test.sh` leaves this folder out.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from plangate.protocol.plangate.v1 import plangate_pb2 as pb
from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from support.browser import screenshot
from support.console import (
    HOSTILE,
    TOKEN,
    TOKEN_NAME,
    bearer,
    seed,
    wait_for_failed_delivery,
    write_token_file,
)
from support.sidecar import Stubs, copy_catalog, in_process

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# What Chromium needs as root in a container, and what keeps it off the network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists(), (
            f"{path} is missing: apt-get install -y --no-install-recommends chromium chromium-driver"
        )
    profile = tempfile.mkdtemp(prefix="plangate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # the console must work without JavaScript (design §12): pages get none at all
    options.add_experimental_option(
        "prefs", {"profile.managed_default_content_settings.javascript": 2}
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A sidecar with a token file and something in it: usage, a top-up, a trial, a failed
    webhook delivery (its quota webhook points at a port nobody listens on)."""
    d = tmp_path_factory.mktemp("console")
    with in_process(
        copy_catalog(d),
        d / "state.db",
        token_file=str(write_token_file(d)),
        webhook_max_attempts=1,
        webhook_timeout_seconds=0.5,
        outbox_poll_seconds=0.05,
    ) as sc:
        with Stubs(f"127.0.0.1:{sc.port}") as stubs:
            seed(stubs, bearer())
            wait_for_failed_delivery(stubs, bearer())
        yield sc


def base(console: Any) -> str:
    return f"http://127.0.0.1:{console.management_port}/console"


def navigate(driver: webdriver.Chrome, act: Callable[[], object]) -> None:
    """Click or submit, then wait (up to 10 s) until the next page has replaced this one:
    a click returns before the browser has loaded where it leads."""
    old = driver.find_element(By.TAG_NAME, "html")
    act()

    def replaced(_: object) -> bool:
        try:
            old.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            # chromedriver asked about a node while its document is being replaced
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    WebDriverWait(driver, 10).until(replaced)


def texts(driver: webdriver.Chrome, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


@pytest.fixture(scope="module")
def signed_in(browser: webdriver.Chrome, console: Any) -> webdriver.Chrome:
    """The sign-in form, as a person uses it: asked for a token first, then let in."""
    browser.delete_all_cookies()
    browser.get(base(console) + "/catalog")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"
    screenshot(browser, "login")
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click)
    assert browser.current_url == base(console) + "/catalog"  # back where it was going
    assert f"signed in as {TOKEN_NAME}" in browser.find_element(By.TAG_NAME, "header").text
    return browser


def test_the_browser_runs_no_page_scripts(browser: webdriver.Chrome) -> None:
    """So every test here shows the console working without JavaScript."""
    browser.get("data:text/html,<title>before</title><script>document.title='ran'</script>")
    assert browser.title == "before"


def test_a_wrong_token_is_refused(browser: webdriver.Chrome, console: Any) -> None:
    browser.delete_all_cookies()
    browser.get(base(console) + "/")
    browser.find_element(By.NAME, "token").send_keys("not-the-token")
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click)
    assert (
        "not in the sidecar's --token-file"
        in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    )
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign in"


def test_overview(signed_in: webdriver.Chrome, console: Any) -> None:
    d = signed_in
    d.get(base(console) + "/")
    table = d.find_element(By.CSS_SELECTOR, "table.overview").text
    assert "5 accounts" not in table  # the count is a link: its number alone
    assert "1 failed" in table
    screenshot(d, "overview")


def test_catalog_is_a_pricing_table(signed_in: webdriver.Chrome, console: Any) -> None:
    d = signed_in
    d.get(base(console) + "/catalog")
    plans = [h.split("\n")[0] for h in texts(d, "table.pricing thead th")[1:]]
    assert plans == ["Free", "Pro", "Enterprise"]
    rows = texts(d, "table.pricing tbody tr")
    api = next(r for r in rows if r.startswith("API calls"))
    assert "100,000 (soft, overage up to 20,000)" in api
    assert api.endswith("unlimited")  # Enterprise
    assert next(r for r in rows if r.startswith("Legacy reports")).startswith(
        "Legacy reports archived"
    )
    assert "Extra seats" in d.find_element(By.CSS_SELECTOR, "table.addons").text
    assert "80%, 100%" in d.find_element(By.CSS_SELECTOR, "table.quotas").text
    assert "Pipeline editor v2" in d.find_element(By.CSS_SELECTOR, ".targeting").text
    screenshot(d, "catalog")


def test_search_by_attribute_shows_a_hostile_name_as_text(
    signed_in: webdriver.Chrome, console: Any
) -> None:
    d = signed_in
    d.get(base(console) + "/accounts")
    box = d.find_element(By.NAME, "q")
    box.send_keys("crm-9931")
    navigate(d, box.submit)
    assert "q=crm-9931" in d.current_url
    rows = d.find_elements(By.CSS_SELECTOR, "table.accounts tr td:first-child")
    assert [r.text for r in rows] == ["acct_hostile"]
    assert HOSTILE in d.find_element(By.CSS_SELECTOR, "table.accounts").text
    with pytest.raises(NoAlertPresentException):
        d.switch_to.alert.text  # noqa: B018  # the name's <script> never ran
    screenshot(d, "accounts")
    navigate(d, rows[0].find_element(By.TAG_NAME, "a").click)
    assert d.find_element(By.TAG_NAME, "h1").text == "Account acct_hostile"
    assert d.find_element(By.CSS_SELECTOR, ".account-name").text == HOSTILE


def test_account_page_meters_and_explain(signed_in: webdriver.Chrome, console: Any) -> None:
    d = signed_in
    d.get(base(console) + "/accounts/acct_acme")
    row = d.find_element(By.ID, "f-api-calls")
    assert "used 1,234 of 500,000" in row.text
    used = row.find_element(By.CSS_SELECTOR, "svg.meter rect.used")
    assert float(used.get_attribute("width") or 0) > 0
    # the usage chart (design §6.2): 30 daily bars, today's holding the 1,234 reported
    bars = row.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    assert len(bars) == 30
    assert float(bars[-1].get_attribute("height") or 0) > 0
    assert all(float(b.get_attribute("height") or 0) == 0 for b in bars[:-1])
    assert "last 30 days; today 1,234 call" in row.find_element(By.CSS_SELECTOR, ".chart-text").text
    assert (
        "pro + extra-seats ×2, salesforce ×1"
        in d.find_element(By.CSS_SELECTOR, "table.subscriptions").text
    )
    assert "execution-concurrency" in d.find_element(By.CSS_SELECTOR, "table.overrides").text
    # the link loads the page again with the trail of this one feature
    navigate(d, row.find_element(By.LINK_TEXT, "why?").click)
    trail = d.find_element(By.CSS_SELECTOR, "#f-api-calls .trail").text
    assert "answer: 500,000 from grant" in trail
    assert "'grant' is more generous" in trail
    screenshot(d, "account")


def test_top_ups_and_trials(signed_in: webdriver.Chrome, console: Any) -> None:
    d = signed_in
    d.get(base(console) + "/accounts/acct_initech")
    credits = d.find_element(By.ID, "f-ai-credits").text
    assert "allowance 100, top-ups 50 burned, 450 left" in credits
    assert d.find_elements(By.CSS_SELECTOR, "#f-ai-credits svg.meter rect.used-topups")
    assert "initech-pack-1" in d.find_element(By.CSS_SELECTOR, "table.topups").text
    d.get(base(console) + "/accounts/acct_trial")
    subs = d.find_element(By.CSS_SELECTOR, "table.subscriptions").text
    assert "trial" in subs and "plan free" in subs  # the trial, and the change at its end


def test_deliveries(signed_in: webdriver.Chrome, console: Any) -> None:
    d = signed_in
    d.get(base(console) + "/deliveries")
    rows = texts(d, "table.deliveries tr.delivery")
    assert len(rows) == 1 and "acct_hostile" in rows[0] and "failed" in rows[0]
    assert d.find_elements(By.CSS_SELECTOR, "tr.delivery form button")  # retry, signed in
    screenshot(d, "deliveries")


def test_an_override_from_the_console_is_in_the_audit_log(
    signed_in: webdriver.Chrome, console: Any
) -> None:
    d = signed_in
    d.get(base(console) + "/accounts/acct_hostile")
    form = d.find_element(By.CSS_SELECTOR, "form.action[action$='/override']")
    Select(form.find_element(By.NAME, "feature")).select_by_value("execution-concurrency")
    form.find_element(By.NAME, "value").send_keys("42")
    navigate(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]").click)
    assert (
        "Override of execution-concurrency set"
        in d.find_element(By.CSS_SELECTOR, "[role=status]").text
    )
    row = d.find_element(By.ID, "f-execution-concurrency").text
    assert row.startswith("Execution concurrency") and "42" in row and "from override" in row
    navigate(d, d.find_element(By.LINK_TEXT, "audit log").click)
    entry = d.find_elements(By.CSS_SELECTOR, "table.audit tr.entry")[0].text  # newest first
    assert TOKEN_NAME in entry and "SetOverride" in entry and "execution-concurrency" in entry
    screenshot(d, "audit")


def submit(d: webdriver.Chrome, form_css: str) -> None:
    form = d.find_element(By.CSS_SELECTOR, form_css)
    navigate(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]").click)


def apply_confirmed(d: webdriver.Chrome) -> str:
    """On a confirmation page: check it changed nothing yet, press Apply, return the notice."""
    assert d.find_element(By.TAG_NAME, "h1").text.startswith("Confirm: ")
    assert "Nothing has changed yet." in d.find_element(By.TAG_NAME, "main").text
    submit(d, "form.confirm")
    return d.find_element(By.CSS_SELECTOR, "[role=status]").text


def test_subscription_actions_show_their_effect_then_apply(
    signed_in: webdriver.Chrome, console: Any
) -> None:
    """Design §12.1, end to end: change plan, cancel at period end, resume, extend a trial,
    cancel a scheduled change — each through its confirmation page."""
    with Stubs(f"127.0.0.1:{console.port}") as stubs:
        stubs.admin.UpsertAccount(pb.UpsertAccountRequest(id="acct_browser"), metadata=bearer())
        stubs.admin.CreateSubscription(
            pb.CreateSubscriptionRequest(account_id="acct_browser", plan="pro", id="b-sub"),
            metadata=bearer(),
        )
    d = signed_in
    d.get(base(console) + "/accounts/acct_browser")
    form = d.find_element(By.CSS_SELECTOR, "form.sub-change-plan")
    Select(form.find_element(By.NAME, "plan")).select_by_value("free")
    Select(form.find_element(By.NAME, "when")).select_by_value("now")
    navigate(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]").click)
    effect = d.find_element(By.CSS_SELECTOR, "table.effect").text
    assert "sso True False (no access)" in effect, effect
    screenshot(d, "confirm")
    assert "Done: change subscription b-sub to plan free now" in apply_confirmed(d)
    assert "free" in d.find_element(By.CSS_SELECTOR, "table.subscriptions").text

    form = d.find_element(By.CSS_SELECTOR, "form.sub-cancel")
    Select(form.find_element(By.NAME, "when")).select_by_value("period_end")
    navigate(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]").click)
    assert "Done: cancel subscription b-sub at the end" in apply_confirmed(d)
    assert "ends" in d.find_element(By.CSS_SELECTOR, "table.subscriptions").text
    submit(d, "form.sub-resume")
    assert "Done: resume subscription b-sub" in apply_confirmed(d)
    assert not d.find_elements(By.CSS_SELECTOR, "form.sub-resume")

    d.get(base(console) + "/accounts/acct_trial")  # a trial that moves to free at its end
    form = d.find_element(By.CSS_SELECTOR, "form.sub-extend-trial")
    form.find_element(By.NAME, "until").send_keys("2099-01-01")
    navigate(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]").click)
    assert "Done: extend the trial" in apply_confirmed(d)
    assert "2099-01-01" in d.find_element(By.CSS_SELECTOR, "table.subscriptions").text
    submit(d, "form.sub-cancel-change")
    assert "Done: cancel the scheduled changes" in apply_confirmed(d)
    assert not d.find_elements(By.CSS_SELECTOR, "form.sub-cancel-change")
    navigate(d, d.find_element(By.LINK_TEXT, "audit log").click)
    audit = d.find_element(By.CSS_SELECTOR, "table.audit").text
    assert "ExtendTrial" in audit and "CancelScheduledChange" in audit and TOKEN_NAME in audit


PAGES = {
    "overview": "/",
    "catalog": "/catalog",
    "accounts": "/accounts?q=co",
    "account": "/accounts/acct_acme",
    "account-credits": "/accounts/acct_initech",
    "deliveries": "/deliveries",
    "audit": "/audit",
}


@pytest.mark.parametrize("width", [1400, 390])
def test_every_page_at_desktop_and_phone_width(
    signed_in: webdriver.Chrome, console: Any, width: int
) -> None:
    """Screenshots of every page at 1400 px and at 390 px (a phone), and at both the page
    itself never scrolls sideways: wide tables scroll inside their own box."""
    d = signed_in
    d.set_window_size(width, 1000)
    try:
        for name, path in PAGES.items():
            d.get(base(console) + path)
            metrics = d.execute_cdp_cmd("Page.getLayoutMetrics", {})
            page_width = metrics["cssContentSize"]["width"]
            viewport = metrics["cssLayoutViewport"]["clientWidth"]
            assert page_width <= viewport + 1, (name, width, page_width, viewport)
            screenshot(d, f"{name}-{width}")
    finally:
        d.set_window_size(1280, 1000)
