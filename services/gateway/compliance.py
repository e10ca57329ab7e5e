"""The compliance queries of the audit log under ``/v1/compliance`` (docs/adr/0007): search, export,
a person's statement, statistics for regulatory reporting, and the audit chain's verification status.

The audit service answers them from its own store (its query API, ``selfex run audit-query``); the
gateway keeps the public contract: it authenticates the key, decides the scope from its role (an
``operator-compliance`` key: its own operator's records, whatever the query says; ``register-staff``
and ``regulator``: every operator's), hashes an entered identity here (every form of the hash
chain, as lookups do: the audit API never sees raw identity) and forwards; exports and statements
stream through unchanged. A malformed request is a ``400`` naming the field. The verification
status is of the whole log, every operator's: register staff and the regulator only.
"""

from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ConfigDict, Field
from starlette.background import BackgroundTask

from services.gateway import access
from services.gateway.access import Operator
from services.gateway.bodies import JsonCheckedRoute
from services.gateway.context import gateway
from services.gateway.edge import note
from services.gateway.native import KEY_RESPONSES, operator_with
from services.gateway.problems import RETRY_AFTER, Problem
from services.gateway.schemas import Moment, PersonIdentity, Strict
from shared.identity import PERSONAL_KINDS, IdentityError, normalised_identifiers
from shared.settings import InsecureSettingsError, audit_query_token

router = APIRouter(prefix="/v1/compliance", route_class=JsonCheckedRoute)
Auditor = Annotated[Operator, Depends(operator_with(access.Permission.COMPLIANCE))]
RESPONSES: dict[int | str, dict[str, Any]] = {
    **KEY_RESPONSES,
    403: {"description": "the key's roles do not allow compliance queries, or an operator's key named another operator"},
    503: {"description": "the audit's query API cannot be reached now (or is not configured); retry after Retry-After"},
}
# The audit API's names for what the caller sent under another name.
FIELDS = {"since": "from", "until": "to", "identifiers": "identity", "scope": "operator_id"}
EventType = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z_]+(\.[a-z_]+)+$")]


class RecordSearch(Strict):
    """What to look for; every part optional, all of them together."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {"identity": {"email": "harry@example.com"}, "from": "2026-01-01T00:00:00Z"},
                {"types": ["decision.made"], "operator_id": "op-1", "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"},
            ]
        },
    )

    identity: PersonIdentity | None = Field(default=None, description="the person: hashed here, never sent on or kept")
    operator_id: str | None = Field(default=None, min_length=1, max_length=100, description="an operator's records (staff keys)")
    types: list[EventType] = Field(default_factory=list, max_length=50, description="event types, e.g. decision.made")
    since: Moment | None = Field(default=None, alias="from", description="from this moment (inclusive)")
    until: Moment | None = Field(default=None, alias="to", description="up to this moment (exclusive)")


class RecordPageQuery(RecordSearch):
    cursor: str | None = Field(default=None, max_length=2000, description="next_cursor of the page before")
    limit: int = Field(default=100, ge=1, le=1000)


class StatementQuery(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [{"identity": {"email": "harry@example.com"}}]})

    identity: PersonIdentity


@router.post(
    "/records",
    tags=["compliance"],
    summary="Search the audit log: by person, operator, event type and time range; a page at a time (cursor)",
    responses={**RESPONSES, 200: {"description": "records (oldest first) and next_cursor (null on the last page)"}},
)
async def search_records(body: RecordPageQuery, caller: Auditor, request: Request) -> Response:
    query = {**_search(request, body, caller), "cursor": body.cursor, "limit": body.limit}
    answer = await _ask(request, "/v1/records", query)
    found = answer.json()
    note(request).count = len(found.get("records", []))
    return JSONResponse(found)


@router.post(
    "/records/export",
    tags=["compliance"],
    summary="Every record a search selects, streamed as CSV or JSON Lines",
    responses={**RESPONSES, 200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
async def export_records(
    body: RecordSearch,
    caller: Auditor,
    request: Request,
    format: Annotated[Literal["csv", "jsonl"], Query(description="csv or jsonl (one JSON record a line)")] = "jsonl",
) -> Response:
    return await _streamed(request, "/v1/records/export", _search(request, body, caller), {"format": format}, f"records.{format}")


@router.post(
    "/statement",
    tags=["compliance"],
    summary="A person's statement: every request, verification, activation, extension, lift, decision, enforcement and "
    "notification, with dates and times, in order (JSON, or printable HTML)",
    responses={**RESPONSES, 200: {"content": {"application/json": {}, "text/html": {}}}},
)
async def person_statement(
    body: StatementQuery,
    caller: Auditor,
    request: Request,
    format: Annotated[Literal["json", "html"], Query(description="json, or html to print")] = "json",
) -> Response:
    query = {"scope": _scope(caller, None), "identifiers": _hashes(request, body.identity)}
    return await _streamed(request, "/v1/statement", query, {"format": format}, None)


@router.get(
    "/statistics",
    tags=["compliance"],
    summary="Figures for regulatory reporting: exclusions started and active by jurisdiction, duration kind, year-of-birth band "
    "and gender; decisions by outcome per day; time-to-enforcement percentiles; parked dead letters per topic",
    responses={**RESPONSES, 200: {"content": {"application/json": {}, "text/csv": {}}}},
)
async def statistics(
    caller: Auditor,
    request: Request,
    since: Annotated[Moment | None, Query(alias="from", description="from this moment (default: the beginning)")] = None,
    until: Annotated[Moment | None, Query(alias="to", description="up to this moment (default: now); active exclusions as of then")] = None,
    operator_id: Annotated[str | None, Query(min_length=1, max_length=100, description="one operator's figures (staff keys)")] = None,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv (section, dimension, key, value)")] = "json",
) -> Response:
    scope = _scope(caller, operator_id)
    if caller.sees_every_operator and operator_id:
        scope = f"operator:{operator_id}"
    query = {"scope": scope, "since": _iso(since), "until": _iso(until)}
    return await _streamed(request, "/v1/statistics", query, {"format": format}, f"statistics.{format}")


@router.get(
    "/verification",
    tags=["compliance"],
    summary="The audit chain's verification status: the newest periodic walk of every chain (SELFEX_AUDIT_VERIFY_SECONDS), "
    "intact with its counts, or the first broken link of each chain (register staff and the regulator)",
    responses={
        **RESPONSES,
        403: {"description": "the key's roles do not allow compliance queries, or it is an operator's: the chain is every operator's"},
        200: {
            "description": "status intact | tampered | never_verified; stale: the newest result ended more than twice its interval "
            "ago; verification: when it started and ended, records and chains walked, seconds, and the first findings "
            "(chain, seq, record_id, kind: modified | deleted | inserted | reordered, detail) and problems, with their totals",
            "content": {
                "application/json": {
                    "example": {
                        "status": "tampered",
                        "stale": False,
                        "age_seconds": 412.0,
                        "every_seconds": 3600,
                        "verification": {
                            "id": "3600s:493810",
                            "started_at": "2026-05-04T10:00:01.120+00:00",
                            "ended_at": "2026-05-04T10:00:03.480+00:00",
                            "records": 12840,
                            "chains": 36,
                            "seconds": 2.36,
                            "intact": False,
                            "findings": [
                                {
                                    "chain": "selfex.decisions/2",
                                    "seq": 118,
                                    "record_id": "5f0c1e9a-8d1b-4c55-9a57-2d3f1c8b7e10",
                                    "kind": "modified",
                                    "detail": "its content no longer gives its hash, or its summary differs from its content",
                                }
                            ],
                            "findings_total": 1,
                            "problems": [],
                            "problems_total": 0,
                        },
                    }
                }
            },
        },
    },
)
async def verification_status(caller: Auditor, request: Request) -> Response:
    if not caller.sees_every_operator:
        raise Problem(403, "the audit chain is every operator's: its verification status is for register staff and the regulator")
    answer = await _ask(request, "/v1/verification", None)
    return JSONResponse(answer.json())


# --- the pieces ---------------------------------------------------------------------------------


def _scope(caller: Operator, operator_id: str | None) -> str:
    """Whose records the caller may see: every operator's (staff, the regulator), or its own operator's
    whatever it asks (naming another is a 403, never an answer)."""
    if caller.sees_every_operator:
        return "all"
    if operator_id is not None and operator_id != caller.id:
        raise Problem(403, "an operator's key reads only its own operator's records", "operator_id")
    return f"operator:{caller.id}"


def _search(request: Request, body: RecordSearch, caller: Operator) -> dict[str, Any]:
    if body.since and body.until and body.since >= body.until:
        raise Problem(400, "from must be before to", "from")
    return {
        "scope": _scope(caller, body.operator_id),
        "identifiers": _hashes(request, body.identity) if body.identity else [],
        "operator_id": body.operator_id,
        "types": body.types,
        "since": _iso(body.since),
        "until": _iso(body.until),
    }


def _hashes(request: Request, person: PersonIdentity) -> list[str]:
    """Every form of every identifier hash of the person (the audit log keeps the form of its day)."""
    identity = person.identity()
    try:
        kinds = set(normalised_identifiers(identity))
    except IdentityError as exc:
        raise Problem(400, str(exc), "identity.mobile") from None
    if not kinds & PERSONAL_KINDS:
        raise Problem(
            400,
            "identity names nobody: give uid, national_id, first_name + last_name + date_of_birth + postcode, email or mobile",
            "identity",
        )
    return gateway(request).hasher.lookup_forms(identity)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _client(request: Request) -> httpx.AsyncClient:
    """A client of the audit's query API for this request (queries are rare: none is kept)."""
    settings = gateway(request).settings
    try:
        token = audit_query_token(settings, "compliance queries are not configured")
    except InsecureSettingsError as exc:
        raise Problem(503, str(exc), headers={"Retry-After": RETRY_AFTER}) from None
    return httpx.AsyncClient(
        base_url=settings.audit_query_base_url,
        timeout=settings.audit_query_timeout_seconds,
        headers={"Authorization": f"Bearer {token}"},
    )


async def _refusal(request: Request, answer: httpx.Response) -> Problem:
    """The audit API's refusal as the caller's: its 400 names the caller's field; anything else is ours."""
    if answer.status_code == 400:
        try:
            said = answer.json()
        except ValueError:
            said = {}
        field = str(said.get("field") or "body").split(".", 1)
        name = FIELDS.get(field[0], field[0]) + (f".{field[1]}" if len(field) > 1 else "")
        return Problem(400, str(said.get("error") or "the query is not valid"), name)
    note(request).outcome = f"audit query {answer.status_code}"
    reason = "the audit query API refused the gateway's token" if answer.status_code == 401 else "the audit query API cannot answer now"
    return Problem(503, reason, headers={"Retry-After": RETRY_AFTER})


async def _ask(request: Request, path: str, query: dict[str, Any] | None) -> httpx.Response:
    """The audit API's answer to a query (POSTed), or to a GET when there is none."""
    async with _client(request) as client:
        try:
            answer = await client.post(path, json=query) if query is not None else await client.get(path)
        except httpx.HTTPError as exc:
            note(request).outcome = f"audit query unreachable: {type(exc).__name__}"
            raise Problem(503, "the audit query API cannot be reached now; retry", headers={"Retry-After": RETRY_AFTER}) from None
    if answer.status_code != 200:
        raise await _refusal(request, answer)
    return answer


async def _streamed(request: Request, path: str, query: dict[str, Any], params: dict[str, str], filename: str | None) -> Response:
    """The audit API's answer, streamed through as it comes (an export may be large)."""
    client = _client(request)
    try:
        answer = await client.send(client.build_request("POST", path, json=query, params=params), stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        note(request).outcome = f"audit query unreachable: {type(exc).__name__}"
        raise Problem(503, "the audit query API cannot be reached now; retry", headers={"Retry-After": RETRY_AFTER}) from None
    if answer.status_code != 200:
        await answer.aread()
        await answer.aclose()
        await client.aclose()
        raise await _refusal(request, answer)

    async def close() -> None:
        await answer.aclose()
        await client.aclose()

    headers = {"Content-Disposition": f'attachment; filename="{filename}"'} if filename else {}
    note(request).outcome = "streamed"
    return StreamingResponse(
        answer.aiter_bytes(), media_type=answer.headers.get("content-type"), headers=headers, background=BackgroundTask(close)
    )
