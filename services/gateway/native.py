"""Selfex's own operator API under ``/v1``: exclusions, people, checks, decisions, document reviews.

A key goes in ``X-API-Key`` (or ``Authorization: Bearer``); each route names the permission it
needs (``access.ROLE_PERMISSIONS`` says which roles grant it), but one: the person completes their
own lift request with the code sent to them (``/v1/lifts/{lift_id}/code``), which no key replaces.
An operator's keys reach only the exclusions that operator made or checked (anything else is a
``404``, as if it did not exist); register staff and the regulator reach every one. Writes are commands on Kafka; each then reads its own write from the gateway's views (fed by
the lifecycle topic), bounded, and answers ``202`` with the request id if they do not hold it in time.
"""

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.gateway import access, lifts
from services.gateway.access import Operator
from services.gateway.bodies import JsonCheckedRoute
from services.gateway.context import Gateway, admitted, gateway, lookup_current
from services.gateway.domain import Summary, check, gamstop_answer
from services.gateway.edge import note
from services.gateway.problems import Problem
from services.gateway.schemas import (
    BatchCheck,
    Cancellation,
    ExclusionCreate,
    ExclusionExtend,
    LiftCode,
    LiftRequest,
    Moment,
    PersonIdentity,
    PersonQuery,
    Review,
    exclusion_view,
)
from shared.events import (
    FINAL_STATES,
    CancelExclusion,
    CancellationPayload,
    Channel,
    DocumentReviewedPayload,
    ExclusionRequestedPayload,
    RequestExclusion,
    ReviewDocument,
    Scope,
)
from shared.identity import PERSONAL_KINDS, Identity, IdentityError, normalised_identifiers
from shared.policies import DurationError, Policy, PolicyError, policy_for

router = APIRouter(prefix="/v1", route_class=JsonCheckedRoute)
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="the operator's API key")
BEARER = HTTPBearer(auto_error=False, description="the operator's API key as a bearer token")
EXCLUSION_ID = Path(description="the exclusion's id (a UUID)", max_length=64)
KEY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "a field is missing, wrong or of the wrong type; the body names it"},
    401: {"description": "no API key, or a wrong one"},
    403: {"description": "the key's roles do not allow this"},
    429: {"description": "rate limited; see Retry-After"},
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "Selfex cannot tell now (its view of exclusions is not known to be current, or a server it needs is "
        'away): status and exclusion are "unavailable"; treat the person as excluded and retry after Retry-After',
        "content": {"application/json": {"example": {"status": "unavailable", "exclusion": "unavailable", "error": "…", "reason": "…"}}},
    }
}
CHECK_RESPONSES = {**KEY_RESPONSES, **UNAVAILABLE}


def _refused(exc: Exception) -> Problem:
    if isinstance(exc, access.RateLimitedError):
        return Problem(429, str(exc), headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, access.PermissionMissingError):
        return Problem(403, str(exc), "role")
    if isinstance(exc, access.KeyMissingError):
        return Problem(
            401, "no API key: send it in X-API-Key (or Authorization: Bearer)", "X-API-Key", headers={"WWW-Authenticate": "Bearer"}
        )
    return Problem(401, "wrong API key", "X-API-Key", headers={"WWW-Authenticate": "Bearer"})


def operator_with(permission: access.Permission):
    """A dependency: who is behind the request's key, if its roles grant ``permission``."""

    async def authorised(
        request: Request,
        api_key: Annotated[str | None, Security(API_KEY)] = None,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
    ) -> Operator:
        key = api_key or (bearer.credentials if bearer else None)
        return await admitted(request, key, permission, refused=_refused)

    return authorised


Checker = Annotated[Operator, Depends(operator_with(access.Permission.CHECK))]
Excluder = Annotated[Operator, Depends(operator_with(access.Permission.EXCLUDE))]
Reader = Annotated[Operator, Depends(operator_with(access.Permission.READ))]
Reviewer = Annotated[Operator, Depends(operator_with(access.Permission.REVIEW))]
# Who may cancel an exclusion made in error: register staff.
RegisterStaff = Annotated[Operator, Depends(operator_with(access.Permission.CANCEL))]


# --- exclusions ---------------------------------------------------------------------------------


@router.post(
    "/exclusions",
    tags=["exclusions"],
    status_code=201,
    summary="Exclude a person (attested by the operator: no further verification)",
    responses={**KEY_RESPONSES, 201: {"description": "the exclusion, as registered"}, 202: {"description": "accepted, not yet written"}},
)
async def create_exclusion(
    body: ExclusionCreate,
    operator: Excluder,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="the caller's key for this request: the same key with the same request within 24 hours "
            "is answered as the first was (Idempotent-Replayed: true), never registered twice; with another request, 422",
        ),
    ] = None,
    origin: Annotated[
        str | None,
        Header(
            alias="X-Selfex-Origin",
            description="a Selfex deployment forwarding its own exclusion: its name, kept as the exclusion's origin (never forwarded on)",
        ),
    ] = None,
) -> JSONResponse:
    the_gateway = gateway(request)
    policy = _policy(the_gateway, body.jurisdiction)
    _allowed(policy, body.duration, body.chosen_scope().types)
    identity = _personal(body.identity, policy)
    if origin is not None and not ORIGIN.fullmatch(origin):
        raise Problem(400, "X-Selfex-Origin must be 1 to 100 letters, digits, '.', '_' or '-'", "X-Selfex-Origin")
    command_id, replayed = uuid.uuid4(), False
    if idempotency_key is not None:
        fingerprint = _fingerprint(the_gateway, identity, body, policy, origin)
        command_id, replayed = await IdempotencyKeys(request.app.state.db).claim(
            operator.id, _valid_idempotency_key(idempotency_key), fingerprint, command_id, the_gateway.clock()
        )
    command = RequestExclusion(
        id=command_id,
        source="gateway",
        operator_id=operator.id,
        payload=ExclusionRequestedPayload(
            identity=identity,
            duration=body.duration.strip(),
            scope=body.chosen_scope(),
            jurisdiction=policy.jurisdiction,
            attested=True,
            channel=Channel.OPERATOR,
            year_of_birth=body.year_of_birth,
            gender=body.gender,
            locale=body.locale,
            origin=origin,
        ),
    ).for_person(the_gateway.hasher, policy.mobile_region)
    # A replay publishes the same command again (its id is the first's): registration knows it and
    # changes nothing, and the answer is read from what the first one did.
    answer = await _written(request, command, status=201)
    if replayed:
        answer.headers["Idempotent-Replayed"] = "true"
    return answer


@router.get(
    "/exclusions/{exclusion_id}",
    tags=["exclusions"],
    summary="One exclusion",
    responses={**KEY_RESPONSES, 404: {"description": "no such exclusion"}},
)
async def show_exclusion(operator: Reader, request: Request, exclusion_id: Annotated[str, EXCLUSION_ID]) -> JSONResponse:
    document = await _exclusion(gateway(request), exclusion_id, operator)
    return JSONResponse(_view(gateway(request), document))


@router.post(
    "/exclusions/{exclusion_id}/extend",
    tags=["exclusions"],
    summary="Extend a running exclusion (it is never shortened)",
    responses={**KEY_RESPONSES, 404: {"description": "no such exclusion for this person"}, 409: {"description": "the exclusion has ended"}},
)
async def extend_exclusion(
    body: ExclusionExtend, operator: Excluder, request: Request, exclusion_id: Annotated[str, EXCLUSION_ID]
) -> JSONResponse:
    the_gateway = gateway(request)
    document = await _persons_running_exclusion(the_gateway, exclusion_id, body.identity, operator)
    policy = _policy(the_gateway, document["jurisdiction"])
    scope = body.scope.scope() if body.scope else None
    _allowed(policy, body.duration, scope.types if scope else ())
    command = RequestExclusion(
        source="gateway",
        operator_id=operator.id,
        payload=ExclusionRequestedPayload(
            identity=_personal(body.identity, policy),
            duration=body.duration.strip(),
            scope=scope or _stored_scope(document),
            jurisdiction=policy.jurisdiction,
            attested=True,
            channel=Channel.OPERATOR,
        ),
    ).for_person(the_gateway.hasher, policy.mobile_region)
    return await _written(request, command, status=200)


@router.post(
    "/exclusions/{exclusion_id}/lift",
    tags=["exclusions"],
    status_code=202,
    summary="Relay a person's request to lift their exclusion: a one-time code goes to the person, never to the caller",
    responses={
        **KEY_RESPONSES,
        202: {"description": "a lift verification started: lift_id and status; the person completes it with their code"},
        404: {"description": "no such exclusion for this person"},
        409: {"description": "the exclusion has ended"},
    },
)
async def lift_exclusion(
    body: LiftRequest, operator: Excluder, request: Request, exclusion_id: Annotated[str, EXCLUSION_ID]
) -> JSONResponse:
    """Ending an exclusion is the person's act: this only starts the lift. The code goes to the
    person's contact on file; the person (not this key) completes it at ``/v1/lifts/{lift_id}/code``
    or on the portal, and then the policy says whether, and when, it ends."""
    the_gateway = gateway(request)
    document = await _persons_running_exclusion(the_gateway, exclusion_id, body.identity, operator)
    answer = await lifts.start(the_gateway, request.app.state.db, document, operator_id=operator.id, verify_by=body.verify_by)
    note(request).outcome = f"lift verification {answer.body.get('status', answer.status)}"
    return JSONResponse(answer.body, status_code=answer.status)


@router.post(
    "/lifts/{lift_id}/code",
    tags=["exclusions"],
    summary="The person completes their lift request with their code (no API key: the code is the proof)",
    responses={
        200: {"description": "the code was right and the policy accepted: state lift_requested (lift_effective_at says when) or lifted"},
        202: {"description": "received, not yet decided"},
        400: {"description": "malformed, or a wrong code (attempts_left says how many are left)"},
        404: {"description": "no such lift request"},
        409: {"description": "the policy refused the lift (the reason says why), or the code was used already"},
        410: {"description": "the code expired, or the lift request failed"},
    },
)
async def complete_lift(
    body: LiftCode, request: Request, lift_id: Annotated[str, Path(description="the lift request's id", max_length=64)]
) -> JSONResponse:
    """For the person's own client: an operator's key neither is needed nor helps, only the code sent to the person does."""
    try:
        lift = uuid.UUID(lift_id)
    except ValueError:
        raise Problem(400, "lift_id must be a UUID", "lift_id") from None
    the_gateway = gateway(request)
    answer = await lifts.complete(the_gateway, request.app.state.db, request.app.state.sealer, lift, body.code)
    note(request).outcome = f"lift {answer.body.get('status', answer.status)}"
    return JSONResponse(answer.body, status_code=answer.status)


@router.post(
    "/exclusions/{exclusion_id}/cancel",
    tags=["compliance"],
    summary="Cancel an exclusion made in error, with the reason (register staff); audited",
    responses={
        **KEY_RESPONSES,
        200: {"description": "cancelled: state cancelled, ended_at now"},
        202: {"description": "accepted, not yet written"},
        404: {"description": "no such exclusion"},
        409: {"description": "the exclusion has ended already"},
    },
)
async def cancel_exclusion(
    body: Cancellation, staff: RegisterStaff, request: Request, exclusion_id: Annotated[str, EXCLUSION_ID]
) -> JSONResponse:
    the_gateway = gateway(request)
    document = await _exclusion(the_gateway, exclusion_id, staff)
    if document.get("state") in {s.value for s in FINAL_STATES}:
        raise Problem(409, f"exclusion {exclusion_id} has ended ({document['state']})", "exclusion_id")
    command = CancelExclusion(
        source="gateway",
        operator_id=staff.id,
        subject=document.get("person_id"),
        payload=CancellationPayload(exclusion_id=uuid.UUID(document["_id"]), reason=body.reason, cancelled_by=staff.name[:200]),
    )
    written = await the_gateway.published_and_read(command)
    if written is None:
        return _processing(request, command.id)
    note(request).outcome = "cancelled"
    return JSONResponse(_view(the_gateway, written.exclusion))


# --- people and checks --------------------------------------------------------------------------


@router.post(
    "/persons/status", tags=["people"], summary="A person's exclusions in force, and the GAMSTOP-style answer", responses=CHECK_RESPONSES
)
async def person_status(body: PersonQuery, operator: Checker, request: Request) -> JSONResponse:
    the_gateway = gateway(request)
    documents = await _persons_exclusions(request, the_gateway, body.identity, operator)
    now = the_gateway.clock()
    summaries = [Summary.from_exclusion(d) for d in documents]
    answer = gamstop_answer(summaries, now)
    note(request).outcome = answer
    in_force = [exclusion_view(d, s.in_force(now)) for d, s in zip(documents, summaries, strict=True) if s.in_force(now)]
    return JSONResponse({"exclusion": answer, "excluded": answer == "Y", "in_force": in_force})


@router.post("/persons/history", tags=["people"], summary="Every exclusion of a person, oldest first", responses=CHECK_RESPONSES)
async def person_history(body: PersonQuery, operator: Checker, request: Request) -> JSONResponse:
    the_gateway = gateway(request)
    documents = await _persons_exclusions(request, the_gateway, body.identity, operator)
    note(request).count = len(documents)
    return JSONResponse({"exclusions": [_view(the_gateway, d) for d in documents]})


@router.post("/checks", tags=["checks"], summary="Check one person: excluded, from what, until when", responses=CHECK_RESPONSES)
async def check_person(body: PersonQuery, operator: Checker, request: Request) -> JSONResponse:
    the_gateway = gateway(request)
    identity = _personal(body.identity)
    lookup_current(request, the_gateway)
    result = check(await the_gateway.summaries_of(identity), the_gateway.clock())
    note(request).outcome = result.exclusion
    return JSONResponse(result.as_json())


@router.post(
    "/checks/batch",
    tags=["checks"],
    summary="Check up to 10,000 people at once (e.g. to suppress a marketing list); answers in order",
    responses=CHECK_RESPONSES,
)
async def check_batch(body: BatchCheck, operator: Checker, request: Request) -> JSONResponse:
    the_gateway = gateway(request)
    identities = [_personal(person.identity, field=f"persons[{i}].identity") for i, person in enumerate(body.persons)]
    hashes = [the_gateway.hasher.lookup_forms(identity) for identity in identities]
    lookup_current(request, the_gateway)
    found = await the_gateway.lookup.summaries_by_identifier(h for person in hashes for h in person)
    now = the_gateway.clock()
    results = []
    for person, person_hashes in zip(body.persons, hashes, strict=True):
        summaries = {s.exclusion_id: s for h in person_hashes for s in found.get(h, [])}
        results.append({"ref": person.ref, **check(summaries.values(), now).as_json()})
    note(request).count = len(results)
    note(request).outcome = f"excluded:{sum(r['excluded'] for r in results)}"
    return JSONResponse({"results": results})


# --- decisions and reviews ----------------------------------------------------------------------


@router.get(
    "/decisions",
    tags=["decisions"],
    summary="This operator's own decisions, newest first (register staff and the regulator name the operator)",
    responses=KEY_RESPONSES,
)
async def own_decisions(
    operator: Reader,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[Moment | None, Query(description="only decisions made before this moment (for paging; 1970 to 9999)")] = None,
    operator_id: Annotated[
        str | None, Query(max_length=100, description="whose decisions: an operator's key reads only its own; staff keys must name one")
    ] = None,
) -> JSONResponse:
    whose = _whose_decisions(operator, operator_id)
    found = await gateway(request).decisions.of(whose, limit=limit, before=before)
    decisions = [{"decision_id": d["_id"], "occurred_at": _iso(d["occurred_at"]), **d["decision"]} for d in found]
    next_before = decisions[-1]["occurred_at"] if len(decisions) == limit else None
    note(request).count = len(decisions)
    return JSONResponse({"decisions": decisions, "next_before": next_before})


@router.post(
    "/verifications/{exclusion_id}/documents/{document_id}/review",
    tags=["compliance"],
    status_code=202,
    summary="Approve or reject an identity document (register staff)",
    responses={**KEY_RESPONSES, 202: {"description": "the review was sent to verification"}, 404: {"description": "no such exclusion"}},
)
async def review_document(
    body: Review,
    operator: Reviewer,
    request: Request,
    exclusion_id: Annotated[str, EXCLUSION_ID],
    document_id: Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")],
) -> JSONResponse:
    the_gateway = gateway(request)
    await _exclusion(the_gateway, exclusion_id, operator)
    command = ReviewDocument(
        source="gateway",
        operator_id=operator.id,
        payload=DocumentReviewedPayload(
            exclusion_id=uuid.UUID(exclusion_id),
            document_id=document_id,
            approved=body.approved,
            reviewer=operator.name[:200],
            note=body.note,
        ),
    )
    await the_gateway.publish(command)
    note(request).outcome = "approved" if body.approved else "rejected"
    return JSONResponse({"status": "accepted", "review_id": str(command.id)}, status_code=202)


# --- the pieces ---------------------------------------------------------------------------------


async def _written(request: Request, command: RequestExclusion, *, status: int) -> JSONResponse:
    the_gateway = gateway(request)
    written = await the_gateway.published_and_read(command)
    if written is None:
        return _processing(request, command.id)
    exclusion = written.exclusion
    note(request).outcome = "created" if status == 201 else "extended"
    note(request).subject = exclusion.get("person_id")
    headers = {"Location": f"/v1/exclusions/{exclusion['_id']}"}
    return JSONResponse(_view(the_gateway, exclusion), status_code=status, headers=headers)


def _processing(request: Request, command_id: uuid.UUID) -> JSONResponse:
    note(request).outcome = "processing"
    return JSONResponse({"status": "processing", "request_id": str(command_id)}, status_code=202)


def _view(the_gateway: Gateway, document: dict[str, Any]) -> dict[str, Any]:
    return exclusion_view(document, Summary.from_exclusion(document).in_force(the_gateway.clock()))


def _policy(the_gateway: Gateway, jurisdiction: str) -> Policy:
    try:
        return policy_for(the_gateway.policies, jurisdiction)
    except PolicyError as exc:
        raise Problem(400, str(exc), "jurisdiction") from None


def _allowed(policy: Policy, duration: str, types) -> None:
    try:
        policy.terms(duration)
    except DurationError as exc:
        raise Problem(400, str(exc), "duration") from None
    not_offered = sorted(t.value for t in types if t.value not in policy.scopes)
    if not_offered:
        raise Problem(400, f"scope {', '.join(not_offered)} is not offered in {policy.jurisdiction}", "scope.types")


def _personal(person: PersonIdentity, policy: Policy | None = None, *, field: str = "identity") -> Identity:
    """The identity, if it names someone (a national id, name + birth date + postcode, e-mail or mobile)."""
    identity = person.identity()
    try:
        kinds = set(normalised_identifiers(identity, policy.mobile_region if policy else "GB"))
    except IdentityError as exc:
        raise Problem(400, str(exc), f"{field}.mobile") from None
    if not kinds & PERSONAL_KINDS:
        raise Problem(
            400, "identity names nobody: give uid, national_id, first_name + last_name + date_of_birth + postcode, email or mobile", field
        )
    return identity


def _valid_id(exclusion_id: str) -> str:
    try:
        return str(uuid.UUID(exclusion_id))
    except ValueError:
        raise Problem(400, "exclusion_id must be a UUID", "exclusion_id") from None


async def _visible(the_gateway: Gateway, exclusion_id: str, caller: Operator) -> dict[str, Any] | None:
    """The exclusion's view, if the caller may see it: staff and the regulator every one, an
    operator's keys those the operator made or checked (each a read by ``_id``)."""
    valid = _valid_id(exclusion_id)
    if not caller.sees_every_operator and not await the_gateway.views.known_to(valid, caller.id):
        return None
    return await the_gateway.views.get(valid)


async def _exclusion(the_gateway: Gateway, exclusion_id: str, caller: Operator) -> dict[str, Any]:
    document = await _visible(the_gateway, exclusion_id, caller)
    if document is None:
        raise Problem(404, f"no exclusion {exclusion_id}", "exclusion_id")
    return document


async def _persons_running_exclusion(the_gateway: Gateway, exclusion_id: str, person: PersonIdentity, caller: Operator) -> dict[str, Any]:
    """The exclusion, if the caller may see it, it belongs to this person and it has not ended."""
    document = await _visible(the_gateway, exclusion_id, caller)
    hashes = set(the_gateway.hasher.lookup_forms(_personal(person)))
    if document is None or not hashes & set(document.get("identifiers") or []):
        raise Problem(404, f"no exclusion {exclusion_id} for this person", "exclusion_id")
    if document.get("state") in {s.value for s in FINAL_STATES}:
        raise Problem(409, f"exclusion {exclusion_id} has ended ({document['state']}); request a new one", "exclusion_id")
    return document


async def _persons_exclusions(request: Request, the_gateway: Gateway, person: PersonIdentity, caller: Operator) -> list[dict[str, Any]]:
    """The person's exclusions; an operator that sees them (it checked the person) may read them by id after."""
    identity = _personal(person)
    lookup_current(request, the_gateway)
    summaries = await the_gateway.summaries_of(identity)
    documents = await the_gateway.views.many(s.exclusion_id for s in summaries)
    if not caller.staff:
        now = the_gateway.clock()
        for document in documents:
            await the_gateway.views.note_operator(document["_id"], caller.id, "checked", now)
    return documents


def _whose_decisions(caller: Operator, operator_id: str | None) -> str:
    """An operator's keys read their operator's decisions; staff keys (casework, the regulator) name the operator."""
    if caller.sees_every_operator:
        if not operator_id:
            raise Problem(400, "name the operator whose decisions to read (operator_id)", "operator_id")
        return operator_id
    if operator_id and operator_id != caller.id:
        raise Problem(403, "an operator's key reads only its own decisions", "operator_id")
    return caller.id


def _stored_scope(document: dict[str, Any]) -> Scope:
    return Scope.model_validate(document["scope"])


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# --- idempotency keys ---------------------------------------------------------------------------

IDEMPOTENCY_WINDOW = timedelta(hours=24)
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")  # visible ASCII, as an HTTP header carries it
ORIGIN = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def _valid_idempotency_key(key: str) -> str:
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise Problem(400, "Idempotency-Key must be 1 to 200 visible ASCII characters", "Idempotency-Key")
    return key


def _fingerprint(the_gateway: Gateway, identity: Identity, body: ExclusionCreate, policy: Policy, origin: str | None) -> str:
    """What makes two requests the same one: the person (as keyed hashes, never the raw fields) and the terms."""
    what = {
        "identifiers": sorted(the_gateway.hasher.identifiers(identity, policy.mobile_region).values()),
        "duration": body.duration.strip(),
        "scope": body.chosen_scope().model_dump(mode="json"),
        "jurisdiction": policy.jurisdiction,
        "origin": origin,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=sorted).encode()).hexdigest()


class IdempotencyKeys:
    """(operator, Idempotency-Key) → the command its first request made, for 24 hours (a TTL index)."""

    _indexed: ClassVar[set[int]] = set()  # the databases whose TTL index this process made

    def __init__(self, database: AsyncDatabase) -> None:
        self._database = database
        self._keys = database["idempotency_keys"]

    async def claim(self, operator_id: str, key: str, fingerprint: str, command_id: uuid.UUID, now: datetime) -> tuple[uuid.UUID, bool]:
        """The command id to use, and whether the key was used before (a replay). The same key with
        another request is a 422; a key older than 24 hours is taken as new."""
        if id(self._database) not in self._indexed:
            await self._keys.create_index([("created_at", ASCENDING)], expireAfterSeconds=int(IDEMPOTENCY_WINDOW.total_seconds()))
            self._indexed.add(id(self._database))
        document_id = f"{operator_id}/{key}"
        for _ in range(3):
            found = await self._keys.find_one({"_id": document_id})
            if found is not None and _aware(found["created_at"]) + IDEMPOTENCY_WINDOW <= now:
                await self._keys.delete_one({"_id": document_id, "command_id": found["command_id"]})  # expired: the TTL monitor is late
                found = None
            if found is not None:
                if found["fingerprint"] != fingerprint:
                    raise Problem(422, "this Idempotency-Key was used with another request; use a new key", "Idempotency-Key")
                return uuid.UUID(found["command_id"]), True
            try:
                await self._keys.insert_one(
                    {"_id": document_id, "fingerprint": fingerprint, "command_id": str(command_id), "created_at": now}
                )
                return command_id, False
            except DuplicateKeyError:
                continue  # a concurrent first use won: read what it stored
        raise Problem(409, "this Idempotency-Key is being used by a concurrent request; retry", "Idempotency-Key")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
