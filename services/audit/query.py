"""The audit's compliance query API (docs/adr/0007): read-only HTTP over the service's own store, run as
a process of its own (``selfex run audit-query``) so that queries never hold an append back.

Only the gateway calls it, with the deployment's ``SELFEX_AUDIT_QUERY_TOKEN`` as a bearer token;
the public ``/v1/compliance/...`` routes, their keys and roles are the gateway's. Every query names
its scope (``all`` or ``operator:<id>``), applied as a filter whatever else it asks; a person is
named by identifier hashes only, never by raw identity.
"""

import csv
import hmac
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from services.audit import statements
from services.audit.queries import MAX_IDENTIFIERS, AuditQueries, Criteria, QueryError, Scope
from services.audit.repository import INDEXES, MongoVerifications
from shared.events import utcnow
from shared.logging import configure_logging
from shared.service import Clock
from shared.settings import Settings, audit_query_token
from shared.store import create_client, ensure_indexes

log = structlog.get_logger("audit-query")
BEARER = HTTPBearer(auto_error=False)
CSV_COLUMNS = ("id", "occurred_at", "recorded_at", "type", "operator_id", "subject", "chain", "seq", "hash", "event")
Hash = Annotated[str, Field(min_length=3, max_length=300, pattern=r"^[a-z_]+:[A-Za-z0-9_:-]+$")]


class Scoped(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: str = Field(min_length=3, max_length=120, description="'all', or 'operator:<operator_id>': the only records answered")


class Search(Scoped):
    identifiers: list[Hash] = Field(default_factory=list, max_length=MAX_IDENTIFIERS, description="a person's identifier hashes")
    operator_id: str | None = Field(default=None, min_length=1, max_length=100)
    types: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list, max_length=50)
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None

    def criteria(self) -> Criteria:
        return Criteria(tuple(self.identifiers), self.operator_id, tuple(self.types), self.since, self.until)


class Page(Search):
    cursor: str | None = Field(default=None, max_length=2000)
    limit: int = Field(default=100, ge=1, le=1000)


class Person(Scoped):
    identifiers: list[Hash] = Field(min_length=1, max_length=MAX_IDENTIFIERS)


class Period(Scoped):
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


def address(settings: Settings) -> tuple[str, int]:
    """Where ``selfex run audit-query`` listens."""
    return settings.audit_query_host, settings.audit_query_port


def create_app(settings: Settings | None = None, *, database: AsyncDatabase | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format, service="audit-query")
    token = audit_query_token(settings, "audit-query will not start")  # refuses a weak one before anything starts
    now = clock or utcnow
    held: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        client = None
        db = database
        if db is None:
            client = create_client(settings)
            db = client[settings.database_for("audit")]
        await ensure_indexes(db, INDEXES)
        held["db"] = db
        held["queries"] = AuditQueries(db)
        held["verifications"] = MongoVerifications(db)
        log.info("audit_query_started", host=settings.audit_query_host, port=settings.audit_query_port)
        try:
            yield
        finally:
            if client is not None:
                await client.close()

    app = FastAPI(
        title="Selfex audit queries (internal)",
        version="0.1.0",
        description="Read-only queries of the audit log, for the gateway only (bearer: SELFEX_AUDIT_QUERY_TOKEN).",
        lifespan=lifespan,
    )

    async def gateway_only(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None) -> None:
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise _Refused(401, "this API answers the gateway only: send SELFEX_AUDIT_QUERY_TOKEN as a bearer token", "Authorization")

    def queries() -> AuditQueries:
        return held["queries"]

    @app.exception_handler(QueryError)
    async def on_query_error(request: Request, error: QueryError) -> JSONResponse:
        return JSONResponse({"error": str(error), "field": error.field}, status_code=400)

    @app.exception_handler(_Refused)
    async def on_refused(request: Request, refused: "_Refused") -> JSONResponse:
        return JSONResponse({"error": refused.error, "field": refused.field}, status_code=refused.status)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        name = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        return JSONResponse({"error": f"{name or 'body'}: {first.get('msg', 'invalid')}", "field": name or "body"}, status_code=400)

    @app.exception_handler(PyMongoError)
    async def on_store_away(request: Request, exc: PyMongoError) -> JSONResponse:
        log.warning("audit_query_store_error", error=type(exc).__name__)
        return JSONResponse({"error": "the audit store cannot be read now; retry"}, status_code=503, headers={"Retry-After": "5"})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        try:
            await held["db"].command("ping")
        except PyMongoError as exc:
            return JSONResponse({"status": "unavailable", "store": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    app.get("/readyz")(healthz)

    @app.post("/v1/records", dependencies=[Depends(gateway_only)])
    async def search(body: Page) -> JSONResponse:
        """One page of the records the search selects, in time order, and the cursor of the next."""
        found, next_cursor = await queries().page(Scope.parse(body.scope), body.criteria(), cursor=body.cursor, limit=body.limit)
        return JSONResponse({"records": found, "next_cursor": next_cursor})

    @app.post("/v1/records/export", dependencies=[Depends(gateway_only)])
    async def export(body: Search, format: Annotated[Literal["csv", "jsonl"], Query()] = "jsonl") -> Response:
        """Every record the search selects, streamed as CSV or JSON Lines."""
        scope, criteria = Scope.parse(body.scope), body.criteria()
        await queries().where(scope, criteria)  # a bad query is refused before the stream starts
        records = queries().every(scope, criteria)
        if format == "csv":
            return StreamingResponse(_csv(records), media_type="text/csv; charset=utf-8")
        return StreamingResponse(_jsonl(records), media_type="application/x-ndjson")

    @app.post("/v1/statement", dependencies=[Depends(gateway_only)])
    async def statement(body: Person, format: Annotated[Literal["json", "html"], Query()] = "json") -> Response:
        """Every record of one person within the scope, in order, as steps with dates and times."""
        records = await queries().statement(Scope.parse(body.scope), body.identifiers)
        made = statements.statement(records, scope=body.scope, generated_at=now())
        if format == "html":
            return HTMLResponse(statements.as_html(made))
        return JSONResponse(made)

    @app.post("/v1/statistics", dependencies=[Depends(gateway_only)])
    async def statistics(body: Period, format: Annotated[Literal["json", "csv"], Query()] = "json") -> Response:
        """The counts of regulatory reporting over the period (active exclusions: at its end)."""
        figures = await queries().statistics(Scope.parse(body.scope), body.since, body.until or now())
        if format == "csv":
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(("section", "dimension", "key", "value"))
            writer.writerows(figures.rows())
            return Response(out.getvalue(), media_type="text/csv; charset=utf-8")
        return JSONResponse(figures.as_json())

    @app.get("/v1/verification", dependencies=[Depends(gateway_only)])
    async def verification() -> JSONResponse:
        """The audit chain's newest periodic verification (the audit service's): intact, or its findings."""
        newest = await held["verifications"].newest()
        return JSONResponse(verification_status(newest, now(), settings.audit_verify_seconds))

    return app


def verification_status(newest: dict[str, Any] | None, now: datetime, every: float) -> dict[str, Any]:
    """What the newest verification says: ``status`` intact, tampered or never_verified; ``stale`` when
    it ended more than twice its interval ago (the periodic walk stopped, or fails); ``every_seconds``:
    how often this deployment verifies (0: never)."""
    if newest is None:
        return {"status": "never_verified", "stale": False, "every_seconds": every, "verification": None}
    result = {"id": newest["_id"], **{k: v for k, v in newest.items() if k != "_id"}}
    age = (now - datetime.fromisoformat(result["ended_at"])).total_seconds()
    return {
        "status": "intact" if result["intact"] else "tampered",
        "stale": age > 2 * float(result.get("interval_seconds") or every or 0),
        "age_seconds": round(max(age, 0.0), 1),
        "every_seconds": every,
        "verification": result,
    }


class _Refused(Exception):
    def __init__(self, status: int, error: str, field: str) -> None:
        super().__init__(error)
        self.status, self.error, self.field = status, error, field


async def _jsonl(records: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for record in records:
        yield (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()


async def _csv(records: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    async for record in records:
        row = {**record, "event": json.dumps(record.get("event"), separators=(",", ":"), sort_keys=True, default=str)}
        writer.writerow([row.get(name) if row.get(name) is not None else "" for name in CSV_COLUMNS])
        count += 1
        if count % 200 == 0:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()
