"""Who a request acts as, and what it may do: every `/v1` route and the dashboard declare one of `Reader`, `Writer`
or `Admin`, so that no route is reachable without a key (the access-matrix test reads the OpenAPI document to
check it).

A request carries its key as `Authorization: Bearer <key>`, or, from the dashboard, as the HttpOnly,
SameSite=Strict session cookie that `/login` sets; a state change through the cookie also needs the CSRF header
(the double-submit token the page reads from a cookie of its own). A missing or wrong key is a 401 with
`WWW-Authenticate: Bearer`; a key whose role may not do a thing is a 403. With `GRPO_AUTH=off` (said in the log and
on /healthz) every request acts as an admin of the default project.

Authenticated keys are remembered for a few seconds per API process, so that the polling endpoints pay one
dictionary lookup rather than one database read per request; a revoked key stops working within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request
from sqlalchemy import Connection
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import Services, services
from api.errors import DATABASE_ERRORS, ApiError, database_away, database_unavailable, error_response, not_found
from shared.access.keys import Identity, Role, authenticate
from shared.access.projects import DEFAULT_PROJECT
from shared.lifecycle import Actor
from shared.store.reads import job_exists

SESSION_COOKIE = "grpo_session"
CSRF_COOKIE = "grpo_csrf"
CSRF_HEADER = "X-CSRF-Token"
REMEMBER_SECONDS = 5.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MISSING_KEY = (
    "this API needs a key: send `Authorization: Bearer <key>` (an operator makes one with `grpo keys create`; "
    "`grpo up` wrote one to its data dir's api-key file)"
)
OPEN_IDENTITY = Identity("auth-off", DEFAULT_PROJECT, Role.ADMIN)
# What each role may do, weakest first: a role may do all that the roles before it may.
RANKS = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2}


class _Remembered:
    """Keys this process authenticated recently, by their digest (never the key itself)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Identity]] = {}

    def get(self, digest: str) -> Identity | None:
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or time.monotonic() - entry[0] > REMEMBER_SECONDS:
            return None
        return entry[1]

    def put(self, digest: str, identity: Identity) -> None:
        with self._lock:
            if len(self._entries) > 10_000:  # many keys at once: start over rather than grow without bound
                self._entries.clear()
            self._entries[digest] = (time.monotonic(), identity)


_remembered = _Remembered()


def csrf_token(key: str) -> str:
    """The CSRF token that goes with a session: derived from its key, so a page of another site cannot know it."""
    return hmac.new(key.encode(), b"grpo-csrf", hashlib.sha256).hexdigest()


def presented_key(request: Request) -> tuple[str | None, bool]:
    """The key a request carries, and whether it came in the session cookie (rather than a header)."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return (value.strip() or None) if scheme.lower() == "bearer" else None, False
    cookie = request.cookies.get(SESSION_COOKIE)
    return cookie, cookie is not None


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def identify(request: Request, svc: Services) -> Identity:
    """Who the request acts as; 401 when it carries no valid key, 403 for a cookie without its CSRF token."""
    if svc.settings.auth == "off":
        return OPEN_IDENTITY
    key, from_cookie = presented_key(request)
    if key is None:
        raise _unauthorized(MISSING_KEY)
    if from_cookie and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode("utf-8", "replace"), csrf_token(key).encode()):
            raise ApiError(403, "forbidden", f"a change made through the dashboard's session needs its {CSRF_HEADER}")
    return identify_key(key, svc)


def remembered(key: str) -> Identity | None:
    """Who `key` is, if this process checked it in the last few seconds (no database read)."""
    return _remembered.get(hashlib.sha256(key.encode()).hexdigest())


def identify_key(key: str, svc: Services) -> Identity:
    """Who `key` is; 401 for a key that is unknown, wrong or revoked."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    identity = _remembered.get(digest)
    if identity is None:
        with svc.database.session() as session:
            identity = authenticate(session, key)
        if identity is None:
            raise _unauthorized("the key is not valid (unknown, mistyped or revoked): ask an operator for a new one")
        _remembered.put(digest, identity)
    return identity


def _article(role: Role) -> str:
    return "an" if role == Role.ADMIN else "a"


def require(role: Role) -> object:
    """A dependency that admits keys of `role` or stronger."""

    def admit(request: Request, svc: Annotated[Services, Depends(services)]) -> Identity:
        identity = identify(request, svc)
        if RANKS[identity.role] < RANKS[role]:
            raise ApiError(
                403,
                "forbidden",
                f"{_article(identity.role)} {identity.role.value} key may not do this: it needs "
                f"{_article(role)} {role.value} key "
                f"(key {identity.key_prefix} of project {identity.project})",
            )
        return identity

    return Depends(admit)


# What a route declares: reading a project's things, changing them, or an operator's action.
Reader = Annotated[Identity, require(Role.VIEWER)]
Writer = Annotated[Identity, require(Role.MEMBER)]
Admin = Annotated[Identity, require(Role.ADMIN)]


def scope(identity: Identity) -> str | None:
    """The project whose things a caller sees: its own, or every project (None) for an admin."""
    return None if identity.role == Role.ADMIN else identity.project


def actor(identity: Identity) -> Actor:
    """The caller as the job lifecycle sees it: its project, its key (for the audit events), what it may touch."""
    return Actor(identity.project, identity.key_prefix, scope(identity))


def require_visible_job(connection: Connection, job_id: str, identity: Identity) -> None:
    """404 unless the job exists and the caller may see it (another project's job is answered as absent)."""
    if not job_exists(connection, job_id, scope(identity)):
        raise not_found(f"job {job_id}")


class KeyFirst:
    """ASGI middleware: a `/v1` request without a valid key is refused before its route reads the body (FastAPI
    parses a body before it runs a route's dependencies, so an anonymous upload would otherwise be read first).
    The route's own `Reader` / `Writer` / `Admin` still decides what the key may do (from the remembered key)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        svc: Services = scope["app"].state.services
        try:
            if svc.settings.auth == "on":
                key, _ = presented_key(request)
                if key is None:
                    raise _unauthorized(MISSING_KEY)
                if remembered(key) is None:  # the database only on a miss: a thread hop costs the hot paths
                    await anyio.to_thread.run_sync(identify_key, key, svc)
        except ApiError as refused:
            await error_response(refused)(scope, receive, send)
            return
        except DATABASE_ERRORS as error:  # this middleware runs outside the app's exception handlers
            if not database_away(error):
                raise
            await error_response(database_unavailable(error))(scope, receive, send)
            return
        await self.app(scope, receive, send)
