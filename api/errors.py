"""Errors as the API answers them: `{"error": {"type", "message", "errors": [{"field", "message"}]}}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import ErrorBody, ErrorDetail, FieldError
from shared.spec.job import problems_from_errors
from shared.spec.problems import Problem, SpecError


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
