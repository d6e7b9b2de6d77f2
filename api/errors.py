"""Errors as the API answers them: `{"error": {"type", "message", "errors": [{"field", "message"}]}}`."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import ErrorBody, ErrorDetail, FieldError
from shared.spec.job import problems_from_errors
from shared.spec.problems import Problem, SpecError

log = logging.getLogger("grpo.api")

# What the database raises while it cannot be reached (stopped, restarting, the network gone, the pool exhausted):
# the client should retry, which a 503 with Retry-After says; every other database error is a bug (a 500).
DATABASE_ERRORS = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, exc.DisconnectionError)
# PostgreSQL's SQLSTATEs of a server that is away: class 08 (connection exceptions), shutting down, starting up,
# too many connections. A psycopg error with no SQLSTATE is one from the client side: no connection.
AWAY_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
SQLITE_AWAY = ("database is locked", "unable to open database file")
RETRY_AFTER_SECONDS = 5
LOG_EVERY_SECONDS = 10.0  # one warning per outage's stretch, not one per request
_last_logged = [0.0]


def database_away(error: BaseException) -> bool:
    """Whether a database error says the database cannot be reached now (rather than that a statement is wrong)."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(error, exc.OperationalError):
        return isinstance(error, DATABASE_ERRORS)
    sqlstate = getattr(error.orig, "sqlstate", "")
    if type(error.orig).__module__.startswith("psycopg"):
        return not sqlstate or sqlstate.startswith(AWAY_SQLSTATES)
    return any(words in str(error.orig) for words in SQLITE_AWAY)


class ApiError(Exception):
    """An answer other than success, with a message that says what to do."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        problems: list[Problem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.problems = problems or []
        self.headers = headers


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} does not exist")


def first_line(error: BaseException) -> str:
    """What an exception says, on one line and bounded, for a log line."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def database_unavailable(error: Exception) -> ApiError:
    """The 503 for a database that does not answer. Its own words stay in the API's log: they name hosts."""
    if time.monotonic() - _last_logged[0] > LOG_EVERY_SECONDS:
        _last_logged[0] = time.monotonic()
        log.warning("the database is unavailable (requests answer 503 meanwhile): %s", first_line(error))
    return ApiError(
        503,
        "database_unavailable",
        f"the database is unavailable (restarting or unreachable); retry in {RETRY_AFTER_SECONDS} s "
        "(operators: the API's log says why; GET /readyz answers 200 once it is back)",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def error_response(error: ApiError) -> JSONResponse:
    """The answer for `error`, in the one error shape."""
    body = ErrorBody(
        error=ErrorDetail(
            type=error.type,
            message=error.message,
            errors=[FieldError(field=p.field, message=p.message) for p in error.problems],
        )
    )
    return JSONResponse(body.model_dump(), status_code=error.status, headers=error.headers)


def _invalid_spec(problems: list[Problem]) -> ApiError:
    return ApiError(422, "invalid_request", "; ".join(p.message for p in problems), problems)


def _strip_request_part(item: dict[str, Any]) -> dict[str, Any]:
    # FastAPI prefixes locations with where the value came from ("body", "query", "path").
    location = list(item.get("loc", ()))
    if location and location[0] == "body":
        location = location[1:]
    return {**item, "loc": tuple(location)}


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error in the one shape, never with a bare 500 for bad input."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        return error_response(error)

    async def _database_error(_request: Request, error: Exception) -> JSONResponse:
        if not database_away(error):
            raise error  # a statement the database refused is a bug: the 500 it is
        return error_response(database_unavailable(error))

    for kind in DATABASE_ERRORS:
        app.add_exception_handler(kind, _database_error)

    @app.exception_handler(SpecError)
    async def _spec_error(_request: Request, error: SpecError) -> JSONResponse:
        return error_response(_invalid_spec(error.problems))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        items = [_strip_request_part(item) for item in error.errors()]
        json_errors = [item for item in items if item.get("type") == "json_invalid"]
        if json_errors:
            detail = json_errors[0].get("ctx", {}).get("error", "")
            return error_response(ApiError(422, "invalid_json", f"the request body is not valid JSON: {detail}"))
        return error_response(_invalid_spec(problems_from_errors(items)))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return error_response(ApiError(error.status_code, kind, str(error.detail)))
