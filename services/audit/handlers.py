"""Audit's consumers: every topic in, in batches; each batch appended to its partitions' chains in one insert.

Each record is parsed on its own, so one that breaks its contract is dead-lettered alone (and its
dead letter is audited in turn) while the rest of its batch is recorded.
"""

import json
from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord
from faststream.message import StreamMessage

from services.audit.repository import Entry, MongoAuditLog
from shared import topics
from shared.events import parse_event
from shared.identity import Hasher
from shared.service import Service

# A batch: up to this many records; a poll with fewer waits this long for more.
MAX_BATCH = 2000
BATCH_WAIT_MS = 50
FETCH_MAX_WAIT_MS = 50


async def records_of(message: StreamMessage[Any]) -> Any:
    """The batch's Kafka records as they are: each is parsed (and refused) on its own."""
    return list(message.raw_message)


def register(service: Service, hasher: Hasher, log: list[MongoAuditLog]) -> None:
    settings = service.settings
    dead_letters = service.dead_letters
    batches: dict[str, Any] = {
        "batch": True,
        "max_records": MAX_BATCH,
        "batch_timeout_ms": BATCH_WAIT_MS,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        "decoder": records_of,
    }

    async def append(records: Sequence[ConsumerRecord]) -> None:
        recorded_at = service.clock().isoformat(timespec="milliseconds")
        entries, parked = [], []
        for record in records:
            try:
                event = parse_event(json.loads(record.value or b""))
                entries.append(Entry(record.topic, record.partition, record.offset, recorded_at, event.redacted(hasher)))
            except Exception as error:  # noqa: BLE001 — a bad record is parked, the batch goes on
                parked.append((record, error))
        appended = await log[0].append(entries)
        for record, failure in parked:
            await dead_letters.park_record(record, failure)
        if appended:
            service.log.debug("audited", records=appended)

    @service.subscriber(*topics.ALL, **batches, title="audit.every_topic")
    async def on_any_events(records: Sequence[ConsumerRecord]) -> None:
        """Append each event, without raw personal data, to its partition's hash chain."""
        await append(records)

    # Every operator's own topics too, by pattern (an operator added later is read too): what operators
    # send and what they are sent in two groups of their own, so that one's batch is parsed while the
    # other's is written (a handler waits for its insert).
    @service.subscriber(
        pattern=topics.operator_pattern(settings.topic_prefix, topics.ACCOUNT_EVENTS),
        group_id=f"{settings.topic_prefix}{service.name}.operator_topics",
        **batches,
        title="audit.operator_account_events",
    )
    async def on_operator_events(records: Sequence[ConsumerRecord]) -> None:
        """Append each of the operators' account events to its partition's chain."""
        await append(records)

    @service.subscriber(
        pattern=topics.operator_pattern(settings.topic_prefix, topics.DECISIONS, topics.ENFORCEMENT),
        group_id=f"{settings.topic_prefix}{service.name}.operator_outputs",
        **batches,
        title="audit.operator_outputs",
    )
    async def on_operator_outputs(records: Sequence[ConsumerRecord]) -> None:
        """Append each decision and enforcement command sent to an operator to its partition's chain."""
        await append(records)
