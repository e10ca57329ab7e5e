"""The register's side of federation: the change feed ``GET /v1/register/changes?since=CURSOR``, for
deployments that sync from this one, and ``POST /v1/register/ended``, by which a deployment that
forwarded an exclusion here says it ended there.

A page holds the changes of exclusions in force or ended (activated, lengthened, lifted, expired,
cancelled) in the order the lifecycle topic holds them, each with the person's keyed hashes only
(never a raw field), and the cursor to ask from next. The cursor is the lifecycle topic's position
(``partition:offset`` pairs), so the feed needs no store of its own and a page read twice is the
same page. ``hash_key_check`` lets a reader see that it hashes identities as this register does
(the federation's hash key), without either side showing the key.
"""

import hashlib
import json
import re
import uuid
from typing import Annotated, Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from services.gateway import access
from services.gateway.access import Operator
from services.gateway.bodies import JsonCheckedRoute
from services.gateway.context import Gateway, gateway, lookup_current
from services.gateway.domain import Summary
from services.gateway.edge import note
from services.gateway.native import (
    KEY_RESPONSES,
    ORIGIN,
    UNAVAILABLE,
    Excluder,
    IdempotencyKeys,
    _personal,
    _processing,
    _valid_idempotency_key,
    operator_with,
)
from services.gateway.problems import Problem
from services.gateway.schemas import Moment, PersonIdentity, Strict, exclusion_view
from shared import topics
from shared.events import FINAL_STATES, REGISTER_CHANGES, EndAtOrigin, ExclusionSnapshot, OriginEndPayload, RegisterChange
from shared.identity import Hasher, IdentifierKind, Identity
from shared.settings import Settings

router = APIRouter(prefix="/v1/register", route_class=JsonCheckedRoute)
Syncer = Annotated[Operator, Depends(operator_with(access.Permission.SYNC))]
CURSOR = re.compile(r"(?:\d{1,6}:\d{1,19}(?:,\d{1,6}:\d{1,19}){0,999})?")
KEY_CHECK_VALUE = "key-check@selfex.invalid"
FETCH_MS = 200


def key_check(hasher: Hasher) -> str:
    """The register's hash of a fixed, public value: equal to a reader's own only if both hash alike."""
    return hasher.hash(IdentifierKind.EMAIL, KEY_CHECK_VALUE)


def parse_cursor(since: str) -> dict[int, int]:
    if not CURSOR.fullmatch(since):
        raise Problem(400, "since must be a cursor this feed gave (partition:offset pairs, comma-separated), or empty", "since")
    return {int(p): int(o) for p, o in (pair.split(":") for pair in since.split(",") if pair)}


def format_cursor(positions: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


async def read_changes(settings: Settings, since: dict[int, int], limit: int) -> tuple[list[dict[str, Any]], dict[int, int], bool]:
    """Up to ``limit`` changes after ``since`` on the lifecycle topic; the positions after them; whether more wait."""
    topic = settings.topic(topics.EXCLUSION_LIFECYCLE)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()  # the cluster's metadata, this topic's partitions among it
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        assigned = [TopicPartition(topic, p) for p in partitions]
        if not assigned:
            return [], since, False
        consumer.assign(assigned)
        ends = await consumer.end_offsets(assigned)
        starts = await consumer.beginning_offsets(assigned)
        positions = {tp.partition: max(since.get(tp.partition, 0), starts[tp]) for tp in assigned}
        for tp in assigned:
            consumer.seek(tp, positions[tp.partition])
        changes: list[dict[str, Any]] = []
        scanned = 0
        while scanned < limit * 10 and len(changes) < limit and any(positions[tp.partition] < ends[tp] for tp in assigned):
            batches = await consumer.getmany(timeout_ms=FETCH_MS, max_records=limit - len(changes))
            if not batches:
                continue
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        continue
                    positions[tp.partition] = record.offset + 1
                    scanned += 1
                    try:
                        data = json.loads(record.value or b"")
                        kind = data.get("type", "")
                        if kind not in REGISTER_CHANGES:
                            continue
                        snapshot = ExclusionSnapshot.model_validate(data["payload"])
                        change = RegisterChange.of(kind, snapshot, settings.deployment_name, data.get("occurred_at"))
                    except (ValueError, KeyError, TypeError):
                        continue  # what is not a lifecycle event this code reads is no change of an exclusion
                    if change is not None:
                        changes.append(change.model_dump(mode="json"))
        more = any(positions[tp.partition] < ends[tp] for tp in assigned)
        return changes, positions, more
    finally:
        await consumer.stop()


@router.get(
    "/changes",
    tags=["register"],
    summary="The register's exclusions, changed since a cursor: keyed hashes only, paged",
    responses={
        **KEY_RESPONSES,
        200: {
            "description": "changes (oldest first), next (the cursor to ask from next), more (whether more wait now), "
            "register, hash_key_id and hash_key_check (equal to the reader's own hash of key-check@selfex.invalid "
            "only if it hashes identities as the register does)"
        },
    },
)
async def register_changes(
    operator: Syncer,
    request: Request,
    since: Annotated[str, Query(max_length=30_000, description="the cursor of the last page (next); empty: from the start")] = "",
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many changes")] = 500,
) -> JSONResponse:
    """A page of changes: a reader syncs by asking again with ``next`` until ``more`` is false, then on its schedule."""
    cursor = parse_cursor(since)
    settings: Settings = request.app.state.settings
    changes, positions, more = await read_changes(settings, cursor, limit)
    note(request).outcome = f"{len(changes)} changes"
    the_gateway = gateway(request)
    return JSONResponse(
        {
            "register": settings.deployment_name,
            "changes": changes,
            "next": format_cursor(positions),
            "more": more,
            "hash_key_id": settings.hash_key_id,
            "hash_key_check": key_check(the_gateway.hasher),
        }
    )


# --- an exclusion forwarded here ended at its origin --------------------------------------------

ENDED = {s.value for s in FINAL_STATES}


class OriginEnd(Strict):
    """A deployment that forwarded an exclusion here (``POST /v1/exclusions`` with ``X-Selfex-Origin``)
    says it ended there: the person, as it forwarded them, how it ended and when."""

    identity: PersonIdentity
    ended_as: Literal["lifted", "cancelled"] = Field(description="lifted (the person's proven act there) or cancelled (made in error)")
    ended_at: Moment = Field(description="when it ended at the origin (ISO 8601 with a UTC offset)")


@router.post(
    "/ended",
    tags=["register"],
    summary="An exclusion this deployment forwarded here ended at its origin: the copy here ends, if nothing else made it",
    responses={
        **KEY_RESPONSES,
        **UNAVAILABLE,
        200: {
            "description": 'status "ended" (the copy here ended the same way; also when it had ended already) or "kept" (it '
            "runs on: a request made here or from elsewhere joined it, or one the origin forwarded after the end; reason says "
            "which), with the exclusion"
        },
        202: {"description": "accepted, not yet written (status processing, request_id)"},
        404: {"description": "no exclusion of this person that this operator forwarded from this origin"},
    },
)
async def ended_at_origin(
    body: OriginEnd,
    operator: Excluder,
    request: Request,
    origin: Annotated[
        str | None,
        Header(alias="X-Selfex-Origin", description="the deployment that forwarded the exclusion here (as on its POST /v1/exclusions)"),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="as on POST /v1/exclusions: a repeat within 24 hours changes nothing again"),
    ] = None,
) -> JSONResponse:
    """Only the operator that forwarded the exclusion, naming the same origin, ends it, and only a copy
    that origin alone made: never one made here, one another source joined, or one from elsewhere
    (those are not found: a 404 says nothing of whether the person is excluded otherwise)."""
    if origin is None:
        raise Problem(400, "X-Selfex-Origin is required: the deployment that forwarded the exclusion here", "X-Selfex-Origin")
    if not ORIGIN.fullmatch(origin):
        raise Problem(400, "X-Selfex-Origin must be 1 to 100 letters, digits, '.', '_' or '-'", "X-Selfex-Origin")
    key = _valid_idempotency_key(idempotency_key) if idempotency_key is not None else None
    the_gateway = gateway(request)
    identity = _personal(body.identity)
    lookup_current(request, the_gateway)
    forwarded = await _forwarded_from(the_gateway, identity, origin, operator)
    if not forwarded:
        note(request).outcome = "not found"
        raise Problem(404, f"no exclusion of this person that this operator forwarded from {origin}", "identity")
    running = [d for d in forwarded if d.get("state") not in ENDED]
    if not running:  # ended here already (by this end, delivered before, or by itself)
        note(request).outcome = "ended already"
        return _answer(the_gateway, "ended", forwarded[-1])
    document = running[0]  # registration keeps one running exclusion a person
    command_id, replayed = uuid.uuid4(), False
    if key is not None:
        command_id, replayed = await IdempotencyKeys(request.app.state.db).claim(
            operator.id, key, _fingerprint(document, origin, body), command_id, the_gateway.clock()
        )
    command = EndAtOrigin(
        id=command_id,
        source="gateway",
        operator_id=operator.id,
        subject=document.get("person_id"),
        payload=OriginEndPayload(exclusion_id=uuid.UUID(document["_id"]), origin=origin, ended_as=body.ended_as, ended_at=body.ended_at),
    )
    written = await the_gateway.published_and_read(command)
    if written is None:
        return _processing(request, command.id)
    note(request).subject = document.get("person_id")
    ended = written.refusal is None and written.exclusion.get("state") in ENDED
    note(request).outcome = "ended" if ended else "kept"
    answer = _answer(the_gateway, "ended" if ended else "kept", written.exclusion, written.refusal)
    if replayed:
        answer.headers["Idempotent-Replayed"] = "true"
    return answer


async def _forwarded_from(the_gateway: Gateway, identity: Identity, origin: str, operator: Operator) -> list[dict[str, Any]]:
    """The person's exclusions that came from ``origin`` and that this operator made here, oldest first."""
    summaries = await the_gateway.summaries_of(identity)
    documents = await the_gateway.views.many(s.exclusion_id for s in summaries)
    return [d for d in documents if d.get("origin") == origin and await the_gateway.views.known_to(d["_id"], operator.id)]


def _fingerprint(document: dict[str, Any], origin: str, body: OriginEnd) -> str:
    """What makes two ends the same one: the exclusion here and the end (never the person's fields)."""
    what = {"exclusion_id": document["_id"], "origin": origin, "ended_as": body.ended_as, "ended_at": body.ended_at.isoformat()}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _answer(the_gateway: Gateway, status: str, document: dict[str, Any], reason: str | None = None) -> JSONResponse:
    view = exclusion_view(document, Summary.from_exclusion(document).in_force(the_gateway.clock()))
    body: dict[str, Any] = {"status": status, "exclusion": view}
    if reason is not None:
        body["reason"] = reason
    return JSONResponse(body)
