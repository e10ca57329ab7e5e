"""Audit's consumer: every topic in, one chained log entry per event out."""

from typing import Any, cast

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaMessage

from services.audit.repository import MongoAuditLog
from shared import topics
from shared.events import parse_event, utcnow
from shared.identity import Hasher
from shared.service import Service


def register(service: Service, hasher: Hasher, log: list[MongoAuditLog]) -> None:
    settings = service.settings

    @service.subscriber(*topics.ALL, title="audit.every_topic")
    # Every operator's own topics too, by pattern (an operator added later is read too), in a group of their own.
    @service.subscriber(
        pattern=topics.operator_pattern(settings.topic_prefix),
        group_id=f"{settings.topic_prefix}{service.name}.operator_topics",
        title="audit.operator_topics",
    )
    async def on_any_event(body: dict[str, Any], message: KafkaMessage) -> None:
        """Append the event, without raw personal data, to the hash-chained audit log."""
        event = parse_event(body)
        record = cast(ConsumerRecord, message.raw_message)  # one record: this subscriber is not a batch one
        appended = await log[0].append(
            str(event.id),
            {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "recorded_at": utcnow().isoformat(timespec="milliseconds"),
                "event": event.redacted(hasher),
            },
        )
        if appended:
            service.log.info("audited", event_id=str(event.id), type=event.type)
