"""Console sign-in: sessions, their CSRF tokens and the checks every POST passes (decision 1201).

A person signs in with a token from `--token-file`; the session remembers the token's NAME
(the audit log's "who"), never the token. The session id travels in a cookie that scripts
cannot read (HttpOnly) and that other sites never send (SameSite=Strict); each session has
its own CSRF token that every form carries; and a POST must come from this origin. Sessions
live in memory: a restart signs everyone out, which costs a sign-in, not a security hole.
"""

from __future__ import annotations

import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from ..auth import Tokens, name_of
from ..auth_guard import Failures

COOKIE = "plangate_console"
TTL_SECONDS = 8 * 3600.0
"""A session ends 8 hours after its last request: a working day, then sign in again."""

MAX_SESSIONS = 1000
"""Oldest sessions are dropped beyond this: a sign-in loop cannot grow memory without bound."""


@dataclass(slots=True)
class Session:
    name: str  # the token's name: who the audit log records
    csrf: str
    expires: float
    # what the last action said, shown once on the page it leads to
    notice: str = ""
    error: str = ""

    def flash(self) -> tuple[str, str]:
        """The last action's notice and error, once."""
        out = (self.notice, self.error)
        self.notice = self.error = ""
        return out


class Refused(Exception):
    """A POST that fails the CSRF or origin check: answered 403, nothing done."""


class Waiting(Exception):
    """A sign-in from an address that sent too many wrong tokens: answered 429, unchecked."""


class Sessions:
    """The signed-in sessions of one sidecar. `tokens` maps token -> name (from --token-file)."""

    def __init__(
        self,
        tokens: Tokens,
        clock: Callable[[], float] = time.monotonic,
        failures: Failures | None = None,
    ) -> None:
        self._tokens = dict(tokens)
        self._failures = failures or Failures()  # shared with the gRPC check (decision 1333)
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    @property
    def enabled(self) -> bool:
        """Whether there are tokens at all; without any the console is read-only."""
        return bool(self._tokens)

    def sign_in(self, token: str, address: str) -> tuple[str, Session] | None:
        """A new session for the name of `token` (the gRPC check's own comparison), or None;
        `Waiting` while `address` has sent too many wrong tokens."""
        wait = self._failures.blocked_for(address)
        if wait > 0:
            raise Waiting(
                f"Too many wrong tokens from {address}; no token is checked from there for "
                f"{math.ceil(wait)} s."
            )
        name = name_of(f"Bearer {token}", self._tokens)
        if name is None:
            self._failures.failed(address)
            return None
        sid = secrets.token_urlsafe(32)
        session = Session(name, secrets.token_urlsafe(32), self._clock() + TTL_SECONDS)
        with self._lock:
            self._sessions[sid] = session
            while len(self._sessions) > MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
        return sid, session

    def get(self, request: web.Request) -> Session | None:
        sid = request.cookies.get(COOKIE, "")
        now = self._clock()
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            if session.expires <= now:
                del self._sessions[sid]
                return None
            session.expires = now + TTL_SECONDS
            return session

    def sign_out(self, request: web.Request) -> None:
        with self._lock:
            self._sessions.pop(request.cookies.get(COOKIE, ""), None)


def same_origin(request: web.Request) -> bool:
    """Whether the request's Origin header names this server (browsers send it on every POST).

    A POST without Origin is refused too: every browser sends one with a form, and a client
    that is not a browser has no session cookie to ride on."""
    origin = request.headers.get("Origin")
    return origin is not None and origin == f"{request.scheme}://{request.host}"


def check_post(request: web.Request, form: Mapping[str, str], session: Session | None) -> None:
    """Raise `Refused` unless the POST comes from this origin and (once signed in) carries the
    session's CSRF token."""
    if not same_origin(request):
        raise Refused(
            "refused: the request does not come from this console (its Origin header is "
            f"{request.headers.get('Origin')!r}); use the console's own forms"
        )
    if session is not None and not hmac.compare_digest(
        form.get("csrf", "").encode(), session.csrf.encode()
    ):
        raise Refused("refused: the form's CSRF token does not match your session; reload the page")


def set_cookie(response: web.StreamResponse, sid: str) -> None:
    response.set_cookie(
        COOKIE,
        sid,
        path="/console",
        httponly=True,
        samesite="Strict",
        max_age=int(TTL_SECONDS),
    )


def clear_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/console")
