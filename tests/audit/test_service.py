"""The audit service on the real broker and store: every topic reaches the log, and each message is
recorded exactly once, whether it is redelivered, published twice, or the service is killed mid-batch."""

import asyncio
import json
import os
import signal
import sys
import uuid

import pytest
from pydantic import SecretStr

from services.audit.app import create_app
from services.audit.checkpoints import DEVELOPMENT_SIGNING_KEY, Signer, check_signature
from services.audit.repository import INDEXES, LOG, Entry, MongoAuditLog
from services.audit.verifier import verify
from shared import topics
from shared.broker import ensure_operator_topics, ensure_topics
from shared.events import parse_event
from shared.identity import Hasher
from shared.settings import InsecureSettingsError
from shared.store import ensure_indexes
from tests.audit.test_verify import SIGNING_KEY
from tests.support import Publisher, eventually

pytestmark = pytest.mark.integration


def probe(topic: str) -> dict:
    return {"id": str(uuid.uuid4()), "type": "test.probe", "version": 1, "source": "test", "payload": {"topic": topic}}


async def recorded(database, count: int) -> bool:
    return await database[LOG].count_documents({}) >= count


async def exactly_once(database, ids: set[str]) -> None:
    documents = await database[LOG].find({}, {"_id": 1, "topic": 1, "partition": 1, "offset": 1}).to_list(None)
    assert {d["_id"] for d in documents} == ids
    assert len(documents) == len(ids) == len({(d["topic"], d["partition"], d["offset"]) for d in documents})


async def test_every_topic_reaches_the_log_each_on_its_partition_s_chain(settings, database):
    await ensure_operator_topics(settings, "op-1")
    every = [*topics.ALL, *topics.operator_topics("op-1")]
    sent = {}
    async with create_app(settings, database=database), Publisher(settings) as publish:
        for topic in every:
            message = probe(topic)
            sent[topic] = (message["id"], await publish.raw(topic, json.dumps(message).encode(), key=b"k"))
        await eventually(lambda: recorded(database, len(every)), what="every topic's message audited")

    for topic, (event_id, where) in sent.items():
        entry = await database[LOG].find_one({"_id": event_id})
        assert entry is not None, f"nothing from {topic}"
        assert (entry["topic"], entry["partition"], entry["offset"]) == (settings.topic(topic), where.partition, where.offset)
        assert json.loads(entry["body"])["chain"] == f"{settings.topic(topic)}/{where.partition}"
    report = await verify(MongoAuditLog(database))
    assert report.intact and report.records == len(every)


async def test_an_event_published_twice_is_recorded_once(settings, database):
    message = json.dumps(probe("twice")).encode()
    later = probe("after")
    async with create_app(settings, database=database), Publisher(settings) as publish:
        await publish.raw(topics.EXCLUSION_LIFECYCLE, message, key=b"k")
        await publish.raw(topics.EXCLUSION_LIFECYCLE, message, key=b"k")  # a producer's retry: the same event again
        await publish.raw(topics.EXCLUSION_LIFECYCLE, json.dumps(later).encode(), key=b"k")
        await eventually(lambda: database[LOG].find_one({"_id": later["id"]}), what="the message after them audited")

    await exactly_once(database, {json.loads(message)["id"], later["id"]})
    assert (await verify(MongoAuditLog(database))).intact


async def test_a_batch_cut_short_before_its_offsets_were_committed_is_redelivered_and_recorded_once(settings, database):
    """The state a kill mid-batch leaves: the first records of a batch in the store, no offset committed."""
    messages = [probe(f"m{n}") for n in range(40)]
    async with Publisher(settings) as publish:
        await ensure_topics(settings)
        sent = [await publish.raw(topics.EXCLUSION_LIFECYCLE, json.dumps(m).encode(), key=b"one-key") for m in messages]
    await ensure_indexes(database, INDEXES)
    hasher = Hasher.from_settings(settings)
    prefix = [
        Entry(s.topic, s.partition, s.offset, "2026-01-01T00:00:00.000+00:00", parse_event(m).redacted(hasher))
        for s, m in zip(sent, messages, strict=True)
    ][:15]
    assert await MongoAuditLog(database).append(prefix) == 15

    async with create_app(settings, database=database):
        await eventually(lambda: recorded(database, len(messages)), what="the rest of the batch audited")
        await eventually(lambda: database[LOG].find_one({"_id": messages[-1]["id"]}), what="the last message audited")

    await exactly_once(database, {m["id"] for m in messages})
    report = await verify(MongoAuditLog(database))
    assert report.intact and report.records == len(messages)


async def test_an_audit_service_killed_mid_batch_and_restarted_leaves_one_record_per_message(settings, database):
    messages = [probe(f"m{n}") for n in range(6000)]
    async with Publisher(settings) as publish:
        await ensure_topics(settings)
        for start in range(0, len(messages), 500):
            for m in messages[start : start + 500]:
                await publish.producer.send(settings.topic(topics.GATEWAY_REQUESTS), json.dumps(m).encode(), key=m["id"][:2].encode())
            await publish.producer.flush()
    env = {**os.environ, **settings.environment(), "SELFEX_MONGO_DATABASES": json.dumps({"audit": database.name})}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "selfex.cli", "run", "audit", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await eventually(lambda: recorded(database, 1), timeout=60, interval=0.01, what="the first batch audited")
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    at_kill = await database[LOG].count_documents({})

    async with create_app(settings, database=database):
        await eventually(lambda: recorded(database, len(messages)), timeout=120, what="every message audited after the restart")

    assert 0 < at_kill < len(messages), f"killed with {at_kill} of {len(messages)} recorded: not mid-way"
    await exactly_once(database, {m["id"] for m in messages})
    report = await verify(MongoAuditLog(database))
    assert report.intact and report.records == len(messages)


async def test_the_service_checkpoints_its_chains_heads_signed_with_the_deployment_key(settings, database):
    settings = settings.model_copy(update={"audit_signing_key": SecretStr(SIGNING_KEY), "audit_checkpoint_seconds": 0.2})
    messages = [probe(f"m{n}") for n in range(5)]
    async with create_app(settings, database=database), Publisher(settings) as publish:
        for m in messages:
            await publish.raw(topics.EXCLUSION_LIFECYCLE, json.dumps(m).encode(), key=b"one-key")

        async def checkpointed():
            for checkpoint in await MongoAuditLog(database).checkpoints():
                if sum(head["seq"] for head in checkpoint["heads"]) == len(messages):
                    return checkpoint
            return None

        checkpoint = await eventually(checkpointed, what="a checkpoint of every record's chain")

    check_signature(checkpoint, Signer.from_settings(settings).public_key)  # type: ignore[union-attr]
    [head] = checkpoint["heads"]
    last = await database[LOG].find_one({"_id": messages[-1]["id"]})
    assert (head["chain"], head["seq"], head["hash"]) == (f"{last['topic']}/{last['partition']}", last["seq"], last["hash"])
    assert (await verify(MongoAuditLog(database), against=[checkpoint])).intact


def test_the_service_refuses_the_development_signing_key_outside_development(settings):
    with pytest.raises(InsecureSettingsError, match="public development key"):
        create_app(settings.model_copy(update={"audit_signing_key": SecretStr(DEVELOPMENT_SIGNING_KEY)}))
    create_app(settings.model_copy(update={"audit_signing_key": SecretStr(DEVELOPMENT_SIGNING_KEY), "development": True}))  # accepted there
