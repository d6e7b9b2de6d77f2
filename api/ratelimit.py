"""Rate limits per key on the routes that cost the service the most per request: submit (POST /v1/jobs), reward
preview (POST /v1/rewards/preview) and upload (POST /v1/files).

Each is `GRPO_RATE_LIMIT_<ACTION>` (`120/minute`; `off` for none), counted by the `limits` library over a moving
window for each caller: its key (by prefix), or its address where the API runs open (`GRPO_AUTH=off`). The counters
live where `GRPO_RATE_LIMIT_STORAGE_URL` says: by default the broker's Redis, so every API process behind a load
balancer counts together, or this process's memory on the embedded default. A request past a limit is a 429 with
`Retry-After` (whole seconds until the window lets one more through) naming the limit and its setting.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, Request
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.auth import RANKS, Writer, presented_key, remembered
from api.errors import ApiError
from api.schemas import ErrorBody
from shared.access.keys import Role
from shared.settings import Settings

log = logging.getLogger(__name__)

# A Redis that does not answer is given this long per request, once, with no retries ...
STORAGE_TIMEOUT_SECONDS = 0.5
# ... and then left alone this long before it is tried again (requests pass unlimited meanwhile).
OUTAGE_SECONDS = 10.0

# What each route's OpenAPI document says of the 429.
RATE_LIMITED_RESPONSE: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorBody,
        "description": "Past the key's rate limit (the `GRPO_RATE_LIMIT_*` setting the message names): try again "
        "after `Retry-After` seconds.",
        "headers": {
            "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}
        },
    }
}


class Action(StrEnum):
    """What a limit counts."""

    SUBMIT = "submit"
    PREVIEW = "preview"
    UPLOAD = "upload"

    @property
    def setting(self) -> str:
        return f"GRPO_RATE_LIMIT_{self.name}"

    @property
    def requests(self) -> str:
        return {"submit": "job submits", "preview": "reward previews", "upload": "uploads"}[self.value]


@dataclass(frozen=True)
class Limit:
    """One action's limit: as the operator wrote it, and as `limits` reads it (one or several windows)."""

    action: Action
    text: str
    windows: list[RateLimitItem]


def _period(window: RateLimitItem) -> str:
    unit = window.GRANULARITY.name
    return unit if window.multiples == 1 else f"{window.multiples} {unit}s"


class RateLimits:
    """The rate limits of one app (made once, in `create_app`), and the store their counters live in."""

    def __init__(self, settings: Settings) -> None:
        url = settings.effective_rate_limit_storage_url
        options: dict[str, Any] = {}
        if not url.startswith("memory"):
            # Deployments that share a Redis keep apart by queue name: so do their counters.
            options = {
                "key_prefix": f"grpo-rate-limits:{settings.queue}",
                "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
                "socket_timeout": STORAGE_TIMEOUT_SECONDS,
                "retry": Retry(NoBackoff(), 0),
            }
        self.storage_url = url
        self._limiter = MovingWindowRateLimiter(storage_from_string(url, wrap_exceptions=True, **options))
        self._limits: dict[Action, Limit] = {}
        for action in Action:
            text = getattr(settings, f"rate_limit_{action.value}")
            if text is not None:  # validated by Settings
                self._limits[action] = Limit(action, text, parse_many(text))
        self.open_api = settings.auth == "off"
        self._lock = threading.Lock()
        self._skip_storage_until = 0.0

    def check(self, action: Action, caller: str) -> None:
        """Count one request of `caller` (`key <prefix>` or `address <host>`) for `action`; a 429 past its limit.

        Where the store does not answer (Redis down), the request passes: a rate limit protects the service from
        its callers, and refusing every submit while Redis restarts would be the outage it guards against. The
        log says so, once per outage, and the store is left alone for OUTAGE_SECONDS.
        """
        limit = self._limits.get(action)
        if limit is None or time.monotonic() < self._skip_storage_until:
            return
        try:
            for window in limit.windows:
                if not self._limiter.hit(window, action.value, caller):
                    raise self._refusal(limit, window, caller)
        except StorageError as error:
            self._storage_failed(error)

    def _refusal(self, limit: Limit, window: RateLimitItem, caller: str) -> ApiError:
        reset_at = self._limiter.get_window_stats(window, limit.action.value, caller).reset_time
        retry_after = max(1, math.ceil(reset_at - time.time()))
        setting = limit.action.setting
        return ApiError(
            429,
            "rate_limited",
            f"{caller} made {window.amount} {limit.action.requests} in the last {_period(window)}, the most "
            f"{setting}={limit.text} allows: try again in {retry_after} s, or ask the operator to raise {setting}",
            headers={"Retry-After": str(retry_after)},
        )

    def _storage_failed(self, error: StorageError) -> None:
        with self._lock:
            first = time.monotonic() >= self._skip_storage_until
            self._skip_storage_until = time.monotonic() + OUTAGE_SECONDS
        if first:
            log.warning(
                "rate limits not enforced for %.0f s: their store does not answer (%s: %s)",
                OUTAGE_SECONDS,
                type(error.storage_error).__name__,
                error.storage_error,
            )


def rate_limits(request: Request) -> RateLimits:
    """The app's rate limits."""
    found: RateLimits = request.app.state.rate_limits
    return found


def _caller(limits: RateLimits, request: Request, key_prefix: str) -> str:
    if limits.open_api:  # every request is the same open identity: tell callers apart by where they call from
        return f"address {request.client.host if request.client else 'unknown'}"
    return f"key {key_prefix}"


_COUNTED = "rate_limit_counted"


def rate_limited(action: Action) -> Any:
    """A dependency that counts the request against `action`'s limit for its caller (a member key or stronger:
    a key that may not do the action is refused with a 403 before it is counted)."""

    def admit(request: Request, limits: Annotated[RateLimits, Depends(rate_limits)], caller: Writer) -> None:
        if getattr(request.state, _COUNTED, False):  # counted before its body was read (see count_before_body)
            return
        limits.check(action, _caller(limits, request, caller.key_prefix))

    return Depends(admit)


async def count_before_body(request: Request, action: Action) -> None:
    """Count a request before its body is read, where its caller is already known (the key checked a moment ago
    by `KeyFirst`): an upload past the limit is refused before it is spooled to disk. A caller not yet known, or
    one that may not do the action, is left to the route's own dependencies."""
    limits = rate_limits(request)
    key_prefix = ""
    if not limits.open_api:
        key, _ = presented_key(request)
        identity = remembered(key) if key is not None else None
        if identity is None or RANKS[identity.role] < RANKS[Role.MEMBER]:
            return
        key_prefix = identity.key_prefix
    await anyio.to_thread.run_sync(limits.check, action, _caller(limits, request, key_prefix))
    setattr(request.state, _COUNTED, True)
