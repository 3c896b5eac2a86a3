"""Every error a client can cause answers as JSON `{"error": {"code", "message", "details"}}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from hatchway.errors import RequestError, ShuttingDown


class ErrorDetail(BaseModel):
    """What went wrong: a stable code to branch on, a sentence for people, and per-field details if any."""

    code: str = Field(description="e.g. invalid_request, job_not_found, image_not_allowed, unauthenticated.")
    message: str
    details: Any = Field(default=None, description="For invalid requests: one entry per field at fault.")


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


# Every operation may answer these, and always with an ErrorResponse: a malformed body (400), no or an unknown
# token (401), a role or a policy that says no (403), an unknown id (404), a conflict with the job's state (409),
# input too large (413), a Host the worker does not answer (421), invalid fields (422), and a worker that is
# stopping (503).
_ERROR_STATUSES = {
    "400": "Malformed request body",
    "401": "No API token, or an unknown one",
    "403": "Not allowed: the token's role, or the worker's policy",
    "404": "No such job, file or route",
    "409": "Conflicts with the job's state",
    "413": "Input too large",
    "421": "A Host this worker does not answer (see api_allowed_hosts)",
    "422": "Invalid fields",
    "503": "The worker is stopping",
}


def document_errors(app: FastAPI) -> None:
    """Say in the OpenAPI document what every error answer looks like (FastAPI's own 422 schema is not what
    this API sends), so that clients and schema checks can rely on it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        generated = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(generated.pop("$defs", {}))
        schemas["ErrorResponse"] = generated
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status, description in _ERROR_STATUSES.items():
                    responses[status] = {"description": description, "content": error}
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def error_response(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Map hatchway's, FastAPI's and Starlette's errors to clear JSON answers."""

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.status, exc.code, str(exc))

    @app.exception_handler(ShuttingDown)
    async def _shutting_down(_: Request, exc: ShuttingDown) -> JSONResponse:
        return error_response(503, "shutting_down", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_clean(error) for error in exc.errors()]
        if any(error["type"] == "json_invalid" for error in errors):
            return error_response(400, "invalid_json", "the request body is not valid JSON", errors)
        summary = "; ".join(f"{error['field']}: {error['msg']}" for error in errors)
        return error_response(422, "invalid_request", summary, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))


def _clean(error: Any) -> dict[str, Any]:
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    return {
        "field": ".".join(location) or "(body)",
        "msg": error.get("msg", ""),
        "type": error.get("type", ""),
    }
