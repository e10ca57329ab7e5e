"""Blocking's batch publisher: each event (a decision made as its fields, too) on its contract's topic (a decision or command on its
operator's own) and key's partition, as the contract's model serialises it, in order per key; runs
cut to fit a record batch."""

import json
from datetime import UTC, datetime

import pytest
from aiokafka.partitioner import DefaultPartitioner

from services.blocking import domain
from services.blocking.publisher import BatchPublisher, KeyPartitions
from shared import topics
from shared.broker import MAX_BATCH_BYTES, RECORD_OVERHEAD, batch_message, create_broker, record_batches
from shared.events import (
    SCOPE_ALL,
    AccountEventKind,
    AccountEventOccurred,
    AccountEventPayload,
    DecisionMade,
    EnforcementCommanded,
    EnforcementPayload,
    Outcome,
)
from shared.identity import Identity, uid_from_personnummer
from tests.support import TopicReader

NOW = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
IDENTITY = Identity(uid=uid_from_personnummer("199001011234"))


def account_event(account_id: str, n: int, operator_id: str = "op-1") -> AccountEventOccurred:
    return AccountEventOccurred(
        source="operator",
        operator_id=operator_id,
        payload=AccountEventPayload(operator_event_id=f"e-{n}", account_id=account_id, kind=AccountEventKind.LOGIN, identity=IDENTITY),
    )


def test_runs_fit_in_a_record_batch_and_keep_every_message_in_order():
    body = b"x" * 10_000
    messages = [batch_message(body, str(n).encode() if n % 3 else None) for n in range(200)]

    runs = list(record_batches(messages))

    assert len(runs) > 1
    assert [m for run in runs for m in run] == messages
    assert all(
        sum(len(getattr(m, "body", m)) + len(getattr(m, "key", b"")) + RECORD_OVERHEAD for m in run) <= MAX_BATCH_BYTES for run in runs
    )


def test_a_key_goes_to_the_partition_the_producer_would_choose():
    partitions = [0, 1, 2, 3, 4, 5]
    of = KeyPartitions(partitions)
    for key in (b"op-1:a", b"op-2:b", "op-3:€".encode()):
        assert of(key) == of(key) == DefaultPartitioner()(key, partitions, partitions)


@pytest.mark.integration
async def test_events_go_out_as_their_contracts_serialise_them_on_their_keys_partitions(settings):
    broker = create_broker(settings, service="blocking-test")
    await broker.start()
    try:
        publisher = BatchPublisher(broker, settings)
        made = [domain.allowed(account_event(f"acc-{n % 7}", n), NOW) for n in range(60)]
        refused_fields = domain.decision_fields(
            account_event("acc-x", 99), NOW, Outcome.BLOCK, code=domain.CODE, scope=SCOPE_ALL, matched=["uid"]
        )
        other_fields = domain.allowed(account_event("acc-0", 100, operator_id="op-2"), NOW)
        decisions = [DecisionMade.model_validate(fields) for fields in made]
        refused, other = DecisionMade.model_validate(refused_fields), DecisionMade.model_validate(other_fields)
        command = EnforcementCommanded.caused_by(
            decisions[0],
            source="blocking",
            operator_id="op-1",
            payload=EnforcementPayload(account_id="acc-0", action="end_sessions", exclusion_id=decisions[0].id),
        )

        # No topic is made beforehand: the publisher makes an operator's topics the first time.
        await publisher.publish_decisions([*made, other_fields, refused_fields])
        await publisher.publish([command])

        ones, twos = topics.operator_topics("op-1"), topics.operator_topics("op-2")
        assert set(await broker.config.admin_client.list_topics()) >= {settings.topic(t) for t in ones + twos}
        async with (
            TopicReader(settings, topics.of_operator("op-1", topics.DECISIONS)) as read_decisions,
            TopicReader(settings, topics.of_operator("op-1", topics.ENFORCEMENT)) as read_commands,
            TopicReader(settings, topics.of_operator("op-2", topics.DECISIONS)) as read_others,
        ):
            await read_decisions.read_to_end()
            await read_commands.read_to_end()
            records = read_decisions.records
            [command_record] = read_commands.records
            [other_record] = (await read_others.read_to_end()) and read_others.records
    finally:
        await broker.stop()

    sent = {str(d.id): d for d in [*decisions, refused]}
    assert sorted(r.value for r in records) == sorted(d.model_dump_json().encode() for d in sent.values()), "op-1's topic: op-1's alone"
    assert other_record.value == other.model_dump_json().encode(), "op-2's decision on op-2's topic"
    partitions = await _partitions(settings, topics.of_operator("op-1", topics.DECISIONS))
    for record in records:
        decision = sent[json.loads(record.value)["id"]]
        assert record.key == decision.key()
        assert record.partition == DefaultPartitioner()(decision.key(), partitions, partitions)
        assert dict(record.headers)["type"] == b"decision.made" and dict(record.headers)["content-type"] == b"application/json"
    for key in {d.key() for d in decisions}:  # one account's decisions stay in the order they were made
        assert [r.value for r in records if r.key == key] == [d.model_dump_json().encode() for d in decisions if d.key() == key]
    assert command_record.value == command.model_dump_json().encode() and command_record.key == command.key()
    assert dict(command_record.headers)["type"] == b"enforcement.commanded"


async def _partitions(settings, topic: str) -> list[int]:
    async with TopicReader(settings, topic) as reader:
        return sorted(p.partition for p in reader.consumer.assignment())
