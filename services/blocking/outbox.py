"""Publishing many events at once on blocking's own producer: the events are packed into one record
batch per partition (chosen exactly as the producer would choose it from the key), and all batches
are sent before any is awaited. One request per partition instead of a round trip per event, and the
framework's per-message publishing path (middlewares, command objects) stays off the hot path."""

import asyncio
import re
from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple

import pydantic_core
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from shared.events import AccountEventKind, AccountEventOccurred, DecisionMade, Event, Outcome
from shared.settings import Settings

from services.blocking.domain import decision_id_text, decision_layout


class Outbox:
    def __init__(self, settings: Settings, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._topics: dict[str, str] = {}
        self._partitions: dict[str, KeyPartitions] = {}

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=self._settings.kafka_idempotence,
            linger_ms=0,  # no waiting: what queues up while a request is in flight goes in the next one
            max_batch_size=512 * 1024,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish_all(self, events: Sequence[Event]) -> None:
        """Publish every event on its contract's topic, keyed as it says; return once all are acknowledged."""
        await self.publish_records([Record.of(event) for event in events])

    async def publish_records(self, records: Sequence["Record"]) -> None:
        """Publish records already serialised; return once all are acknowledged."""
        if not records:
            return
        producer = self._producer
        assert producer is not None, "the outbox starts in the app's lifespan"
        batches: dict[tuple[str, int], object] = {}
        sent = []
        partitions_of: dict[str, KeyPartitions] = {}
        for record in records:
            topic = self._topics.get(record.topic) or self._topics.setdefault(record.topic, self._settings.topic(record.topic))
            partition_of = partitions_of.get(topic)
            if partition_of is None:  # once per call and topic: the topic may have grown partitions
                partition_of = partitions_of[topic] = self._partitions_of(topic, await producer.partitions_for(topic))
            key, value, headers = record.key, record.value, record.headers
            partition = partition_of(key)
            batch = batches.get((topic, partition))
            if batch is not None and batch.append(key=key, value=value, timestamp=None, headers=headers) is not None:
                continue
            if batch is not None:  # full: send it and start another
                sent.append(await producer.send_batch(batch, topic, partition=partition))
            batch = batches[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"a record of {len(value)} bytes for {topic} is larger than a record batch")
        for (topic, partition), batch in batches.items():
            sent.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)

    def _partitions_of(self, topic: str, partitions: set[int]) -> "KeyPartitions":
        known = self._partitions.get(topic)
        if known is None or known.partitions != sorted(partitions):
            known = self._partitions[topic] = KeyPartitions(sorted(partitions))
        return known


_CONTENT_TYPE = ("content-type", b"application/json")
_DECISION_TYPE = ("type", DecisionMade.model_fields["type"].default.encode())


class Record(NamedTuple):
    """A record ready to send: the contract's topic (unprefixed), key, JSON value and headers.
    (A tuple: one is made per decision, and a tuple is the cheapest immutable thing to make.)"""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @classmethod
    def of(cls, event: Event) -> "Record":
        return cls(event.topic, event.key(), event.model_dump_json().encode(), _headers(event.type, event.correlation_id or event.id))

    @classmethod
    def decision(cls, fields: dict[str, Any]) -> "Record":
        """A decision from ``domain.decision_fields``, serialised without building the model: the
        same bytes as ``DecisionMade.model_validate(fields).model_dump_json()`` (tests/blocking/test_domain.py)."""
        return cls(
            DecisionMade.topic,
            f"{fields['operator_id']}:{fields['payload']['account_id']}".encode(),  # DecisionMade.key()
            pydantic_core.to_json(fields),
            [_CONTENT_TYPE, _DECISION_TYPE, ("correlation_id", fields["correlation_id"].encode())],
        )


class Allowed:
    """ALLOW decisions straight to their bytes, with no dictionary in between: most account events
    are allowed, and this is the whole cost of answering them after the lookup.

    The wire form is not written by hand: it is ``decision_layout`` of an ALLOW serialised once by
    pydantic-core with a sentinel in each place that varies, cut at the sentinels into a template.
    Each value then goes in serialised by pydantic-core too, so the bytes are exactly those of
    ``Record.decision(decision_fields(...))`` (tests/blocking/test_outbox.py).
    """

    SLOTS = ("decision_id", "occurred_at", "correlation_id", "event_id", "operator_id", "operator_event_id", "account_id", "kind")

    def __init__(self) -> None:
        sentinels = {name: f"\x00{n}\x00" for n, name in enumerate(self.SLOTS)}
        text = pydantic_core.to_json(decision_layout(**sentinels, outcome=Outcome.ALLOW.value))
        encoded = {pydantic_core.to_json(sentinel): n for n, sentinel in enumerate(sentinels.values())}
        found = list(re.finditer(b"|".join(re.escape(e) for e in encoded), text))
        literals = [text[end:start] for end, start in zip([0] + [m.end() for m in found], [m.start() for m in found] + [len(text)])]
        self._template = b"%s".join(literal.replace(b"%", b"%%") for literal in literals)
        self._order = itemgetter(*(encoded[m.group()] for m in found))
        self._kinds = {kind.value: pydantic_core.to_json(kind.value) for kind in AccountEventKind}
        self._now: datetime | None = None
        self._now_json = b""

    def record(self, event: AccountEventOccurred, now: datetime) -> Record:
        if now is not self._now:  # one clock reading per batch: serialised once
            self._now, self._now_json = now, pydantic_core.to_json(now)
        event_id = str(event.id)
        correlation_id = str(event.correlation_id) if event.correlation_id else event_id
        payload = event.payload
        operator_id, account_id = event.operator_id, payload.account_id
        values = (
            b'"%s"' % decision_id_text(event_id).encode(),
            self._now_json,
            b'"%s"' % correlation_id.encode(),
            b'"%s"' % event_id.encode(),
            pydantic_core.to_json(operator_id),
            pydantic_core.to_json(payload.operator_event_id),
            pydantic_core.to_json(account_id),
            self._kinds[payload.kind._value_],
        )
        return Record(
            DecisionMade.topic,
            f"{operator_id}:{account_id}".encode(),
            self._template % self._order(values),
            [_CONTENT_TYPE, _DECISION_TYPE, ("correlation_id", correlation_id.encode())],
        )


def _headers(event_type: str, correlation_id: object) -> list[tuple[str, bytes]]:
    return [_CONTENT_TYPE, ("type", event_type.encode()), ("correlation_id", str(correlation_id).encode())]


_partitioner = DefaultPartitioner()  # the producer's own: the same key lands on the same partition
KEYS_REMEMBERED = 100_000


class KeyPartitions:
    """Which partition each key goes to, remembered: the producer's partitioner is murmur2 in pure
    Python, and an account's events (and so its decisions) keep coming with the same key."""

    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions
        self._of: dict[bytes | None, int] = {}

    def __call__(self, key: bytes | None) -> int:
        if key is None:  # no key: the partitioner spreads them, nothing to remember
            return _partitioner(key, self.partitions, self.partitions)
        partition = self._of.get(key)
        if partition is None:
            if len(self._of) >= KEYS_REMEMBERED:
                self._of.clear()
            partition = self._of[key] = _partitioner(key, self.partitions, self.partitions)
        return partition
