"""The console's HTTP routes on the management port (design §12): read the runtime, render.

Each page is built on the sidecar's blocking pool, never on the event loop: a search scans
every account and the deliveries page reads the store. Handlers only gather what the runtime
already knows and hand it to the page modules; actions call the runtime's admin facade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ...catalog.model import Account
from ...catalog.source import parse_value
from ...engine import EvaluationError
from ...engine.boundaries import coming_changes
from ...runtime.live.state import LiveState
from ...runtime.serve.admin import Admin, AdminError, topup_balances
from ...runtime.serve.decisions import Decisions, Evaluated
from ...runtime.serve.history import HistoryPoint, usage_history
from ...runtime.serve.holds import Holds
from ...runtime.serve.preview import preview, preview_release
from .accounts_page import AccountView, account_page, search_page
from .audit_page import audit_page
from .catalog_page import catalog_page
from .deliveries_page import PAGE_SIZE as DELIVERY_PAGE
from .deliveries_page import deliveries_page
from .layout import BASE, Viewer, account_path
from .other_pages import login_page, message_page, not_found_page, overview_page
from .search import AccountSearch
from .session import (
    Refused,
    Session,
    Sessions,
    Waiting,
    check_post,
    clear_cookie,
    set_cookie,
)
from .subscription_actions import confirm_page, subscription_operation

HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    # no script at all, styles only inline, forms only to this origin, never in a frame
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Missing(Exception):
    """What the page names does not exist: answered 404 with the message."""


Build = Callable[[Viewer], str]
Act = Callable[[str, Mapping[str, str]], str]
"""An action: (actor, form) -> the notice to show; raises `AdminError`/`ValueError` to refuse."""

AUDIT_PAGE = 50
CHART_DAYS = 30
"""Days of usage an account page charts per metered feature (one bar a day, today last)."""


def _time(text: str, what: str) -> datetime | None:
    """An optional instant from a form field; it must name its zone (`Z` or `+01:00`)."""
    if not text.strip():
        return None
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise ValueError(f"{what}: give an instant with its zone, e.g. 2026-12-31T00:00:00Z")
    return at


def _value(text: str) -> Any:
    """An entitlement value as the catalog writes it: `true`, `25`, `unlimited`, `[slack]`,
    `{limit: 10, soft: true}` (YAML, the catalog's own notation)."""
    try:
        return parse_value(text)
    except ValueError as exc:
        raise ValueError(f"value: not a value in catalog notation ({exc})") from exc


def _safe_next(path: str) -> str:
    """Only a console path is a place to go after signing in (no open redirect)."""
    if path.startswith(f"{BASE}/"):
        return path
    return f"{BASE}/"


class Console:
    def __init__(
        self,
        state: LiveState,
        decisions: Decisions,
        admin: Admin,
        sessions: Sessions,
        blocking: Executor,
        environment: str,
    ) -> None:
        self.state = state
        self.decisions = decisions
        self.admin = admin
        self.sessions = sessions
        self.blocking = blocking
        self.environment = environment
        self.search = AccountSearch()

    def mount(self, app: web.Application) -> None:
        r = app.router
        r.add_get(BASE, self.to_index)
        r.add_get(f"{BASE}/", self.overview)
        r.add_get(f"{BASE}/catalog", self.catalog)
        r.add_get(f"{BASE}/accounts", self.accounts)
        r.add_get(f"{BASE}/accounts/{{id}}", self.account)
        r.add_get(f"{BASE}/deliveries", self.deliveries)
        r.add_get(f"{BASE}/audit", self.audit)
        r.add_post(f"{BASE}/accounts/{{id}}/override", self.set_override)
        r.add_post(f"{BASE}/accounts/{{id}}/topup", self.add_topup)
        r.add_post(f"{BASE}/deliveries/retry", self.retry)
        r.add_post(f"{BASE}/accounts/{{id}}/subscriptions/{{sub}}/{{op}}", self.subscription_action)
        r.add_post(f"{BASE}/accounts/{{id}}/holds/{{hold}}/release", self.release_hold)
        r.add_get(f"{BASE}/login", self.login_form)
        r.add_post(f"{BASE}/login", self.login)
        r.add_post(f"{BASE}/logout", self.logout)
        r.add_route("*", f"{BASE}/{{path:.*}}", self.unknown)

    # -- rendering ---------------------------------------------------------------------------

    def _viewer(self, session: Session | None, flash: bool = False) -> Viewer:
        """Who looks; `flash` takes the last action's message off the session to show it."""
        notice, error = session.flash() if session is not None and flash else ("", "")
        return Viewer(
            session.name if session else None,
            session.csrf if session else "",
            self.sessions.enabled,
            notice,
            error,
        )

    async def _render(self, request: web.Request, build: Build) -> web.StreamResponse:
        """Sign-in first when tokens are configured (the console then shows what only the
        token may read, like the Admin API); then the page, built off the loop."""
        session = self.sessions.get(request)
        if self.sessions.enabled and session is None:
            target = quote(request.path_qs, safe="/?=&%")
            raise web.HTTPSeeOther(f"{BASE}/login?next={target}")
        viewer = self._viewer(session, flash=True)
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(self.blocking, build, viewer)
            status = 200
        except Missing as exc:
            body, status = not_found_page(viewer, str(exc)), 404
        return web.Response(status=status, body=body.encode(), headers=HEADERS)

    @staticmethod
    def _html(body: str, status: int = 200) -> web.Response:
        return web.Response(status=status, body=body.encode(), headers=HEADERS)

    # -- pages -------------------------------------------------------------------------------

    async def to_index(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently(f"{BASE}/")

    async def unknown(self, request: web.Request) -> web.StreamResponse:
        session = self.sessions.get(request)
        return self._html(not_found_page(self._viewer(session), "No such console page."), 404)

    async def overview(self, request: web.Request) -> web.StreamResponse:
        state = self.state

        def build(viewer: Viewer) -> str:
            snap = state.snapshot
            return overview_page(
                viewer,
                snap.catalog,
                state.catalog_error,
                state.account_count(),
                state.store.count_deliveries(),
                self.environment,
            )

        return await self._render(request, build)

    async def catalog(self, request: web.Request) -> web.StreamResponse:
        state = self.state

        def build(viewer: Viewer) -> str:
            return catalog_page(viewer, state.catalog, state.catalog_error)

        return await self._render(request, build)

    async def accounts(self, request: web.Request) -> web.StreamResponse:
        query = request.query.get("q", "")
        after = request.query.get("after", "")

        def build(viewer: Viewer) -> str:
            found = self.search.find(self.state.snapshot.accounts, query, after)
            return search_page(viewer, query, after, found, self.state.clock())

        return await self._render(request, build)

    def account_view(self, account_id: str, explain_feature: str) -> AccountView:
        """Everything the account page shows, read from the runtime now."""
        state = self.state
        state.ensure(account_id)  # design §19: off the loop (a page is built on a thread)
        snap, now = state.snapshot, state.clock()
        memberships = tuple(snap.memberships.get(account_id, ()))
        account = snap.accounts.get(account_id)
        if account is None:
            if not memberships:
                raise Missing(f"No account {account_id!r}.")
            account = Account(id=account_id)  # a member only: no record of its own
        trail = None
        if explain_feature:
            if explain_feature not in snap.catalog.features:
                raise Missing(f"No feature {explain_feature!r} to explain.")
            _, trail = self.decisions.explain(account_id, explain_feature, {})
        decisions = self.decisions.evaluate_all(account_id, {})
        start = (now - timedelta(days=CHART_DAYS - 1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        charts: dict[str, list[HistoryPoint]] = {
            key: usage_history(state, account_id, key, start, now, "day")
            for key, result in decisions.results.items()
            if isinstance(result, Evaluated) and result.feature.counted
        }
        return AccountView(
            account=account,
            memberships=memberships,
            decisions=decisions,
            topups=topup_balances(snap, account_id, now),
            now=now,
            explain_feature=explain_feature,
            trail=trail,
            charts=charts,
            coming=coming_changes(account, snap.catalog.features.values(), now),
            holds=snap.holds.of_account(account_id, now),
        )

    async def account(self, request: web.Request) -> web.StreamResponse:
        account_id = request.match_info["id"]
        explain_feature = request.query.get("explain", "")

        def build(viewer: Viewer) -> str:
            try:
                view = self.account_view(account_id, explain_feature)
            except EvaluationError as exc:
                raise Missing(exc.message) from exc
            return account_page(viewer, self.state.catalog, view)

        return await self._render(request, build)

    async def deliveries(self, request: web.Request) -> web.StreamResponse:
        status = request.query.get("status", "")
        before_text = request.query.get("before", "")

        def build(viewer: Viewer) -> str:
            try:
                before = int(before_text) if before_text else None
                found = self.admin.list_deliveries(status, DELIVERY_PAGE, before)
            except (ValueError, AdminError) as exc:
                raise Missing(f"No such delivery listing ({exc}).") from exc
            counts = self.state.store.count_deliveries()
            return deliveries_page(viewer, found.items, status, counts, found.next_seq)

        return await self._render(request, build)

    async def audit(self, request: web.Request) -> web.StreamResponse:
        account = request.query.get("account", "").strip()
        before_text = request.query.get("before", "")

        def build(viewer: Viewer) -> str:
            try:
                before = int(before_text) if before_text else None
            except ValueError as exc:
                raise Missing(f"No such audit page ({exc}).") from exc
            found = self.admin.list_audit(account, None, AUDIT_PAGE, before)
            return audit_page(viewer, found.items, account, found.next_seq)

        return await self._render(request, build)

    # -- actions: the admin facade, in the signed-in person's name -----------------------------

    async def _checked(self, request: web.Request) -> tuple[Session, dict[str, str]] | web.Response:
        """A change's POST: a session, its CSRF token, this origin — or the 403 page."""
        form = await request.post()
        fields = {k: str(v) for k, v in form.items()}
        session = self.sessions.get(request)
        viewer = self._viewer(session)
        if session is None:
            why = (
                "Sign in first: changes need a token from the sidecar's --token-file."
                if self.sessions.enabled
                else "This console is read-only: the sidecar has no --token-file."
            )
            return self._html(message_page(viewer, "Refused", why), 403)
        try:
            check_post(request, fields, session)
        except Refused as exc:
            return self._html(message_page(viewer, "Refused", str(exc)), 403)
        return session, fields

    async def _act(self, request: web.Request, back: str, act: Act) -> web.StreamResponse:
        """Check the POST, run `act` off the loop under the session's name, and go back to
        `back` with what it said."""
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        session, fields = checked
        loop = asyncio.get_running_loop()
        try:
            session.notice = await loop.run_in_executor(self.blocking, act, session.name, fields)
        except (AdminError, ValueError) as exc:
            session.error = str(exc)
        raise web.HTTPSeeOther(back)

    async def subscription_action(self, request: web.Request) -> web.StreamResponse:
        """A subscription change in two steps (design §12.1): the first POST shows what the
        account's decisions would become (a dry run through the admin facade, nothing
        stored); the confirmation POST (`confirm=1`, same fields) applies it."""
        account_id, sub_id = request.match_info["id"], request.match_info["sub"]
        back = BASE + account_path(account_id)
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        session, fields = checked
        viewer = self._viewer(session)
        try:
            label, operation = subscription_operation(
                request.match_info["op"], account_id, sub_id, fields
            )
        except LookupError as exc:
            return self._html(not_found_page(viewer, str(exc)), 404)
        except ValueError as exc:
            session.error = str(exc)
            raise web.HTTPSeeOther(back) from None
        actor = session.name
        loop = asyncio.get_running_loop()
        try:
            if fields.get("confirm") != "1":
                effect = await loop.run_in_executor(
                    self.blocking, preview, self.state, account_id, lambda a: operation(a, actor)
                )
                page = confirm_page(viewer, account_id, label, effect, request.path, fields)
                return self._html(page)
            await loop.run_in_executor(self.blocking, operation, self.admin, actor)
            session.notice = f"Done: {label}."
        except (AdminError, ValueError) as exc:
            session.error = str(exc)
        raise web.HTTPSeeOther(back)

    async def release_hold(self, request: web.Request) -> web.StreamResponse:
        """Release a hold (design §17) in two steps, as subscription changes: the first POST
        shows the account's decisions without the hold; `confirm=1` releases it."""
        account_id, hold_id = request.match_info["id"], request.match_info["hold"]
        back = BASE + account_path(account_id)
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        session, fields = checked
        label = f"release hold {hold_id} (no usage is recorded)"
        loop = asyncio.get_running_loop()
        try:
            if fields.get("confirm") != "1":
                effect = await loop.run_in_executor(
                    self.blocking, preview_release, self.state, account_id, hold_id
                )
                page = confirm_page(
                    self._viewer(session), account_id, label, effect, request.path, fields
                )
                return self._html(page)
            release = Holds(self.state).release
            await loop.run_in_executor(self.blocking, release, hold_id, "", account_id)
            session.notice = f"Done: {label}."
        except (AdminError, ValueError) as exc:
            session.error = str(exc)
        raise web.HTTPSeeOther(back)

    async def set_override(self, request: web.Request) -> web.StreamResponse:
        account_id = request.match_info["id"]

        def act(actor: str, form: Mapping[str, str]) -> str:
            feature = form.get("feature", "")
            self.admin.set_override(
                account_id,
                feature,
                _value(form.get("value", "")),
                expires_at=_time(form.get("expires_at", ""), "expires"),
                actor=actor,
            )
            return f"Override of {feature} set on {account_id}."

        return await self._act(request, BASE + account_path(account_id), act)

    async def add_topup(self, request: web.Request) -> web.StreamResponse:
        account_id = request.match_info["id"]

        def act(actor: str, form: Mapping[str, str]) -> str:
            try:
                amount = float(form.get("amount", ""))
            except ValueError as exc:
                raise ValueError(f"amount must be a number, got {form.get('amount')!r}") from exc
            view = self.admin.add_topup(
                account_id,
                form.get("feature", ""),
                amount,
                expires_at=_time(form.get("expires_at", ""), "expires"),
                actor=actor,
            )
            return f"Top-up {view.topup.id} of {amount:g} added to {view.topup.feature}."

        return await self._act(request, BASE + account_path(account_id), act)

    async def retry(self, request: web.Request) -> web.StreamResponse:
        def act(actor: str, form: Mapping[str, str]) -> str:
            ids = self.admin.retry_deliveries(
                form.get("id", ""), all_failed=form.get("all_failed") == "1", actor=actor
            )
            return f"{len(ids)} deliver{'y' if len(ids) == 1 else 'ies'} made due again."

        return await self._act(request, f"{BASE}/deliveries", act)

    # -- signing in --------------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        viewer = self._viewer(self.sessions.get(request))
        if not self.sessions.enabled:
            return self._html(
                not_found_page(
                    viewer,
                    "This sidecar has no --token-file: the console is read-only and needs no "
                    "sign-in.",
                ),
                404,
            )
        return self._html(login_page(viewer, _safe_next(request.query.get("next", ""))))

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        fields = {k: str(v) for k, v in form.items()}
        viewer = self._viewer(None)
        try:
            check_post(request, fields, None)
        except Refused as exc:
            return self._html(login_page(viewer, f"{BASE}/", str(exc)), 403)
        if not self.sessions.enabled:
            return self._html(not_found_page(viewer, "This console is read-only."), 404)
        try:
            signed = self.sessions.sign_in(fields.get("token", "").strip(), request.remote or "")
        except Waiting as exc:
            return self._html(login_page(viewer, f"{BASE}/", str(exc)), 429)
        next_path = _safe_next(fields.get("next", ""))
        if signed is None:
            return self._html(
                login_page(viewer, next_path, "That token is not in the sidecar's --token-file."),
                403,
            )
        sid, _ = signed
        response = web.HTTPSeeOther(next_path)
        set_cookie(response, sid)
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        session = self.sessions.get(request)
        try:
            check_post(request, {k: str(v) for k, v in form.items()}, session)
        except Refused as exc:
            return self._html(message_page(self._viewer(session), "Refused", str(exc)), 403)
        self.sessions.sign_out(request)
        response = web.HTTPSeeOther(f"{BASE}/login" if self.sessions.enabled else f"{BASE}/")
        clear_cookie(response)
        raise response
