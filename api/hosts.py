"""The Host check: the API answers only to the names it is reached by (GRPO_ALLOWED_HOSTS, loopback by default).

Against DNS rebinding: a page of another site whose name is made to resolve to 127.0.0.1 reaches a local API with
its own name in the Host header, and is refused here before any route runs.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send


def host_name(header: str) -> str:
    """The name in a Host header, without its port: `127.0.0.1:8000` -> `127.0.0.1`, `[::1]:8000` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class AllowedHosts:
    """ASGI middleware: a request whose Host is not allowed gets a 400 naming the setting; `*` allows any."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        self.any = "*" in allowed
        self.allowed = frozenset(host_name(name) for name in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.any:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        name = host_name(headers.get(b"host", b"").decode("latin-1"))
        if name in self.allowed:
            await self.app(scope, receive, send)
            return
        message = (
            f"this API does not answer to the host name {name!r}: add it to GRPO_ALLOWED_HOSTS (comma-separated; "
            f"now {', '.join(sorted(self.allowed))})"
        )
        body = json.dumps({"error": {"type": "host_not_allowed", "message": message, "errors": []}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
