"""The dashboard's session over real HTTP to a real `grpo serve`, as a browser holds it: `/login?key=` signs in with
an HttpOnly, SameSite=Strict cookie (and a readable CSRF cookie); the cookie alone reads the API; a change through it
needs the CSRF token; a Host the API is not reached by is refused before any route runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import Morsel, SimpleCookie
from typing import Any

import httpx
import pytest

from tests.callers import revoke, serve_for_module
from tests.processes import Service
from tests.specs import job_spec

SESSION, CSRF, CSRF_HEADER = "grpo_session", "grpo_csrf", "X-CSRF-Token"


@dataclass
class Dashboard:
    service: Service
    member_key: str  # a member of the service's `default` project, as the browser signs in with


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    with serve_for_module(tmp_path_factory, "dashboard-session") as service:
        yield Dashboard(service, service.make_key("default", "member"))


def browser(
    service: Service,
    method: str,
    path: str,
    cookies: dict[str, str] | None = None,
    headers: dict[str, Any] | None = None,
    **options: Any,
) -> httpx.Response:
    """A request as a browser sends it: no Authorization header, only the cookies given (none kept between calls)."""
    sent = dict(headers or {})
    if cookies:
        sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    return httpx.request(method, service.url + path, headers=sent, timeout=30, **options)


def set_cookies(response: httpx.Response) -> dict[str, Morsel[str]]:
    """The cookies an answer sets, with their attributes."""
    found: dict[str, Morsel[str]] = {}
    for header in response.headers.get_list("set-cookie"):
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(header)
        found.update(parsed)
    return found


@dataclass
class SignedIn:
    answer: httpx.Response
    cookies: dict[str, Morsel[str]]

    @property
    def session(self) -> dict[str, str]:
        """What the browser sends back: both cookies."""
        return {name: morsel.value for name, morsel in self.cookies.items()}

    @property
    def token(self) -> str:
        return self.cookies[CSRF].value


def sign_in(dashboard: Dashboard, key: str) -> SignedIn:
    answer = browser(dashboard.service, "GET", "/login", params={"key": key})
    return SignedIn(answer, set_cookies(answer))


@pytest.fixture
def signed_in(dashboard: Dashboard) -> SignedIn:
    return sign_in(dashboard, dashboard.member_key)


@pytest.fixture
def queued_job(dashboard: Dashboard) -> str:
    """A queued job of the default project (no worker runs: it stays queued until cancelled)."""
    return str(dashboard.service.submit(job_spec("/models/tiny", name="for the dashboard"))["id"])


def test_login_sets_an_httponly_strict_session_cookie_and_a_csrf_cookie(
    dashboard: Dashboard, signed_in: SignedIn
) -> None:
    assert signed_in.answer.status_code == 303 and signed_in.answer.headers["location"] == "/"
    assert set(signed_in.cookies) == {SESSION, CSRF}
    session, csrf = signed_in.cookies[SESSION], signed_in.cookies[CSRF]
    assert session.value == dashboard.member_key
    assert session["httponly"] is True and session["samesite"].lower() == "strict" and session["path"] == "/"
    # The page reads the CSRF token to send it back: that cookie is not HttpOnly, and is strict as well.
    assert not csrf["httponly"] and csrf["samesite"].lower() == "strict"
    assert csrf.value and csrf.value != dashboard.member_key
    # Served over plain HTTP, neither cookie is marked Secure (the browser would drop it).
    assert not session["secure"] and not csrf["secure"]


def test_login_with_a_wrong_key_sets_no_cookie(dashboard: Dashboard) -> None:
    refused = sign_in(dashboard, dashboard.member_key[:-4] + "AAAA")
    assert refused.answer.status_code == 401 and not refused.cookies
    assert "the key is not valid" in refused.answer.text and "<form" in refused.answer.text


def test_the_session_cookie_alone_reads_the_api_and_opens_the_dashboard(
    dashboard: Dashboard, signed_in: SignedIn, queued_job: str
) -> None:
    service = dashboard.service
    jobs = browser(service, "GET", "/v1/jobs", cookies={SESSION: signed_in.session[SESSION]})
    assert jobs.status_code == 200, jobs.text
    assert queued_job in [job["id"] for job in jobs.json()["data"]]
    page = browser(service, "GET", "/", cookies=signed_in.session)
    assert page.status_code == 200 and "sign-in" not in page.text
    # Without the cookie: the sign-in page, and the API refuses.
    assert browser(service, "GET", "/").status_code == 401
    assert browser(service, "GET", "/v1/jobs", cookies={CSRF: signed_in.token}).status_code == 401


def test_a_change_through_the_session_needs_its_csrf_token(
    dashboard: Dashboard, signed_in: SignedIn, queued_job: str
) -> None:
    service, cancel = dashboard.service, f"/v1/jobs/{queued_job}/cancel"
    other_session = sign_in(dashboard, service.make_key("default", "member"))
    wrong_tokens: list[dict[str, Any] | None] = [None, {CSRF_HEADER: ""}, {CSRF_HEADER: "0" * 64}]
    wrong_tokens += [{CSRF_HEADER: other_session.token}, {CSRF_HEADER: "é".encode("latin-1")}]  # not ASCII: no 500
    for headers in wrong_tokens:
        refused = browser(service, "POST", cancel, cookies=signed_in.session, headers=headers)
        assert refused.status_code == 403, (headers, refused.text)
        assert CSRF_HEADER in refused.json()["error"]["message"]
    assert service.job(queued_job)["status"] == "queued", "a refused change was made"
    done = browser(service, "POST", cancel, cookies=signed_in.session, headers={CSRF_HEADER: signed_in.token})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "cancelled"


def test_a_host_the_api_is_not_reached_by_is_refused_naming_the_setting(
    dashboard: Dashboard, signed_in: SignedIn
) -> None:
    service = dashboard.service
    evil = {"Host": "evil.example"}
    for method, path, options in (
        ("GET", "/v1/jobs", {"headers": {**evil, "Authorization": f"Bearer {dashboard.member_key}"}}),
        ("GET", "/", {"headers": evil, "cookies": signed_in.session}),
        ("GET", f"/login?key={dashboard.member_key}", {"headers": evil}),
    ):
        refused = browser(service, method, path, **options)
        assert refused.status_code == 400, (path, refused.text)
        error = refused.json()["error"]
        assert error["type"] == "host_not_allowed" and "GRPO_ALLOWED_HOSTS" in error["message"], error
        assert "'evil.example'" in error["message"] and not set_cookies(refused)
    # The loopback names it is reached by, with their port, are answered.
    allowed = browser(service, "GET", "/healthz", headers={"Host": f"localhost:{service.port}"})
    assert allowed.status_code == 200


def test_healthz_is_open(dashboard: Dashboard) -> None:
    answer = browser(dashboard.service, "GET", "/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_logout_removes_both_cookies(dashboard: Dashboard, signed_in: SignedIn) -> None:
    answer = browser(dashboard.service, "POST", "/logout", cookies=signed_in.session)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    removed = set_cookies(answer)
    assert set(removed) == {SESSION, CSRF}
    assert all(morsel.value == "" and morsel["max-age"] == "0" for morsel in removed.values()), removed


def test_a_login_another_site_sends_the_browser_to_signs_nobody_in(dashboard: Dashboard) -> None:
    # Else a page elsewhere could sign a visitor's dashboard in as its own key, and collect what they upload.
    for site in ("cross-site", "same-site"):
        answer = browser(
            dashboard.service, "GET", f"/login?key={dashboard.member_key}", headers={"Sec-Fetch-Site": site}
        )
        assert answer.status_code == 403, site
        assert set_cookies(answer) == {}
    typed = browser(dashboard.service, "GET", f"/login?key={dashboard.member_key}", headers={"Sec-Fetch-Site": "none"})
    assert typed.status_code == 303 and SESSION in set_cookies(typed)


def test_an_open_stream_ends_once_its_key_is_revoked(dashboard: Dashboard) -> None:
    service = dashboard.service
    job = service.submit(job_spec("/models/tiny"))  # no worker: it stays queued, and its stream stays open
    key = service.make_key("default", "viewer")
    with httpx.stream(
        "GET", f"{service.url}/v1/jobs/{job['id']}/stream", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: status"
        revoke(service, key)
        revoked = time.monotonic()
        for _ in lines:  # drains until the server closes the stream
            assert time.monotonic() - revoked < 20, "the stream outlived its key"
    assert time.monotonic() - revoked < 20
