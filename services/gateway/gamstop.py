"""The GAMSTOP-compatible check (UK register style): form fields in, the answer in headers.

``POST /`` and ``POST /gamstop/v2``; ``X-API-Key``; ``X-Trace-Id`` goes to the audit log. A ``200``
carries ``X-Exclusion`` (``Y``/``N``/``P``), ``X-Unique-Id`` (this request's id, also in the audit
log) and ``Date``. Errors are bare status codes: ``400``, ``403``, ``405``, ``429`` (``Retry-After``),
and ``503`` (``Retry-After``) whenever Selfex cannot tell: never an ``N`` it cannot vouch for.
Names count to their first 20 characters after normalisation, postcodes without spaces (the
identity hashing does both).
"""

import re
from datetime import date
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from services.gateway import access
from services.gateway.bodies import json_value
from services.gateway.context import admitted, gateway, lookup_current
from services.gateway.domain import gamstop_answer, unique
from services.gateway.edge import note
from services.gateway.problems import Problem
from shared.identity import Hasher, IdentifierKind, IdentityError, name_dob_postcode, normalise_email, normalise_mobile

router = APIRouter(tags=["GAMSTOP-compatible"])

MAX_BATCH = 1000
MAX_FIELDS = 20
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
POSTCODE = re.compile(r"[A-Za-z0-9 ]+")
REQUIRED = ("firstName", "lastName", "dateOfBirth", "email", "postcode")
FORM = "application/x-www-form-urlencoded"

CHECK_DOC: dict[str, Any] = {
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
        503: {
            "description": "Selfex cannot tell now (its view of exclusions is not known to be current, or a server it "
            "needs is away): no X-Exclusion; treat the person as excluded and retry after Retry-After (no body)",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
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


# The answer is in the headers of a 200 with no body (as GAMSTOP's): no content type is documented.
@router.post("/", response_class=Response, **CHECK_DOC)
@router.post("/gamstop/v2", response_class=Response, include_in_schema=False)
async def check(request: Request) -> Response:
    await admitted(request, request.headers.get("x-api-key"), access.Permission.CHECK, refused=_refused)
    the_gateway = gateway(request)
    now = the_gateway.clock()
    identifiers = gamstop_identifiers(await _form(request), now.date(), the_gateway.hasher)
    lookup_current(request, the_gateway)
    answer = gamstop_answer(unique(await the_gateway.checks.summaries(identifiers)), now)
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
        503: {"description": "Selfex cannot tell now: no answers; treat every record as excluded and retry after Retry-After (no body)"},
    },
    openapi_extra={
        "parameters": CHECK_DOC["openapi_extra"]["parameters"],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "maxItems": MAX_BATCH,
                        "items": CHECK_DOC["openapi_extra"]["requestBody"]["content"][FORM]["schema"],
                    }
                }
            },
        },
    },
)
async def check_batch(request: Request) -> Response:
    await admitted(request, request.headers.get("x-api-key"), access.Permission.CHECK, refused=_refused)
    records = json_value(await request.body())
    if not isinstance(records, list):
        raise Problem(400, "the body must be a JSON array", "body")
    if len(records) > MAX_BATCH:
        raise Problem(400, f"at most {MAX_BATCH} records per batch", "body")
    note(request).count = len(records)
    the_gateway = gateway(request)
    today = the_gateway.clock().date()
    hashes = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise Problem(400, f"record {index} is not an object", f"[{index}]")
        if record.get("mobile", "") is None:  # optional means left out: the schema's mobile is a string
            raise Problem(400, "mobile is null", f"[{index}].mobile")
        try:
            hashes.append(gamstop_identifiers(record, today, the_gateway.hasher))
        except Problem as problem:
            raise Problem(400, problem.error, f"[{index}].{problem.field}") from None
    lookup_current(request, the_gateway)
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
    """The form's fields; the body's size is bounded before it is read (``Edge``: 413 past the limit)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == FORM:
        try:
            return form_fields((await request.body()).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _invalid("body") from None
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=0, max_fields=MAX_FIELDS)
        except Exception:  # noqa: BLE001 — a malformed multipart body is the caller's error
            raise _invalid("body") from None
        return {name: value for name, value in form.items() if isinstance(value, str)}
    raise _invalid("Content-Type")


def form_fields(text: str) -> dict[str, str]:
    """An URL-encoded form's fields, the first value of each name; blank values kept; more than
    ``MAX_FIELDS`` fields is a ValueError."""
    fields: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS):
        fields.setdefault(name, value)
    return fields


def gamstop_identifiers(fields: dict[str, Any], today: date, hasher: Hasher) -> list[str]:
    """The five required fields and the optional mobile, checked (the first wrong one is named), as
    the keyed hashes a check looks up: what ``hasher.lookup_forms`` gives for the same ``Identity``.
    """
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
        if not 3 <= len(mobile) <= 32:
            raise _invalid("mobile")
        try:
            mobile = normalise_mobile(mobile)
        except IdentityError:
            raise _invalid("mobile") from None
    identifiers = [
        *hasher.forms(IdentifierKind.NAME_DOB_POSTCODE, name_dob_postcode(fields["firstName"], fields["lastName"], born, postcode)),
        *hasher.forms(IdentifierKind.EMAIL, normalise_email(email)),
    ]
    if mobile:
        identifiers += hasher.forms(IdentifierKind.MOBILE, mobile)
    return identifiers
