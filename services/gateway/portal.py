"""The self-service portal: a person asks for their own exclusion, or to lift it, and proves it is theirs.

No API key: the person is verified by a one-time code or a reviewed identity document instead. The
gateway app provides, on ``app.state``: ``settings``, ``db``, ``publish`` (an Event to its topic),
``hasher``, ``sealer`` and ``policies``. Every answer is JSON; a malformed request gets a 4xx naming
the problem. Writes are commands on Kafka (``exclusion.commands``, ``verification.inputs``); each
route then reads its own write (bounded) from the gateway's own views, fed by the lifecycle and
verification topics, by ``_id`` only, and answers ``202 processing`` when the bound passes.
"""

import asyncio
import functools
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any, Literal, TypeVar

import structlog
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pymongo.errors import PyMongoError

from services.gateway import lifts
from services.gateway.bodies import json_value
from services.gateway.context import gateway
from services.gateway.problems import Problem
from services.gateway.repository import (
    MongoCommandEffects,
    MongoIdentityDocuments,
    MongoSubmissionAnswers,
    MongoVerificationViews,
    MongoViews,
)
from services.gateway.schemas import ANSWER_STATUS, born_on
from shared.events import (
    FINAL_STATES,
    SCOPE_ALL,
    Channel,
    CodeResendPayload,
    CodeSubmittedPayload,
    DocumentSubmittedPayload,
    Event,
    ExclusionRequestedPayload,
    RequestExclusion,
    ResendCode,
    Scope,
    SubmitCode,
    SubmitDocument,
    utcnow,
)
from shared.identity import PERSONAL_KINDS, Identity, IdentityError, normalise_mobile, uid_from_personnummer
from shared.policies import DurationError

router = APIRouter(prefix="/v1/portal", tags=["portal"])
log = structlog.get_logger("gateway.portal")

READ_YOUR_WRITE_SECONDS = 5.0
POLL_SECONDS = 0.05
MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
# The file's own first bytes say what it is; the declared content type is not trusted.
MAGIC_NUMBERS = (
    (b"%PDF-", "application/pdf"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
)
CODE = re.compile(r"[0-9]{6}")
# A submission's status, as verification answers it, to the portal's HTTP status.
HTTP_STATUS = ANSWER_STATUS
T = TypeVar("T")


class PortalIdentity(BaseModel):
    """The identity fields a person gives on the portal."""

    model_config = ConfigDict(extra="forbid")

    national_id: str | None = Field(default=None, description="personnummer (SE), 12 digits")
    first_name: str | None = None
    last_name: str | None = None
    date_of_birth: date | None = None
    postcode: str | None = None
    email: str | None = None
    mobile: str | None = None

    @field_validator("date_of_birth")
    @classmethod
    def _born(cls, value: date | None) -> date | None:
        return born_on(value) if value is not None else None

    def identity(self) -> Identity:
        fields = ("national_id", "first_name", "last_name", "date_of_birth", "postcode", "email", "mobile")
        return Identity(**{name: getattr(self, name) for name in fields if getattr(self, name) is not None})


class PortalExclusionRequest(PortalIdentity):
    """What the person fills in. At least one personal identifier; the code goes to ``verify_by``."""

    duration: str = Field(description="+Nd or +Nm, as the jurisdiction's policy allows", examples=["+6m"])
    jurisdiction: str = Field(default="SE", max_length=8)
    scope: Scope | None = None
    verify_by: Literal["email", "sms"] | None = Field(default=None, description="default: e-mail if given, else SMS")
    locale: str | None = Field(default=None, max_length=16)


class PortalLiftRequest(PortalIdentity):
    """Who you are (one identifier of the exclusion's person is enough), and where your code goes."""

    verify_by: Literal["email", "sms"] | None = Field(default=None, description="which contact on file gets the code; default: any")
    locale: str | None = Field(default=None, max_length=16)


def answers(route: Callable[..., Awaitable[JSONResponse]]) -> Callable[..., Awaitable[JSONResponse]]:
    """A refusal becomes its 4xx; an unreachable broker or store a 503, never a 500."""

    @functools.wraps(route)
    async def wrapper(*args, **kwargs) -> JSONResponse:
        try:
            return await route(*args, **kwargs)
        except Problem as problem:
            return problem.response()
        except (TimeoutError, PyMongoError, KafkaError, ConnectionError) as exc:
            log.warning("portal_unavailable", error=type(exc).__name__)
            return JSONResponse({"error": "the service is unavailable, try again shortly"}, status_code=503)

    return wrapper


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` written in place, for the OpenAPI document."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def _body(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


CODE_BODY = {"type": "object", "required": ["code"], "properties": {"code": {"type": "string", "pattern": "^[0-9]{6}$"}}}
DOCUMENT_BODY = {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}
REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed, or a wrong code: the JSON body names the field or the reason"},
    404: {"description": "no such exclusion"},
    409: {"description": "already used, already confirmed, or not what this request waits for"},
    410: {"description": "the code expired, or the request was cancelled"},
    503: {"description": "the broker or the store is unreachable"},
}


# --- the routes ---------------------------------------------------------------------------


@router.post(
    "/exclusions",
    status_code=202,
    responses={400: REFUSALS[400], 503: REFUSALS[503]},
    openapi_extra=_body("application/json", _inlined(PortalExclusionRequest.model_json_schema())),
)
@answers
async def request_exclusion(request: Request) -> JSONResponse:
    """Ask for an exclusion for yourself; a code (or a document request) follows."""
    return await exclusion_requested(request.app.state, _validated(PortalExclusionRequest, await _json_object(request)))


async def exclusion_requested(state, form: PortalExclusionRequest) -> JSONResponse:
    """The request, checked against its policy and published; its answer (the portal's web pages share it).
    A refusal raises ``Problem`` naming the field."""
    identity = _checked_identity(form)
    policy = state.policies.get(form.jurisdiction.upper())
    if policy is None:
        raise Problem(400, f"unknown jurisdiction; known: {', '.join(sorted(state.policies))}", "jurisdiction")
    try:
        policy.terms(form.duration)
    except DurationError as exc:
        raise Problem(400, str(exc), "duration") from None
    scope = form.scope or SCOPE_ALL
    if not {t.value for t in scope.types} <= set(policy.scopes):
        raise Problem(400, f"scope: {policy.jurisdiction} allows {', '.join(policy.scopes)}", "scope")
    identifiers = state.hasher.identifiers(identity, policy.mobile_region)
    if not PERSONAL_KINDS & identifiers.keys():
        raise Problem(400, "give a national id, an e-mail, a mobile, or first and last name with date of birth and postcode", "identity")
    verify_by = _verify_by(form, needs_code=not policy.document_check)
    command = RequestExclusion(
        source="gateway",
        payload=ExclusionRequestedPayload(
            identity=identity,
            duration=form.duration,
            scope=scope,
            jurisdiction=policy.jurisdiction,
            channel=Channel.PORTAL,
            verify_by=verify_by,
            locale=form.locale,
        ),
    ).for_person(state.hasher, policy.mobile_region)
    await state.publish(command)
    log.info("portal_exclusion_requested", request_id=str(command.id), jurisdiction=policy.jurisdiction)
    exclusion = await _within_bound(lambda: _changed_by(state.db, command.id))
    if exclusion is None:
        return JSONResponse({"status": "processing", "request_id": str(command.id)}, status_code=202)
    pending = exclusion.get("state") == "pending_verification"
    method = ("document" if policy.document_check else "code") if pending else None
    return JSONResponse({"exclusion_id": exclusion["_id"], "state": exclusion.get("state"), "verification": method}, status_code=202)


@router.post("/exclusions/{exclusion_id}/code", responses=REFUSALS, openapi_extra=_body("application/json", CODE_BODY))
@answers
async def submit_code(exclusion_id: str, request: Request) -> JSONResponse:
    """Confirm the request with the 6-digit code you received."""
    return await code_submitted(request.app.state, exclusion_id, (await _json_object(request)).get("code"))


async def code_submitted(state, exclusion_id: str, code: Any) -> JSONResponse:
    """The person's code for their request, sealed and published; verification's answer."""
    exclusion = await _known_exclusion(state.db, exclusion_id)
    if not isinstance(code, str) or not CODE.fullmatch(code.strip()):
        raise Problem(400, "code must be the 6 digits you received", "code")
    sealed = state.sealer.seal_text(code.strip(), CodeSubmittedPayload.sealing_context(exclusion))
    command = SubmitCode(source="gateway", payload=CodeSubmittedPayload(exclusion_id=exclusion, sealed_code=sealed))
    return await _published_and_answered(state, command)


@router.post(
    "/exclusions/{exclusion_id}/code/resend",
    status_code=202,
    responses=REFUSALS | {429: {"description": "no more codes: at most 3 resends"}},
)
@answers
async def resend_code(exclusion_id: str, request: Request) -> JSONResponse:
    """Send a new code (at most 3 times); the previous one stops working."""
    state = request.app.state
    exclusion = await _known_exclusion(state.db, exclusion_id)
    return await _published_and_answered(state, ResendCode(source="gateway", payload=CodeResendPayload(exclusion_id=exclusion)))


@router.post(
    "/exclusions/{exclusion_id}/documents",
    status_code=202,
    responses=REFUSALS | {413: {"description": "larger than 10 MB"}},
    openapi_extra=_body("multipart/form-data", DOCUMENT_BODY),
)
@answers
async def upload_document(exclusion_id: str, request: Request) -> JSONResponse:
    """Upload an identity document (PDF, JPEG or PNG, at most 10 MB) for review."""
    state = request.app.state
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES + 64 * 1024:
        raise Problem(413, "the document is larger than 10 MB", "file")
    exclusion = await _known_exclusion(state.db, exclusion_id)
    return await document_submitted(state, exclusion, await _uploaded_file(request))


async def document_submitted(state, exclusion: uuid.UUID, data: bytes) -> JSONResponse:
    """An identity document for the request: sniffed, sealed, kept, and submitted for review."""
    content_type = _sniffed(data)
    verification = await MongoVerificationViews(state.db).get(exclusion)
    if verification is not None and verification["state"] != "awaiting_document":
        raise Problem(409, f"this request is not waiting for a document ({verification['state']})")
    document_id = str(uuid.uuid4())
    documents = MongoIdentityDocuments(state.db)
    sealed = state.sealer.seal(data, f"document:{document_id}")
    await documents.add(document_id, exclusion_id=exclusion, content_type=content_type, size=len(data), sealed=sealed, now=utcnow())
    command = SubmitDocument(
        source="gateway",
        payload=DocumentSubmittedPayload(exclusion_id=exclusion, document_id=document_id, content_type=content_type, size=len(data)),
    )
    await state.publish(command)
    answer = await _within_bound(lambda: MongoSubmissionAnswers(state.db).get(command.id))
    if answer is not None and answer["refused"]:
        await documents.remove(document_id)
        return _answer(answer)
    status = answer["status"] if answer else "processing"
    return JSONResponse({"document_id": document_id, "status": status}, status_code=202)


@router.get("/exclusions/{exclusion_id}", responses={400: REFUSALS[400], 404: REFUSALS[404]})
@answers
async def show_exclusion(exclusion_id: str, request: Request) -> JSONResponse:
    """Where your request stands: its state, its dates (a delayed lift with its date), the verification."""
    state = request.app.state
    exclusion = await MongoViews(state.db).get(str(_uuid(exclusion_id)))
    if exclusion is None:
        raise Problem(404, "no such exclusion")
    verification = await MongoVerificationViews(state.db).get(exclusion["_id"])
    body: dict[str, Any] = {
        "exclusion_id": exclusion["_id"],
        "state": exclusion.get("state"),
        "jurisdiction": exclusion.get("jurisdiction"),
        "duration": exclusion.get("duration"),
        "starts_on": _day(exclusion.get("starts_at")),
        "ends_on": _day(exclusion.get("ends_at")),
        "minimum_until": _day(exclusion.get("minimum_until")),
        "lift_effective_at": _instant(exclusion.get("lift_effective_at")),
        "verification": None,
    }
    if verification is not None:
        code = verification["method"] == "code"
        body["verification"] = {
            "method": verification["method"],
            "state": verification["state"],
            "attempts_left": verification.get("attempts_left") if code else None,
            "resends_left": verification.get("resends_left") if code else None,
            "code_expires_at": _instant(verification.get("code_expires_at")) if code else None,
        }
    return JSONResponse(body)


# --- lifting your exclusion ---------------------------------------------------------------


@router.post(
    "/exclusions/{exclusion_id}/lift",
    status_code=202,
    responses={
        400: REFUSALS[400],
        404: {"description": "no such exclusion for this person"},
        409: {"description": "it has ended"},
        503: REFUSALS[503],
    },
    openapi_extra=_body("application/json", _inlined(PortalLiftRequest.model_json_schema())),
)
@answers
async def request_lift(exclusion_id: str, request: Request) -> JSONResponse:
    """Ask to lift your exclusion: a one-time code goes to your contact on file; your code completes
    the request, and then the jurisdiction's policy says whether, and when, it ends."""
    state = request.app.state
    form = _validated(PortalLiftRequest, await _json_object(request))
    exclusion = await MongoViews(state.db).get(str(_uuid(exclusion_id)))
    policy = state.policies.get(str(exclusion.get("jurisdiction"))) if exclusion else None
    try:
        hashes = set(state.hasher.lookup_forms(form.identity(), policy.mobile_region if policy else "GB"))
    except (ValidationError, IdentityError):
        raise Problem(400, "the identity given is not valid", "identity") from None
    if exclusion is None or not hashes & set(exclusion.get("identifiers") or []):
        raise Problem(404, "no such exclusion for this person")
    if exclusion.get("state") in {s.value for s in FINAL_STATES}:
        raise Problem(409, f"the exclusion has ended ({exclusion['state']})")
    answer = await lifts.start(gateway(request), state.db, exclusion, operator_id=None, verify_by=form.verify_by, locale=form.locale)
    return JSONResponse(answer.body, status_code=answer.status)


@router.post(
    "/lifts/{lift_id}/code",
    responses=REFUSALS | {409: {"description": "the policy refused the lift: the reason says why"}},
    openapi_extra=_body("application/json", CODE_BODY),
)
@answers
async def submit_lift_code(lift_id: str, request: Request) -> JSONResponse:
    """Complete your lift request with the 6-digit code you received; the answer is the policy's decision."""
    state = request.app.state
    lift = _uuid(lift_id, "lift_id")
    code = (await _json_object(request)).get("code")
    if not isinstance(code, str) or not CODE.fullmatch(code.strip()):
        raise Problem(400, "code must be the 6 digits you received", "code")
    answer = await lifts.complete(gateway(request), state.db, state.sealer, lift, code.strip())
    return JSONResponse(answer.body, status_code=answer.status)


@router.post(
    "/lifts/{lift_id}/code/resend", status_code=202, responses=REFUSALS | {429: {"description": "no more codes: at most 3 resends"}}
)
@answers
async def resend_lift_code(lift_id: str, request: Request) -> JSONResponse:
    """Send a new code for your lift request (at most 3 times); the previous one stops working."""
    answer = await lifts.resend(gateway(request), request.app.state.db, _uuid(lift_id, "lift_id"))
    return JSONResponse(answer.body, status_code=answer.status)


@router.get("/lifts/{lift_id}", responses={400: REFUSALS[400], 404: {"description": "no such lift request"}})
@answers
async def show_lift(lift_id: str, request: Request) -> JSONResponse:
    """Where your lift request stands: waiting for the code, verified, failed; attempts and codes left."""
    answer = await lifts.standing(request.app.state.db, _uuid(lift_id, "lift_id"))
    return JSONResponse(answer.body, status_code=answer.status)


# --- the parts ----------------------------------------------------------------------------


async def _json_object(request: Request) -> dict[str, Any]:
    body = json_value(await request.body() or b"{}")
    if not isinstance(body, dict):
        raise Problem(400, "the body must be a JSON object", "body")
    return body


def _validated(model: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        raise Problem(400, f"{field}: {first['msg']}", field) from None


def _checked_identity(form: PortalExclusionRequest) -> Identity:
    try:
        identity = form.identity()
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        raise Problem(400, f"{field}: {first['msg']}", field) from None
    for field, check in (("national_id", uid_from_personnummer), ("mobile", normalise_mobile)):
        value = getattr(identity, field)
        if value is not None:
            try:
                check(value)
            except IdentityError as exc:
                raise Problem(400, f"{field}: {exc}", field) from None
    return identity


def _verify_by(form: PortalExclusionRequest, *, needs_code: bool) -> Literal["email", "sms"] | None:
    if form.verify_by == "email" and not form.email:
        raise Problem(400, "verify_by email needs the e-mail address", "verify_by")
    if form.verify_by == "sms" and not form.mobile:
        raise Problem(400, "verify_by sms needs the mobile number", "verify_by")
    if form.verify_by or not needs_code:
        return form.verify_by
    if form.email:
        return "email"
    if form.mobile:
        return "sms"
    raise Problem(400, "a one-time code needs an e-mail address or a mobile number", "verify_by")


def _uuid(text: str, field: str = "exclusion_id") -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise Problem(400, f"{field} is not a UUID", field) from None


async def _known_exclusion(db, exclusion_id: str) -> uuid.UUID:
    exclusion = _uuid(exclusion_id)
    if await MongoViews(db).get(str(exclusion)) is None and await MongoVerificationViews(db).get(exclusion) is None:
        raise Problem(404, "no such exclusion")
    return exclusion


async def _changed_by(db, command_id: uuid.UUID) -> dict[str, Any] | None:
    """The exclusion a request made or extended, once the gateway's views hold it (two ``_id`` reads)."""
    effect = await MongoCommandEffects(db).get(command_id)
    return await MongoViews(db).get(effect["exclusion_id"]) if effect is not None else None


async def _uploaded_file(request: Request) -> bytes:
    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception:  # noqa: BLE001 — any parse failure of the multipart body is the sender's
        raise Problem(400, "the body must be multipart/form-data with one file", "file") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise Problem(400, "send the document as the multipart field 'file'", "file")
    data = await upload.read(MAX_DOCUMENT_BYTES + 1)
    await upload.close()
    if len(data) > MAX_DOCUMENT_BYTES:
        raise Problem(413, "the document is larger than 10 MB", "file")
    if not data:
        raise Problem(400, "the document is empty", "file")
    return data


def _sniffed(data: bytes) -> str:
    for magic, content_type in MAGIC_NUMBERS:
        if data.startswith(magic):
            return content_type
    raise Problem(400, "only PDF, JPEG or PNG documents are accepted (judged by the file's content)", "file")


async def _published_and_answered(state, command: Event) -> JSONResponse:
    await state.publish(command)
    answer = await _within_bound(lambda: MongoSubmissionAnswers(state.db).get(command.id))
    if answer is None:
        return JSONResponse({"status": "processing", "submission_id": str(command.id)}, status_code=202)
    return _answer(answer)


def _answer(answer: dict[str, Any]) -> JSONResponse:
    """Verification's answer to a submission, as the gateway keeps it (``submission_answers``)."""
    body: dict[str, Any] = {"status": answer["status"], "reason": answer["reason"], "exclusion_id": answer["exclusion_id"]}
    if answer.get("attempts_left") is not None:
        body["attempts_left"] = answer["attempts_left"]
    if answer.get("resends_left") is not None:
        body["resends_left"] = answer["resends_left"]
    if answer["refused"]:
        body["error"] = answer["reason"]
    return JSONResponse(body, status_code=HTTP_STATUS.get(answer["status"], 409))


async def _within_bound(probe: Callable[[], Awaitable[T | None]]) -> T | None:
    """Read your own write: poll until it shows, for at most READ_YOUR_WRITE_SECONDS."""
    deadline = time.monotonic() + READ_YOUR_WRITE_SECONDS
    while True:
        found = await probe()
        if found is not None or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(POLL_SECONDS)


def _day(value: Any) -> str | None:
    instant = _as_datetime(value)
    return instant.date().isoformat() if instant else None


def _instant(value: Any) -> str | None:
    instant = _as_datetime(value)
    return instant.isoformat() if instant else None


def _as_datetime(value: Any) -> datetime | None:
    # The embedded store may hand back a datetime written with $set as an ISO string.
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None
