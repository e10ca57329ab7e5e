"""The Kafka broker factory, topic creation, publishing, and dead-lettering for every consumer."""

import asyncio
import base64
import logging
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faststream import BaseMiddleware
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from pydantic import ValidationError
from pymongo.errors import ConnectionFailure, NetworkTimeout, PyMongoError, ServerSelectionTimeoutError

from shared import topics
from shared.events import Event, MessageDeadLettered, MessageDeadLetteredPayload
from shared.settings import Settings

log = structlog.get_logger(__name__)

# Failures of the infrastructure, not of the message: retry the message rather than park it.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionFailure,
    NetworkTimeout,
    ServerSelectionTimeoutError,
    KafkaError,
    ConnectionError,
    asyncio.TimeoutError,
)
RETRY_BACKOFF_SECONDS = 1.0


def create_broker(settings: Settings, *, service: str, **options: Any) -> KafkaBroker:
    """A broker for one service: every consumer dead-letters what it cannot handle.

    Producer idempotence follows the settings (on for real Kafka, off for Tansu).
    """
    dead_letters = DeadLetters(settings, consumer=service)
    broker = KafkaBroker(
        settings.kafka,
        client_id=f"selfex-{service}",
        enable_idempotence=settings.kafka_idempotence,
        acks="all",
        graceful_timeout=10.0,
        middlewares=[dead_letters.middleware()],
        logger=logging.getLogger("selfex.faststream"),
        log_level=logging.DEBUG,  # a line per message is too much on the hot path
        **options,
    )
    dead_letters.broker = broker
    return broker


async def ensure_topics(settings: Settings, names: tuple[str, ...] = topics.ALL) -> None:
    """Create the deployment's topics with the configured partition count; existing ones are kept."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka, client_id="selfex-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(settings.topic(name), settings.topic_partitions, settings.topic_replication)
            for name in names
            if settings.topic(name) not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another process won the race
            log.info("topics_created", topics=[t.name for t in wanted], partitions=settings.topic_partitions)
    finally:
        await admin.close()


async def publish(broker: KafkaBroker, settings: Settings, event: Event) -> None:
    """Publish an event on its contract's topic, keyed as the contract says."""
    await broker.publish(
        event.model_dump_json().encode(),
        topic=settings.topic(event.topic),
        key=event.key(),
        headers={"content-type": "application/json", "type": event.type},
        correlation_id=str(event.correlation_id or event.id),
    )


class DeadLetters:
    """Parks what a consumer cannot handle on the dead-letter topic, with the reason and the bytes."""

    def __init__(self, settings: Settings, consumer: str, broker: KafkaBroker | None = None) -> None:
        self.broker = broker
        self.settings = settings
        self.consumer = consumer

    async def park(self, message: StreamMessage[Any], error: BaseException) -> None:
        """Park a message; a batch's records are parked one by one."""
        records = message.raw_message if isinstance(message.raw_message, tuple) else (message.raw_message,)
        for record in records:
            await self.park_record(record, error)

    async def park_record(self, record: Any, error: BaseException) -> None:
        """Park one Kafka record, e.g. the one bad record of a batch whose others were handled."""
        key = getattr(record, "key", None)
        event = MessageDeadLettered(
            source=self.consumer,
            payload=MessageDeadLetteredPayload(
                topic=getattr(record, "topic", "?"),
                partition=getattr(record, "partition", None),
                offset=getattr(record, "offset", None),
                key=key.decode(errors="replace") if isinstance(key, bytes) else None,
                consumer=self.consumer,
                error=describe(error),
                original=base64.b64encode(getattr(record, "value", None) or b"").decode(),
            ),
        )
        await publish(self.broker, self.settings, event)
        log.warning(
            "message_dead_lettered",
            topic=event.payload.topic,
            partition=event.payload.partition,
            offset=event.payload.offset,
            error=event.payload.error,
            dead_letter_id=str(event.id),
        )

    def middleware(self):
        """A FastStream middleware: park the message on a non-transient error, retry otherwise."""
        dead_letters = self

        class DeadLetterMiddleware(BaseMiddleware):
            async def consume_scope(self, call_next, msg: StreamMessage[Any]) -> Any:
                record = msg.raw_message
                structlog.contextvars.bind_contextvars(
                    topic=getattr(record, "topic", None),
                    offset=getattr(record, "offset", None),
                    correlation_id=msg.correlation_id,
                )
                try:
                    return await call_next(msg)
                except TRANSIENT_ERRORS:
                    log.exception("transient_failure_will_retry")
                    await asyncio.sleep(RETRY_BACKOFF_SECONDS)
                    raise
                except PyMongoError as exc:
                    if getattr(exc, "code", None) is None and exc.has_error_label("RetryableWriteError"):
                        await asyncio.sleep(RETRY_BACKOFF_SECONDS)
                        raise
                    await dead_letters.park(msg, exc)
                except Exception as exc:  # noqa: BLE001 — a bad message must never stall a partition
                    await dead_letters.park(msg, exc)
                finally:
                    structlog.contextvars.unbind_contextvars("topic", "offset", "correlation_id", "event_id")
                return None

        return DeadLetterMiddleware


def describe(error: BaseException) -> str:
    """The reason a message was refused, without the input: it may hold raw personal data."""
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'message'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        )
        text = f"ValidationError: {problems}"
    else:
        text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 2000 else text[:2000] + "…"
