"""Blocking's batch publisher: many events at once, appended to record batches of the service's own
FastStream broker's producer.

An event is serialised by pydantic from its contract's model (one ``TypeAdapter`` per model); a
decision, made as its fields in the model's layout, by orjson: the same bytes (tested), at a
fraction of pydantic-core's cost on an untyped dict (README, Performance), and one is written per
account event.
Each goes in one record batch per topic and partition (a decision or an enforcement command on the
topic of the operator it is for, made the first time this process sends that operator anything), the
partition chosen from the key as the producer would choose it; all batches are sent before any is
awaited, so a batch of a thousand decisions is a request per partition instead of a round trip per
event. Every record carries ``content-type`` and ``type`` headers; the correlation id an event
continues is in its body.
"""

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from cachetools import TTLCache
from faststream.kafka import KafkaBroker
from pydantic import BaseModel, TypeAdapter

from services.blocking.domain import Decision
from shared import topics
from shared.broker import ensure_operator_topics, producer_of, topic_partitions
from shared.events import DecisionMade, Event
from shared.settings import Settings

CONTENT_TYPE = ("content-type", b"application/json")
DECISION_TYPE = DecisionMade.model_fields["type"].default


def decision_json(decision: Decision) -> bytes:
    """The bytes ``DecisionMade``'s model writes for a decision made as its fields (tests/blocking/test_decisions.py)."""
    return orjson.dumps(decision, default=_model_json, option=orjson.OPT_UTC_Z)


def _model_json(value: Any) -> Any:
    """A model inside a decision (a BLOCK's scope) as pydantic writes it."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def decision_key(decision: Decision) -> bytes:
    """``DecisionMade.key()`` of a decision made as its fields (tests/blocking/test_decisions.py holds them equal)."""
    return f"{decision['operator_id']}:{decision['payload']['account_id']}".encode()


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
        self._headers: dict[str, list[tuple[str, bytes]]] = {}

    async def publish(self, events: Sequence[Event]) -> None:
        """Publish every event on its contract's topic (its operator's own, for decisions and enforcement),
        keyed as it says; return once all are acknowledged."""
        await self._send([(event.topic, event.operator_id, event.type, event.key(), self._json(event)) for event in events])

    async def publish_decisions(self, decisions: Sequence[Decision]) -> None:
        """Publish decisions made as their fields (``domain.decision_fields``), each on its operator's
        decisions topic, in the bytes ``DecisionMade``'s model would write (tested)."""
        await self._send(
            [
                (DecisionMade.topic, decision["operator_id"], DECISION_TYPE, decision_key(decision), decision_json(decision))
                for decision in decisions
            ]
        )

    async def _send(self, records: list[tuple[str, str | None, str, bytes | None, bytes]]) -> None:
        """Records as (contract topic, operator, type, key, value), one record batch per topic and partition."""
        if not records:
            return
        # Raw aiokafka batches, not publish_batch: FastStream's per-message cost alone kept blocking under half the forwarder's rate.
        producer = producer_of(self._broker)
        batches: dict[tuple[str, int], BatchBuilder] = {}
        partitions_of: dict[str, KeyPartitions] = {}
        sent = []
        for contract_topic, operator_id, event_type, key, value in records:
            topic = self._topics.get((contract_topic, operator_id)) or await self._topic_of(contract_topic, operator_id)
            partition_of = partitions_of.get(topic)
            if partition_of is None:  # once per call and topic
                partition_of = partitions_of[topic] = await self._partitions_of(topic)
            partition = partition_of(key)
            headers = self._headers.get(event_type) or self._headers.setdefault(event_type, [CONTENT_TYPE, ("type", event_type.encode())])
            batch = batches.get((topic, partition))
            if batch is not None and batch.append(key=key, value=value, timestamp=None, headers=headers) is not None:
                continue
            if batch is not None:  # full: send it and start another (a key's records stay in order)
                sent.append(await producer.send_batch(batch, topic, partition=partition))
            batch = batches[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError(f"a record of {len(value)} bytes for {topic} is larger than a record batch")
        for (topic, partition), batch in batches.items():
            sent.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)

    async def _topic_of(self, contract_topic: str, operator_id: str | None) -> str:
        """The full name of the contract's topic for this operator; an operator's topics are made sure of the first time."""
        topic = self._settings.topic(topics.route(contract_topic, operator_id))
        if operator_id is not None and contract_topic in topics.PER_OPERATOR and operator_id not in self._operators:
            await ensure_operator_topics(self._settings, operator_id)  # made with the operator; here, if it was not
            self._operators.add(operator_id)
        return self._topics.setdefault((contract_topic, operator_id), topic)

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
