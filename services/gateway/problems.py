"""Bad input gets a clear answer: a 4xx naming the field, as JSON (GAMSTOP's paths: the bare code).

Routes raise ``Problem``; FastAPI's own validation errors, unknown routes and wrong methods are
turned into the same shape here, so no malformed request ever reaches a 500.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from services.gateway.edge import GAMSTOP_PATHS, note


class Problem(Exception):
    """An answer other than success: status, what is wrong, and the field at fault."""

    def __init__(self, status: int, error: str, field: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.error}
        if self.field:
            body["field"] = self.field
        body.update(self.extra)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


RETRY_AFTER = "5"


class Unavailable(Problem):
    """Selfex cannot tell now, and says so rather than guess: operators treat it as a block."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(
            status,
            "Selfex cannot tell now whether this person is excluded: treat them as excluded and try again shortly",
            headers={"Retry-After": RETRY_AFTER},
        )
        self.reason = reason

    def response(self) -> JSONResponse:
        body = {"status": "unavailable", "exclusion": "unavailable", "error": self.error, "reason": self.reason}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def field_name(location: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "persons", 3, "identity", "email")`` → ``persons[3].identity.email``."""
    parts = [part for part in location if part not in ("body", "query", "path", "header")]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "body"


def from_validation(errors: Sequence[Mapping[str, Any]], prefix: str = "") -> Problem:
    """The first problem of a pydantic validation, naming its field; the rest listed after it."""
    problems = []
    for error in errors:
        name = field_name(error.get("loc", ()))
        if error.get("type") == "json_invalid":
            name, message = "body", "the body is not valid JSON"
        elif error.get("type") == "missing":
            message = f"{name} is missing"
        elif error.get("type") == "extra_forbidden":
            message = f"{name} is not a known field"
        else:
            message = f"{name}: {error.get('msg', 'invalid')}"
        if prefix and name != "body":
            name = f"{prefix}.{name}"
            message = f"{prefix}.{message}"
        problems.append({"field": name, "error": message})
    first = problems[0] if problems else {"field": "body", "error": "the request is not valid"}
    return Problem(400, first["error"], first["field"], problems=problems[:20])


def _plain(request: Request) -> bool:
    return request.url.path in GAMSTOP_PATHS


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, problem: Problem) -> Response:
        note(request).outcome = note(request).outcome or (f"{problem.field}" if problem.field else problem.error)[:200]
        if _plain(request):
            return Response(status_code=problem.status, headers=problem.headers)
        return problem.response()

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return await on_problem(request, from_validation(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def on_invalid_model(request: Request, exc: ValidationError) -> Response:
        return await on_problem(request, from_validation(exc.errors(include_url=False, include_input=False)))

    @app.exception_handler(HTTPException)
    async def on_http_exception(request: Request, exc: HTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers.setdefault("Allow", "POST")
        if _plain(request):
            return Response(status_code=exc.status_code, headers=headers)
        error = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            error = f"no route {request.url.path[:200]!r}; see /docs"
        if exc.status_code == 405:
            error = f"method {request.method} is not allowed here"
        return JSONResponse({"error": error}, status_code=exc.status_code, headers=headers)
