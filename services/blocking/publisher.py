"""Blocking's batch publisher: many events at once through FastStream's ``publish_batch``.

Each event is serialised by pydantic from its contract's model (one ``TypeAdapter`` per model) and
put in one record batch per topic and partition (a decision or an enforcement command on the topic
of the operator it is for, made the first time this process sends that operator anything), the partition chosen from the key as the producer
would choose it; all batches are sent before any is awaited, so a batch of a thousand decisions is
a request per partition instead of a round trip per event. Headers are a batch's own: every record
carries ``content-type`` and ``type``; the correlation id an event continues is in its body.
"""

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from cachetools import TTLCache
from faststream.kafka import KafkaBroker
from pydantic import TypeAdapter

from shared import topics
from shared.broker import BatchMessage, batch_message, ensure_operator_topics, record_batches, topic_partitions
from shared.events import Event
from shared.settings import Settings

# How long a topic's partitions are believed: a topic that grew partitions is seen within this.
PARTITIONS_SECONDS = 60.0
KEYS_REMEMBERED = 100_000


class BatchPublisher:
    """Publishes a sequence of events together on the service's FastStream broker."""

    def __init__(self, broker: KafkaBroker, settings: Settings) -> None:
        self._broker = broker
        self._settings = settings
        self._topics: dict[tuple[str, str | None], str] = {}
        self._operators: set[str] = set()  # whose topics this process has made sure of
        self._partitions: TTLCache[str, KeyPartitions] = TTLCache(maxsize=64, ttl=PARTITIONS_SECONDS)
        self._adapters: dict[type, TypeAdapter[Any]] = {}

    async def publish(self, events: Sequence[Event]) -> None:
        """Publish every event on its contract's topic (its operator's own, for decisions and enforcement),
        keyed as it says; return once all are acknowledged."""
        if not events:
            return
        batches: dict[tuple[str, int, str], list[BatchMessage]] = {}
        partitions_of: dict[str, KeyPartitions] = {}
        for event in events:
            topic = self._topics.get((event.topic, event.operator_id)) or await self._topic_of(event)
            partition_of = partitions_of.get(topic)
            if partition_of is None:  # once per call and topic
                partition_of = partitions_of[topic] = await self._partitions_of(topic)
            key = event.key()
            partition = partition_of(key)
            batches.setdefault((topic, partition, event.type), []).append(batch_message(self._json(event), key))
        sent = [
            await self._broker.publish_batch(
                *chunk,
                topic=topic,
                partition=partition,
                headers={"content-type": "application/json", "type": event_type},
                no_confirm=True,
            )
            for (topic, partition, event_type), messages in batches.items()
            for chunk in record_batches(messages)
        ]
        await asyncio.gather(*sent)

    async def _topic_of(self, event: Event) -> str:
        """The full name of the event's topic; an operator's topics are made sure of the first time."""
        operator_id = event.operator_id
        topic = self._settings.topic(topics.route(event.topic, operator_id))
        if operator_id is not None and event.topic in topics.PER_OPERATOR and operator_id not in self._operators:
            await ensure_operator_topics(self._settings, operator_id)  # made with the operator; here, if it was not
            self._operators.add(operator_id)
        return self._topics.setdefault((event.topic, event.operator_id), topic)

    def _json(self, event: Event) -> bytes:
        adapter = self._adapters.get(type(event))
        if adapter is None:
            adapter = self._adapters[type(event)] = TypeAdapter(type(event))
        return adapter.dump_json(event)

    async def _partitions_of(self, topic: str) -> "KeyPartitions":
        known = self._partitions.get(topic)
        if known is None:
            known = self._partitions[topic] = KeyPartitions(await topic_partitions(self._broker, topic))
        return known


_partitioner = DefaultPartitioner()  # the producer's own: the same key lands on the same partition


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
