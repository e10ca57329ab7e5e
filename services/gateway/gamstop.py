"""The GAMSTOP-compatible check (UK register style): form fields in, the answer in headers.

``POST /`` and ``POST /gamstop/v2``; ``X-API-Key``; ``X-Trace-Id`` goes to the audit log. A ``200``
carries ``X-Exclusion`` (``Y``/``N``/``P``), ``X-Unique-Id`` (this request's id, also in the audit
log) and ``Date``. Errors are bare status codes: ``400``, ``403``, ``405``, ``429`` (``Retry-After``).
Names count to their first 20 characters after normalisation, postcodes without spaces (the
identity hashing does both).
"""

import json
import re
from datetime import date
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from shared.identity import Identity, IdentityError, normalise_mobile

from services.gateway import access
from services.gateway.context import admitted, gateway
from services.gateway.domain import gamstop_answer, unique
from services.gateway.edge import note
from services.gateway.problems import Problem

router = APIRouter(tags=["GAMSTOP-compatible"])

MAX_BATCH = 1000
MAX_FIELDS = 20
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
POSTCODE = re.compile(r"[A-Za-z0-9 ]+")
REQUIRED = ("firstName", "lastName", "dateOfBirth", "email", "postcode")
FORM = "application/x-www-form-urlencoded"

CHECK_DOC = {
    "summary": "Is this person self-excluded? (form fields; the answer is in the headers)",
    "responses": {
        200: {
            "description": "answered: X-Exclusion Y (excluded now), N (not registered), P (previously excluded)",
            "headers": {
                "X-Exclusion": {"schema": {"type": "string", "enum": ["Y", "N", "P"]}},
                "X-Unique-Id": {"schema": {"type": "string"}, "description": "this request's id, also in the audit log"},
                "Date": {"schema": {"type": "string"}},
            },
        },
        400: {"description": "missing or invalid parameters (no body)"},
        403: {"description": "invalid API key (no body)"},
        405: {"description": "a method other than POST (no body)"},
        429: {"description": "rate limited; see Retry-After (no body)"},
    },
    "openapi_extra": {
        "parameters": [
            {"name": "X-API-Key", "in": "header", "required": True, "schema": {"type": "string"}},
            {"name": "X-Trace-Id", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        "requestBody": {
            "required": True,
            "content": {
                FORM: {
                    "schema": {
                        "type": "object",
                        "required": list(REQUIRED),
                        "properties": {
                            "firstName": {"type": "string", "example": "Harry"},
                            "lastName": {"type": "string", "example": "Potter"},
                            "dateOfBirth": {"type": "string", "format": "date", "example": "1980-07-31"},
                            "email": {"type": "string", "example": "harry@example.com"},
                            "postcode": {"type": "string", "example": "GU1 1AA"},
                            "mobile": {"type": "string", "example": "07700 900123"},
                        },
                    }
                }
            },
        },
    },
}


def _refused(exc: Exception) -> Problem:
    if isinstance(exc, access.RateLimitedError):
        return Problem(429, str(exc), headers={"Retry-After": str(exc.retry_after)})
    return Problem(403, "invalid API key")


def _invalid(field: str) -> Problem:
    return Problem(400, f"{field} is missing or invalid", field)


@router.post("/", **CHECK_DOC)
@router.post("/gamstop/v2", include_in_schema=False)
async def check(request: Request) -> Response:
    await admitted(request, request.headers.get("x-api-key"), access.Scope.CHECK, refused=_refused)
    the_gateway = gateway(request)
    now = the_gateway.clock()
    identity = gamstop_identity(await _form(request), now.date())
    answer = gamstop_answer(await the_gateway.summaries_of(identity), now)
    note(request).outcome = answer
    request_id = request.scope["state"]["request_id"]
    return Response(status_code=200, headers={"X-Exclusion": answer, "X-Unique-Id": request_id})


@router.post(
    "/gamstop/v2/batch",
    summary="Check up to 1,000 people at once (a JSON array of the same fields)",
    responses={
        200: {
            "description": "one answer per record, in order",
            "content": {"application/json": {"example": [{"exclusion": "N", "uniqueId": "8c0e…:0"}]}},
        },
        400: {"description": "not an array of valid records, or more than 1,000 (no body)"},
        403: {"description": "invalid API key (no body)"},
        429: {"description": "rate limited; see Retry-After (no body)"},
    },
    openapi_extra={
        "parameters": CHECK_DOC["openapi_extra"]["parameters"],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "array", "maxItems": MAX_BATCH, "items": CHECK_DOC["openapi_extra"]["requestBody"]["content"][FORM]["schema"]}
                }
            },
        },
    },
)
async def check_batch(request: Request) -> Response:
    await admitted(request, request.headers.get("x-api-key"), access.Scope.CHECK, refused=_refused)
    try:
        records = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "the body is not valid JSON", "body") from None
    if not isinstance(records, list):
        raise Problem(400, "the body must be a JSON array", "body")
    if len(records) > MAX_BATCH:
        raise Problem(400, f"at most {MAX_BATCH} records per batch", "body")
    note(request).count = len(records)
    the_gateway = gateway(request)
    today = the_gateway.clock().date()
    identities = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise Problem(400, f"record {index} is not an object", f"[{index}]")
        try:
            identities.append(gamstop_identity(record, today))
        except Problem as problem:
            raise Problem(400, problem.error, f"[{index}].{problem.field}") from None
    hashes = [list(the_gateway.hasher.identifiers(identity).values()) for identity in identities]
    found = await the_gateway.lookup.summaries_by_identifier(h for person in hashes for h in person)
    now = the_gateway.clock()
    request_id = request.scope["state"]["request_id"]
    answers = [
        {"exclusion": gamstop_answer(unique(s for h in person for s in found.get(h, [])), now), "uniqueId": f"{request_id}:{index}"}
        for index, person in enumerate(hashes)
    ]
    note(request).outcome = "Y:{} P:{} N:{}".format(*(sum(a["exclusion"] == x for a in answers) for x in "YPN"))
    return JSONResponse(answers, headers={"X-Unique-Id": request_id})


# --- reading the request ------------------------------------------------------------------------


async def _form(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == FORM:
        try:
            pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise _invalid("body") from None
        fields: dict[str, Any] = {}
        for name, value in pairs:
            fields.setdefault(name, value)
        return fields
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=0, max_fields=MAX_FIELDS)
        except Exception:  # noqa: BLE001 — a malformed multipart body is the caller's error
            raise _invalid("body") from None
        return {name: value for name, value in form.items() if isinstance(value, str)}
    raise _invalid("Content-Type")


def gamstop_identity(fields: dict[str, Any], today: date) -> Identity:
    """The five required fields and the optional mobile, checked; the first wrong field is named."""
    for name in REQUIRED:
        value = fields.get(name)
        if not isinstance(value, str) or not value.strip() or len(value) > 200 or not value.isprintable():
            raise _invalid(name)
    if not DATE.fullmatch(fields["dateOfBirth"]):
        raise _invalid("dateOfBirth")
    try:
        born = date.fromisoformat(fields["dateOfBirth"])
    except ValueError:
        raise _invalid("dateOfBirth") from None
    if born.year < 1900 or born > today:
        raise _invalid("dateOfBirth")
    email = fields["email"].strip()
    if len(email) > 254 or not EMAIL.fullmatch(email):
        raise _invalid("email")
    postcode = fields["postcode"].strip()
    if len(postcode) > 16 or not POSTCODE.fullmatch(postcode):
        raise _invalid("postcode")
    mobile = fields.get("mobile")
    if mobile is not None and not isinstance(mobile, str):
        raise _invalid("mobile")
    mobile = mobile.strip() if mobile else None
    if mobile:
        if len(mobile) > 32:
            raise _invalid("mobile")
        try:
            normalise_mobile(mobile)
        except IdentityError:
            raise _invalid("mobile") from None
    try:
        return Identity(
            first_name=fields["firstName"],
            last_name=fields["lastName"],
            date_of_birth=born,
            postcode=postcode,
            email=email,
            mobile=mobile,
        )
    except ValidationError as exc:
        raise _invalid(str(exc.errors()[0]["loc"][0])) from None
