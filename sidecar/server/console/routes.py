"""The console's HTTP routes on the management port (design §12): read the runtime, render.

Each page is built on the sidecar's blocking pool, never on the event loop: a search scans
every account and the deliveries page reads the store. Handlers only gather what the runtime
already knows and hand it to the page modules; actions call the runtime's admin facade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from urllib.parse import quote

from aiohttp import web

from ...catalog.model import Account
from ...engine import EvaluationError
from ...runtime.balances import topup_balances
from ...runtime.decisions import Decisions
from ...runtime.state import LiveState
from ...store.base import DeliveryStatus
from .accounts_page import AccountView, account_page, search_page
from .catalog_page import catalog_page
from .deliveries_page import PAGE_SIZE as DELIVERY_PAGE
from .deliveries_page import deliveries_page
from .html import Html
from .layout import BASE, Viewer
from .other_pages import login_page, message_page, not_found_page, overview_page
from .search import AccountSearch
from .session import Refused, Session, Sessions, check_post, clear_cookie, set_cookie

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


Build = Callable[[Viewer], Html]


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
        sessions: Sessions,
        blocking: Executor,
        environment: str,
    ) -> None:
        self.state = state
        self.decisions = decisions
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
        r.add_get(f"{BASE}/login", self.login_form)
        r.add_post(f"{BASE}/login", self.login)
        r.add_post(f"{BASE}/logout", self.logout)
        r.add_route("*", f"{BASE}/{{path:.*}}", self.unknown)

    # -- rendering ---------------------------------------------------------------------------

    def _viewer(self, session: Session | None) -> Viewer:
        return Viewer(
            session.name if session else None,
            session.csrf if session else "",
            self.sessions.enabled,
        )

    async def _render(self, request: web.Request, build: Build) -> web.StreamResponse:
        """Sign-in first when tokens are configured (the console then shows what only the
        token may read, like the Admin API); then the page, built off the loop."""
        session = self.sessions.get(request)
        if self.sessions.enabled and session is None:
            target = quote(request.path_qs, safe="/?=&%")
            raise web.HTTPSeeOther(f"{BASE}/login?next={target}")
        viewer = self._viewer(session)
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(self.blocking, build, viewer)
            status = 200
        except Missing as exc:
            body, status = not_found_page(viewer, str(exc)), 404
        return web.Response(status=status, body=body.encode(), headers=HEADERS)

    @staticmethod
    def _html(body: Html, status: int = 200) -> web.Response:
        return web.Response(status=status, body=body.encode(), headers=HEADERS)

    # -- pages -------------------------------------------------------------------------------

    async def to_index(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently(f"{BASE}/")

    async def unknown(self, request: web.Request) -> web.StreamResponse:
        session = self.sessions.get(request)
        return self._html(not_found_page(self._viewer(session), "No such console page."), 404)

    async def overview(self, request: web.Request) -> web.StreamResponse:
        state = self.state

        def build(viewer: Viewer) -> Html:
            snap = state.snapshot
            return overview_page(
                viewer,
                snap.catalog,
                state.catalog_error,
                len(snap.accounts),
                state.store.count_deliveries(),
                self.environment,
            )

        return await self._render(request, build)

    async def catalog(self, request: web.Request) -> web.StreamResponse:
        state = self.state

        def build(viewer: Viewer) -> Html:
            return catalog_page(viewer, state.catalog, state.catalog_error)

        return await self._render(request, build)

    async def accounts(self, request: web.Request) -> web.StreamResponse:
        query = request.query.get("q", "")
        after = request.query.get("after", "")

        def build(viewer: Viewer) -> Html:
            found = self.search.find(self.state.snapshot.accounts, query, after)
            return search_page(viewer, query, after, found, self.state.clock())

        return await self._render(request, build)

    def account_view(self, account_id: str, explain_feature: str) -> AccountView:
        """Everything the account page shows, read from the runtime now."""
        state = self.state
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
        return AccountView(
            account=account,
            memberships=memberships,
            decisions=self.decisions.evaluate_all(account_id, {}),
            topups=topup_balances(snap, account_id, now),
            now=now,
            explain_feature=explain_feature,
            trail=trail,
        )

    async def account(self, request: web.Request) -> web.StreamResponse:
        account_id = request.match_info["id"]
        explain_feature = request.query.get("explain", "")

        def build(viewer: Viewer) -> Html:
            try:
                view = self.account_view(account_id, explain_feature)
            except EvaluationError as exc:
                raise Missing(exc.message) from exc
            return account_page(viewer, self.state.catalog, view)

        return await self._render(request, build)

    async def deliveries(self, request: web.Request) -> web.StreamResponse:
        status = request.query.get("status", "")
        before_text = request.query.get("before", "")
        store = self.state.store

        def build(viewer: Viewer) -> Html:
            try:
                wanted = DeliveryStatus(status) if status else None
                before = int(before_text) if before_text else None
            except ValueError as exc:
                raise Missing(f"No such delivery listing ({exc}).") from exc
            rows = store.list_deliveries(wanted, DELIVERY_PAGE + 1, before)
            more = len(rows) > DELIVERY_PAGE
            rows = rows[:DELIVERY_PAGE]
            return deliveries_page(
                viewer,
                rows,
                status,
                store.count_deliveries(),
                rows[-1].seq if more else None,
            )

        return await self._render(request, build)

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
        signed = self.sessions.sign_in(fields.get("token", "").strip())
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
