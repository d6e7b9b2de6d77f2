"""The web dashboard: one page (`api/static/`) over the public API, with its vendored chart and YAML libraries, and
its sign-in: `/login?key=...` (the link `grpo up` prints) checks the key and keeps it in an HttpOnly,
SameSite=Strict session cookie, with the CSRF token beside it for the page's changes (see `api/auth.py`)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from api.auth import CSRF_COOKIE, SESSION_COOKIE, csrf_token, identify, identify_key
from api.deps import ServicesDep
from api.errors import ApiError

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
SESSION_SECONDS = 7 * 24 * 3600

router = APIRouter(include_in_schema=False)

SIGN_IN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GRPO training service: sign in</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body><main class="sign-in"><h1>GRPO training service</h1><p>{message}</p>
<form method="get" action="/login"><label>API key <input name="key" type="password" autocomplete="off"
size="48" autofocus></label> <button type="submit">Sign in</button></form>
<p class="hint">`grpo up` prints a link that signs you in, and keeps its key in its data dir's <code>api-key</code>
file; an operator makes keys with <code>grpo keys create</code>.</p></main></body></html>
"""


def _sign_in_page(refused: ApiError) -> HTMLResponse:
    page = SIGN_IN.format(message=html.escape(refused.message))
    return HTMLResponse(page, status_code=refused.status, headers=refused.headers)


@router.get("/", response_model=None)
def dashboard(request: Request, svc: ServicesDep) -> Response:
    """The dashboard's page for a signed-in browser, the sign-in page otherwise; the rest is `/static/...` and the
    API."""
    try:
        identify(request, svc)
    except ApiError as refused:
        return _sign_in_page(refused)
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/login", response_model=None)
def login(request: Request, svc: ServicesDep, key: Annotated[str, Query(max_length=200)] = "") -> Response:
    """Check the key and sign the browser in with it (a session cookie), then go to the dashboard."""
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        # Another site sending the browser here would sign it in as the sender's key (and the user's uploads and
        # jobs would land in the sender's project): only a link the user opens (`none`) or this page signs in.
        refused = ApiError(403, "forbidden", "sign in from the link `grpo up` printed, or type the key here")
        return _sign_in_page(refused)
    try:
        identify_key(key, svc)
    except ApiError as refused:
        return _sign_in_page(refused)
    response = RedirectResponse("/", status_code=303)
    for name, value, http_only in ((SESSION_COOKIE, key, True), (CSRF_COOKIE, csrf_token(key), False)):
        response.set_cookie(
            name,
            value,
            max_age=SESSION_SECONDS,
            path="/",
            secure=request.url.scheme == "https",
            httponly=http_only,
            samesite="strict",
        )
    return response


@router.post("/logout")
def logout() -> RedirectResponse:
    """Sign the browser out."""
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response
