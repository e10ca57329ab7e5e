"""The ChipOut-compatible API (Swedish register style, v1.3): exclude a customer, ask a customer's status.

Exactly as PROTOCOLS.md says, under both host prefixes: the key in the JSON body (exclude) or in
the query (status); ``201`` once the exclusion exists (a status call right after answers ``200``),
``202`` if registration has not written it within the bound; ``400`` naming the field, ``401`` for
a wrong key; ``500`` (ChipOut's only failure) when Selfex cannot tell a status, never a ``204``. A
key whose roles do not allow the call is a wrong key for this API (it knows no ``403``).
"""

import re
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from services.gateway import access
from services.gateway.bodies import json_value
from services.gateway.context import admitted, gateway, lookup_current
from services.gateway.domain import chipout_status, unique
from services.gateway.edge import note
from services.gateway.problems import Problem
from shared.events import Channel, ExclusionRequestedPayload, ExclusionType, Game, RequestExclusion, Scope
from shared.identity import IdentifierKind, Identity
from shared.policies import DurationError, Policy

router = APIRouter(tags=["ChipOut-compatible (v1.3)"])

JURISDICTION = "SE"
UID = re.compile(r"[0-9a-fA-F]{64}")
EARLIEST_YEAR = 1900


class ChipOutExclusion(BaseModel):
    """The body of ``POST /api/v1.3/exclude-customers`` (documentation; the route validates by hand)."""

    key: str = Field(description="the operator's API key")
    uid: str = Field(description="SHA-256 (lower-case hex) of the 12-digit personnummer without hyphen")
    type: list[Literal["GAMES", "ADS", "DM"]] = Field(min_length=1)
    games: list[Literal["POKER", "ROULETT", "BACCARAT", "PUNTOBANCO", "BLACKJACK", "CASINO", "SLOTS", "BETTING", "ALL"]] = Field(
        default_factory=list, description="required when type holds GAMES; ALL takes precedence"
    )
    duration: str = Field(description="+Nd or +Nm; +12m is until further notice, +1d the panic button")
    year: str = Field(description='year of birth, e.g. "1985" (a number is accepted too)')
    gender: Literal["M", "F", "U"]


EXCLUDE_EXAMPLE = {
    "key": "sx_…",
    "uid": "3d3a0ba4b5c2f4e1f1b7e3a0b8d3a86e0f7a2e0f1c2b3a4d5e6f708192a3b4c5",
    "type": ["GAMES"],
    "games": ["ALL"],
    "duration": "+30d",
    "year": "1985",
    "gender": "F",
}


def _refused(exc: Exception) -> Problem:
    if isinstance(exc, access.KeyMissingError):
        return Problem(400, "key is missing", "key")
    if isinstance(exc, access.RateLimitedError):
        return Problem(429, str(exc), headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, access.PermissionMissingError):
        return Problem(401, f"this API key may not do this: its roles do not allow {exc.permission.value!r}", "key")
    return Problem(401, "wrong API key", "key")


@router.post(
    "/api/v1.3/exclude-customers",
    status_code=201,
    summary="Exclude a customer (operator-attested: in force at once)",
    responses={
        201: {"description": "the exclusion exists (a status call now answers 200)"},
        202: {"description": "accepted; registration had not written it within the bound"},
        400: {"description": "a parameter is missing or wrong; the body names it"},
        401: {"description": "wrong API key"},
        429: {"description": "rate limited; see Retry-After"},
        500: {"description": "internal error, or a server Selfex needs is away: try again"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ChipOutExclusion.model_json_schema(), "example": EXCLUDE_EXAMPLE}},
        }
    },
)
@router.post("/v1.3/exclude-customers", include_in_schema=False)
async def exclude_customer(request: Request) -> Response:
    body = await _json_object(request)
    key = body.get("key")
    if key is not None and not isinstance(key, str):
        raise Problem(400, "key must be a string", "key")
    operator = await admitted(request, key, access.Permission.EXCLUDE, refused=_refused)
    the_gateway = gateway(request)
    payload = exclusion_requested(body, the_gateway.policies[JURISDICTION], the_gateway.clock().year)
    command = RequestExclusion(source="gateway", operator_id=operator.id, payload=payload)
    command = command.for_person(the_gateway.hasher, the_gateway.policies[JURISDICTION].mobile_region)
    written = await the_gateway.published_and_read(command)
    if written is None:
        note(request).outcome = "processing"
        return JSONResponse({"status": "processing", "request_id": str(command.id)}, status_code=202)
    note(request).outcome = "created"
    note(request).subject = written.exclusion.get("person_id")
    return Response(status_code=201)


@router.get(
    "/v1.3/customer-status",
    summary="A customer's exclusions in force",
    responses={
        200: {
            "description": "the exclusions in force (To: the end, or for one without an end its minimum)",
            "content": {"application/json": {"example": {"Excluded": [{"Type": "All", "From": "2026-10-01", "To": "2026-12-31"}]}}},
        },
        204: {"description": "no exclusion in force"},
        400: {"description": "a parameter is missing or wrong; the body names it"},
        401: {"description": "wrong API key"},
        429: {"description": "rate limited; see Retry-After"},
        500: {
            "description": "Selfex cannot tell now (its view of exclusions is not known to be current, or a server it needs "
            "is away); never a 204 it cannot vouch for: treat the customer as excluded and retry after Retry-After",
            "content": {
                "application/json": {"example": {"status": "unavailable", "exclusion": "unavailable", "error": "…", "reason": "…"}}
            },
        },
    },
    openapi_extra={
        "parameters": [
            {"name": "key", "in": "query", "required": True, "schema": {"type": "string"}, "description": "the operator's API key"},
            {
                "name": "uid",
                "in": "query",
                "required": True,
                "schema": {"type": "string"},
                "description": "SHA-256 hex of the personnummer",
            },
        ]
    },
)
@router.get("/api/v1.3/customer-status", include_in_schema=False)
async def customer_status(request: Request) -> Response:
    params = request.query_params
    await admitted(request, params.get("key"), access.Permission.CHECK, refused=_refused)
    uid = _uid(params.get("uid"))
    the_gateway = gateway(request)
    identifiers = the_gateway.hasher.forms(IdentifierKind.NATIONAL_ID, uid)
    lookup_current(request, the_gateway, status=500)  # ChipOut knows no 503; never a 204 it cannot vouch for
    excluded = chipout_status(unique(await the_gateway.checks.summaries(identifiers)), the_gateway.clock())
    if not excluded:
        note(request).outcome = "none"
        return Response(status_code=204)
    note(request).outcome = "excluded"
    return JSONResponse({"Excluded": excluded})


# --- reading the request ------------------------------------------------------------------------


async def _json_object(request: Request) -> dict[str, Any]:
    body = json_value(await request.body())
    if not isinstance(body, dict):
        raise Problem(400, "the body must be a JSON object", "body")
    return body


def exclusion_requested(body: dict[str, Any], policy: Policy, this_year: int) -> ExclusionRequestedPayload:
    """ChipOut's fields as an operator-attested exclusion request, or the first field that is wrong."""
    uid = _uid(body.get("uid"))
    scope = _scope(body.get("type"), body.get("games"), policy)
    duration = body.get("duration")
    if duration is None:
        raise Problem(400, "duration is missing", "duration")
    if not isinstance(duration, str):
        raise Problem(400, "duration must be a string: +Nd or +Nm", "duration")
    try:
        policy.terms(duration)
    except DurationError as exc:
        raise Problem(400, str(exc), "duration") from None
    return ExclusionRequestedPayload(
        identity=Identity(uid=uid),
        duration=duration.strip(),
        scope=scope,
        jurisdiction=policy.jurisdiction,
        attested=True,
        channel=Channel.OPERATOR,
        year_of_birth=_year(body.get("year"), this_year),
        gender=_gender(body.get("gender")),
    )


def _uid(value: Any) -> str:
    if value is None or value == "":
        raise Problem(400, "uid is missing", "uid")
    if not isinstance(value, str) or not UID.fullmatch(value):
        raise Problem(400, "uid must be the 64-character hex SHA-256 of the 12-digit personnummer", "uid")
    return value.lower()


def _strings(value: Any, field: str, allowed: set[str]) -> list[str]:
    if value is None:
        raise Problem(400, f"{field} is missing", field)
    if not isinstance(value, list) or not value:
        raise Problem(400, f"{field} must be a non-empty array of strings", field)
    for item in value:
        if not isinstance(item, str) or item not in allowed:
            shown = item if isinstance(item, str) and len(item) <= 20 else type(item).__name__
            raise Problem(400, f"{field}: {shown!r} is not one of {', '.join(sorted(allowed))}", field)
    return value


def _scope(types: Any, games: Any, policy: Policy) -> Scope:
    chosen = set(_strings(types, "type", {t.value for t in ExclusionType}))
    offered = set(policy.scopes)
    if not chosen <= offered:
        raise Problem(400, f"type {', '.join(sorted(chosen - offered))} is not offered in {policy.jurisdiction}", "type")
    picked: set[str] = set()
    if ExclusionType.GAMES.value in chosen:
        if games is None:
            raise Problem(400, "games is missing: type GAMES needs the games it excludes from (ALL for every game)", "games")
        picked = set(_strings(games, "games", {g.value for g in Game}))
    elif games is not None and games != []:
        _strings(games, "games", {g.value for g in Game})
    if Game.ALL.value in picked:
        picked = {Game.ALL.value}
    return Scope(types=frozenset(ExclusionType(t) for t in chosen), games=frozenset(Game(g) for g in picked))


def _year(value: Any, this_year: int) -> int:
    if value is None or value == "":
        raise Problem(400, "year is missing", "year")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Problem(400, 'year must be a year of birth such as "1985"', "year")
    if isinstance(value, str) and not re.fullmatch(r"\d{4}", value):
        raise Problem(400, 'year must be four digits, e.g. "1985"', "year")
    year = int(value)
    if not EARLIEST_YEAR <= year <= this_year:
        raise Problem(400, f"year must be between {EARLIEST_YEAR} and {this_year}", "year")
    return year


def _gender(value: Any) -> str:
    if value is None or value == "":
        raise Problem(400, "gender is missing", "gender")
    if value not in ("M", "F", "U"):
        raise Problem(400, "gender must be M, F or U", "gender")
    return value
