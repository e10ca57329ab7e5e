"""The Kafka broker factory, topic creation, publishing, and dead-lettering for every consumer.

A consumer's failure is one of two kinds (``is_poison``): the message can never succeed
(undecodable, or breaking its contract) and is parked once on the dead-letter topic, bounded in size
and sealed; or something else failed (the store, the broker, the network, or a fault of ours) and
the message is retried with backoff, its offset held, while the consumer says it is not ready.
"""

import asyncio
import contextlib
import copy
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faststream import BaseMiddleware
from faststream.kafka import KafkaBroker, KafkaPublishMessage
from faststream.message import StreamMessage
from pydantic import ValidationError
from pymongo.errors import PyMongoError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_before_delay, wait_exponential_jitter
from tenacity.stop import stop_base

from shared import topics
from shared.crypto import Sealer
from shared.events import Event, MessageDeadLettered, MessageDeadLetteredPayload, derived_id
from shared.health import Readiness
from shared.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Failures of the infrastructure, never of the message: every store error (a primary stepping down,
# a write concern not met, a duplicate key from two deliveries racing: each a retry resolves), every
# broker error, the network's (ConnectionError, TimeoutError and the rest of OSError), timeouts.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (PyMongoError, KafkaError, OSError, asyncio.TimeoutError)
# What a message that can never succeed raises: JSON and UTF-8 that do not decode, a pydantic
# ValidationError (a broken contract, a version this code does not know), a contract's own ValueError.
POISON_ERRORS: tuple[type[BaseException], ...] = (ValueError,)
KEY_CHARS = 200
# A record batch holds at most this many bytes (every broker's producer is made with this
# max_batch_size); what ``publish_batch`` is given beyond it goes in further batches.
MAX_BATCH_BYTES = 512 * 1024
# What a record adds to its key and value in a batch: varints, attributes, a few short headers.
RECORD_OVERHEAD = 128


def is_poison(error: BaseException) -> bool:
    """Whether the message that raised ``error`` can never succeed, and so is parked, not retried.

    Only a message that is undecodable or breaks its contract is; an infrastructure error is retried
    and so is anything unforeseen (a fault of ours can be fixed and the message then succeeds; parking
    an exclusion would lose it).
    """
    if isinstance(error, BaseExceptionGroup):
        return all(is_poison(inner) for inner in error.exceptions)
    if isinstance(error, INFRASTRUCTURE_ERRORS):
        return False
    return isinstance(error, POISON_ERRORS)


def stay_in_groups_on_stop() -> None:
    """Consumers of this process stop without a LeaveGroup: the group expires them after the session
    timeout. Only for the embedded broker (``Settings.kafka_leave_group_on_stop`` off), whose group
    coordinator keeps naming a member that left as the leader, so the group never forms again.
    aiokafka sends the LeaveGroup from ``GroupCoordinator._maybe_leave_group`` (0.14); a test pins it.
    """
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    async def forget_membership(coordinator: GroupCoordinator) -> None:
        coordinator.reset_generation()

    GroupCoordinator._maybe_leave_group = forget_membership


def create_broker(settings: Settings, *, service: str, dead_letters: "DeadLetters | None" = None, **options: Any) -> KafkaBroker:
    """A broker for one service: every consumer parks what can never succeed and retries the rest.

    Producer idempotence follows the settings (on for real Kafka, off for Tansu).
    """
    dead_letters = dead_letters or DeadLetters(settings, consumer=service)
    if not settings.kafka_leave_group_on_stop:
        stay_in_groups_on_stop()
    broker = KafkaBroker(
        settings.kafka,
        client_id=f"selfex-{service}",
        enable_idempotence=settings.kafka_idempotence,
        acks="all",
        graceful_timeout=10.0,
        middlewares=[dead_letters.middleware()],
        parser=parse_with_readable_headers,
        logger=logging.getLogger("selfex.faststream"),
        log_level=logging.DEBUG,  # a line per message is too much on the hot path
        # Pattern subscribers (every operator's topics) see a topic made after they started within this.
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
        **{"max_batch_size": MAX_BATCH_BYTES, **options},
    )
    dead_letters.broker = broker
    return broker


async def parse_with_readable_headers(message: Any, original: Callable[[Any], Awaitable[StreamMessage[Any]]]) -> StreamMessage[Any]:
    """FastStream's parser, which decodes every header as UTF-8; a header that is not is read with
    replacement characters instead of failing the parse (outside any handler, such a failure would
    let the record, or its whole batch, be committed past unhandled)."""
    try:
        return await original(message)
    except UnicodeDecodeError:
        records = message if isinstance(message, tuple) else (message,)
        readable = tuple(_with_readable_headers(record) for record in records)
        return await original(readable if isinstance(message, tuple) else readable[0])


def _with_readable_headers(record: Any) -> Any:
    readable = copy.copy(record)  # keeps what FastStream attached to it (its consumer)
    readable.headers = [(name, value.decode(errors="replace").encode()) for name, value in (record.headers or ())]
    return readable


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


async def ensure_operator_topics(settings: Settings, *operator_ids: str) -> None:
    """Create each operator's own topics (account events in; decisions and enforcement out); existing ones are kept."""
    await ensure_topics(settings, tuple(name for operator_id in operator_ids for name in topics.operator_topics(operator_id)))


BatchMessage = KafkaPublishMessage | bytes


def batch_message(value: bytes, key: bytes | None) -> BatchMessage:
    """A message for ``publish_batch``: with its own key, or the bare value when it has none
    (FastStream 0.7.8 sends a batch of keyless ``KafkaPublishMessage`` to its serialiser whole)."""
    return value if key is None else KafkaPublishMessage(value, key=key)


def record_batches(messages: list[BatchMessage], max_bytes: int = MAX_BATCH_BYTES) -> Iterator[list[BatchMessage]]:
    """The messages, in order, in runs that each fit in one record batch (one ``publish_batch`` each)."""
    run: list[BatchMessage] = []
    size = 0
    for message in messages:
        if isinstance(message, bytes):
            length = len(message) + RECORD_OVERHEAD
        else:
            length = len(message.body) + len(message.key or b"") + RECORD_OVERHEAD
        if run and size + length > max_bytes:
            yield run
            run, size = [], 0
        run.append(message)
        size += length
    if run:
        yield run


def producer_of(broker: KafkaBroker) -> AIOKafkaProducer:
    """The aiokafka producer under a connected FastStream broker, for appending records to its record
    batches directly (FastStream has no public accessor; this fails loudly if its layout changes)."""
    producer = getattr(getattr(broker.config.producer, "_producer", None), "producer", None)
    if not isinstance(producer, AIOKafkaProducer):
        raise RuntimeError("the broker is not connected, or FastStream no longer keeps its aiokafka producer where it did")
    return producer


async def topic_partitions(broker: KafkaBroker, topic: str) -> list[int]:
    """The topic's partitions, as the cluster's metadata says now."""
    [described] = await broker.config.admin_client.describe_topics([topic])
    partitions = sorted(p["partition"] for p in described["partitions"])
    if not partitions:
        raise LookupError(f"no partitions for {topic}")
    return partitions


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
    """Parks what a consumer can never handle on the dead-letter topic, and retries what it can.

    A dead letter keeps the reason (bounded), where the message was, the SHA-256 and size of its
    bytes, and their start up to ``dead_letter_max_original_bytes`` sealed with the deployment's key:
    it is always small enough to publish and shows nothing personal in clear.
    """

    def __init__(self, settings: Settings, consumer: str, broker: KafkaBroker | None = None, readiness: Readiness | None = None) -> None:
        self.broker = broker
        self.settings = settings
        self.consumer = consumer
        self.readiness = readiness or Readiness()
        self.sealer = Sealer.from_settings(settings)
        self._failing: dict[str, set[int | None]] = {}  # topic -> partitions whose message is being retried
        self._stopping = asyncio.Event()

    def stop_retrying(self) -> None:
        """The service is stopping: a retry in flight gives up at once (its message stays uncommitted,
        so the next instance takes it again), and a stop never waits on a store or broker that is away."""
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        """Tenacity's sleep between attempts, cut short when the service stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def park(self, message: StreamMessage[Any], error: BaseException) -> None:
        """Park a message; a batch's records are parked one by one."""
        for record in _records(message.raw_message):
            await self.park_record(record, error)

    async def park_record(self, record: Any, error: BaseException) -> None:
        """Park one Kafka record, e.g. the one bad record of a batch whose others were handled.

        An error that is not the message's fault is raised again instead: the batch is retried,
        never a message that matters parked as poison.
        """
        if not is_poison(error):
            raise error
        event = self.dead_letter(record, error)
        assert self.broker is not None, "parking needs the consumer's broker"
        await publish(self.broker, self.settings, event)
        log.warning(
            "message_dead_lettered",
            topic=event.payload.topic,
            partition=event.payload.partition,
            offset=event.payload.offset,
            size=event.payload.original_size,
            error=event.payload.error,
            dead_letter_id=str(event.id),
        )

    def dead_letter(self, record: Any, error: BaseException) -> MessageDeadLettered:
        """The dead letter of ``record``: its id derives from the record's position, so parking it again is the same event."""
        key, original = getattr(record, "key", None), getattr(record, "value", None) or b""
        bound = self.settings.dead_letter_max_original_bytes
        payload = MessageDeadLetteredPayload(
            topic=getattr(record, "topic", "?"),
            partition=getattr(record, "partition", None),
            offset=getattr(record, "offset", None),
            key=key.decode(errors="replace")[:KEY_CHARS] if isinstance(key, bytes) else None,
            consumer=self.consumer,
            error=describe(error, self.settings.dead_letter_max_error_chars),
            original_sha256=hashlib.sha256(original).hexdigest(),
            original_size=len(original),
            original_truncated=len(original) > bound,
        )
        sealed = self.sealer.seal(original[:bound], payload.sealing_context())
        position = f"{self.consumer}/{payload.topic}/{payload.partition}/{payload.offset}"
        return MessageDeadLettered(
            id=derived_id(position, "dead_lettered"),
            source=self.consumer,
            payload=payload.model_copy(update={"sealed_original": sealed}),
        )

    def open_original(self, dead_letter: MessageDeadLettered) -> bytes:
        """The original bytes a dead letter sealed (only their start if ``original_truncated``)."""
        payload = dead_letter.payload
        if payload.sealed_original is None:
            import base64

            return base64.b64decode(payload.original or "")
        return self.sealer.open(payload.sealed_original, payload.sealing_context())

    async def retrying(self, attempt: Callable[[], Awaitable[T]], records: tuple[Any, ...]) -> T:
        """``attempt()`` until it succeeds or fails for good (a poison error), backing off
        exponentially with jitter between failures, for one round of ``consumer_retry_round_seconds``.

        While it fails, the consumer of the records' topic is not ready; when it succeeds, it is again.
        """
        settings = self.settings

        def failed(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            self._failing_now(records, error)
            log.warning(
                "consumer_retrying",
                error=type(error).__name__,
                detail=str(error)[:200],
                attempt=state.attempt_number,
                retry_in=round(state.upcoming_sleep, 2),
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda error: isinstance(error, Exception) and not is_poison(error)),
            wait=wait_exponential_jitter(
                multiplier=settings.consumer_retry_first_seconds,
                max=settings.consumer_retry_longest_seconds,
                jitter=settings.consumer_retry_first_seconds,
            ),
            stop=stop_before_delay(settings.consumer_retry_round_seconds) | _StopWhenSet(self._stopping),
            sleep=self._pause,
            before_sleep=failed,
            reraise=True,
        )

        async def call() -> T:  # a coroutine function: tenacity would not await what a plain lambda returns
            return await attempt()

        try:
            result: T = await retrying(call)
        except Exception as error:
            if not is_poison(error):
                self._failing_now(records, error)
            raise
        return result

    def succeeded(self, records: tuple[Any, ...]) -> None:
        for topic, partition in _positions(records):
            failing = self._failing.get(topic)
            if failing is None:
                continue
            failing.discard(partition)
            if not failing:
                del self._failing[topic]
                self.readiness.ready(f"consumer:{topic}")

    def _failing_now(self, records: tuple[Any, ...], error: BaseException | None) -> None:
        for topic, partition in _positions(records):
            self._failing.setdefault(topic, set()).add(partition)
            self.readiness.not_ready(f"consumer:{topic}", f"retrying_after_{type(error).__name__}")

    def middleware(self) -> type[BaseMiddleware]:
        """A FastStream middleware: retry what failed for the infrastructure's sake, park what never can succeed.

        Retries happen here, around the handler, so the message's offset is held for the whole round;
        after a round the error goes on to FastStream, which (``AckPolicy.NACK_ON_ERROR``) seeks the
        partition back to it, so it is fetched and retried again. A dead letter that cannot be
        published is retried the same way: the message is never committed past before it is parked.
        """
        dead_letters = self

        class DeadLetterMiddleware(BaseMiddleware):
            async def consume_scope(self, call_next, msg: StreamMessage[Any]) -> Any:
                records = _records(msg.raw_message)
                first = records[0] if records else None
                structlog.contextvars.bind_contextvars(
                    topic=getattr(first, "topic", None),
                    offset=getattr(first, "offset", None),
                    correlation_id=msg.correlation_id,
                )
                try:
                    try:
                        result = await dead_letters.retrying(lambda: call_next(msg), records)
                    except Exception as error:
                        if not is_poison(error):
                            stopped = dead_letters._stopping.is_set()
                            log.warning(
                                "consumer_stopped_mid_retry" if stopped else "consumer_retry_round_over", error=type(error).__name__
                            )
                            raise
                        await dead_letters.retrying(functools.partial(dead_letters.park, msg, error), records)
                        result = None
                    dead_letters.succeeded(records)
                    return result
                finally:
                    structlog.contextvars.unbind_contextvars("topic", "offset", "correlation_id", "event_id")

        return DeadLetterMiddleware


class _StopWhenSet(stop_base):
    """Tenacity's ``stop_when_event_set`` for an ``asyncio.Event``."""

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.event.is_set()


def _records(raw: Any) -> tuple[Any, ...]:
    return tuple(raw) if isinstance(raw, (tuple, list)) else (raw,)


def _positions(records: tuple[Any, ...]) -> set[tuple[str, int | None]]:
    return {(getattr(r, "topic", "?"), getattr(r, "partition", None)) for r in records}


def describe(error: BaseException, limit: int = 2000) -> str:
    """The reason a message was refused, without the input (it may hold raw personal data), at most ``limit`` characters."""
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'message'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        )
        text = f"ValidationError: {problems}"
    else:
        text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
