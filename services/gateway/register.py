"""The register's change feed: ``GET /v1/register/changes?since=CURSOR``, for deployments that sync from this one.

A page holds the changes of exclusions in force or ended (activated, lengthened, lifted, expired,
cancelled) in the order the lifecycle topic holds them, each with the person's keyed hashes only
(never a raw field), and the cursor to ask from next. The cursor is the lifecycle topic's position
(``partition:offset`` pairs), so the feed needs no store of its own and a page read twice is the
same page. ``hash_key_check`` lets a reader see that it hashes identities as this register does
(the federation's hash key), without either side showing the key.
"""

import json
import re
from typing import Annotated, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from services.gateway import access
from services.gateway.access import Operator
from services.gateway.bodies import JsonCheckedRoute
from services.gateway.context import gateway
from services.gateway.edge import note
from services.gateway.native import KEY_RESPONSES, operator_with
from services.gateway.problems import Problem
from shared import topics
from shared.events import REGISTER_CHANGES, ExclusionSnapshot, RegisterChange
from shared.identity import Hasher, IdentifierKind
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
