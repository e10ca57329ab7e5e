"""What every request gets, whatever its route: an id, a size limit, a catch-all, an audit record.

A plain ASGI middleware (no per-request task or body buffering): it is on the hot path of every
check. The ``Date`` header comes from the server (uvicorn adds it to every answer).
"""

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka.errors import KafkaError
from pymongo.errors import ConnectionFailure

from shared.events import RequestHandled, RequestHandledPayload, utcnow
from shared.settings import Settings

log = structlog.get_logger("gateway")

GAMSTOP_PATHS = frozenset({"/", "/gamstop/v2", "/gamstop/v2/batch"})
BATCH_SUFFIX = "/batch"
PORTAL_PREFIX = "/v1/portal"
PORTAL_BODY_BYTES = 11 * 1024 * 1024  # a 10 MiB identity document and its multipart envelope
PORTAL_UPLOAD_PAGE = "/portal/document"  # the portal page's upload form (services/gateway/web) takes as much
UNAUDITED = frozenset({"/healthz"})  # liveness probes are nobody's request
MAX_TRACE_ID = 200


class BodyTooLargeError(Exception):
    pass


@dataclass
class Note:
    """What a route tells the audit record about its request: who, and the outcome."""

    api: str = "other"
    operator_id: str | None = None
    outcome: str | None = None
    trace_id: str | None = None
    key_fingerprint: str | None = None
    count: int | None = None
    subject: str | None = None


def note(request: Any) -> Note:
    """The note of the request being answered (from a route: ``note(request).outcome = "Y"``)."""
    return request.scope["state"]["note"]


def api_of(path: str) -> str:
    if path in GAMSTOP_PATHS:
        return "gamstop"
    if path.startswith(("/api/v1.3/", "/v1.3/")):
        return "chipout"
    if path.startswith(PORTAL_PREFIX):
        return "portal"
    if path.startswith("/v1/"):
        return "native"
    if path in {"/healthz", "/openapi.json"} or path.startswith("/docs"):
        return "operations"
    return "other"


def body_limit(path: str, settings: Settings) -> int:
    if path.startswith(PORTAL_PREFIX) or path == PORTAL_UPLOAD_PAGE:
        return max(PORTAL_BODY_BYTES, settings.gateway_max_body_bytes)
    if path.endswith(BATCH_SUFFIX):
        return settings.gateway_max_batch_body_bytes
    return settings.gateway_max_body_bytes


class Edge:
    def __init__(self, app, *, settings: Settings, record: Callable[[RequestHandled], Awaitable[None]] | None = None) -> None:
        self.app = app
        self.settings = settings
        self.record = record

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        request_id = str(uuid.uuid4())
        plain = path in GAMSTOP_PATHS
        declared, trace_id = _headers_of(scope)
        the_note = Note(api=api_of(path), trace_id=trace_id)
        scope.setdefault("state", {})
        scope["state"]["note"] = the_note
        scope["state"]["request_id"] = request_id
        status = {"code": 0}
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        limit = body_limit(path, self.settings)
        try:
            if declared == -1:
                the_note.outcome = "content-length"
                await _answer(send_with_id, 400, plain, "Content-Length is not a number", "Content-Length")
            elif declared is not None and declared > limit:
                the_note.outcome = "too large"
                await _answer(send_with_id, 413, plain, f"the request body is larger than {limit} bytes", "body")
            else:
                await self.app(scope, _limited(receive, limit), send_with_id)
        except BodyTooLargeError:
            the_note.outcome = "too large"
            if not status["code"]:
                await _answer(send_with_id, 413, plain, f"the request body is larger than {limit} bytes", "body")
        except (ConnectionFailure, KafkaError, ConnectionError, TimeoutError) as exc:
            log.warning("gateway_unavailable", path=path, error=type(exc).__name__, request_id=request_id)
            the_note.outcome = f"unavailable: {type(exc).__name__}"
            if not status["code"]:
                # ChipOut documents only 500 for a failure of ours; elsewhere 503 says: try again.
                code = 500 if the_note.api == "chipout" else 503
                await _answer(send_with_id, code, plain, "a server Selfex depends on is unavailable, try again shortly", None)
        except Exception:
            log.exception("gateway_error", path=path, request_id=request_id)
            the_note.outcome = "internal error"
            if not status["code"]:
                await _answer(send_with_id, 500, plain, "internal error", None)
        if path not in UNAUDITED:
            await self._audit(scope, request_id, status["code"], the_note, started)

    async def _audit(self, scope, request_id: str, status: int, the_note: Note, started: float) -> None:
        route = scope.get("route")
        # Built from values this module made: constructed without validating them again (hot path).
        event = RequestHandled.model_construct(
            id=uuid.uuid4(),
            type="gateway.request_handled",
            version=1,
            occurred_at=utcnow(),
            source="gateway",
            correlation_id=None,
            causation_id=None,
            operator_id=the_note.operator_id,
            subject=the_note.subject,
            payload=RequestHandledPayload.model_construct(
                request_id=request_id,
                method=scope["method"][:16],
                route=(getattr(route, "path", None) or "(no route)")[:200],
                api=the_note.api,  # type: ignore[arg-type]
                status=status,
                outcome=the_note.outcome[:200] if the_note.outcome else None,
                trace_id=the_note.trace_id,
                key_fingerprint=the_note.key_fingerprint,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                count=the_note.count,
            ),
        )
        if self.record is None:
            return
        try:
            await self.record(event)
        except Exception as exc:  # noqa: BLE001 — the answer went out; the record's loss is logged
            log.error("request_record_lost", request_id=request_id, error=type(exc).__name__)


def _headers_of(scope) -> tuple[int | None, str | None]:
    """The declared body length (-1 when not a number) and the caller's trace id, in one pass."""
    length = trace_id = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = int(value) if value.isdigit() else -1
        elif name == b"x-trace-id":
            text = value.decode("latin-1").strip()
            trace_id = "".join(c for c in text if c.isprintable())[:MAX_TRACE_ID] or None
    return length, trace_id


def _limited(receive, limit: int):
    seen = 0

    async def receive_within_limit():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLargeError()
        return message

    return receive_within_limit


async def _answer(send, status: int, plain: bool, error: str, field: str | None) -> None:
    """A JSON problem, or for the GAMSTOP paths the bare status code."""
    headers = [(b"content-length", b"0")]
    body = b""
    if not plain:
        problem: dict[str, Any] = {"error": error}
        if field:
            problem["field"] = field
        body = json.dumps(problem).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 503:
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
