"""Blocking with its store away mid-stream: an account seen meanwhile is not forgotten, even across a
restart, a lifecycle event consumed meanwhile is not lost, and nothing is dead-lettered."""

import uuid

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from services.blocking.app import create_app as create_blocking
from shared import topics
from shared.broker import ensure_operator_topics, ensure_topics
from shared.events import (
    SCOPE_ALL,
    AccountEventKind,
    AccountEventOccurred,
    AccountEventPayload,
    ExclusionActivated,
    ExclusionSnapshot,
    ExclusionState,
)
from shared.identity import Hasher, Identity, uid_from_personnummer
from tests.blocking.conftest import T0, Clock
from tests.support import Publisher, TcpProxy, TopicReader, eventually

pytestmark = pytest.mark.integration

PERSON = Identity(uid=uid_from_personnummer("197703031234"))


def login(account: str) -> AccountEventOccurred:
    return AccountEventOccurred(
        source="operator",
        operator_id="op-1",
        payload=AccountEventPayload(
            operator_event_id=f"e-{uuid.uuid4().hex[:6]}", account_id=account, kind=AccountEventKind.LOGIN, identity=PERSON
        ),
    )


async def test_an_account_seen_while_the_store_was_away_gets_end_sessions_after_a_restart(servers, settings):
    settings = settings.model_copy(update={"consumer_retry_first_seconds": 0.05, "consumer_retry_longest_seconds": 0.5})
    await ensure_topics(settings)
    await ensure_operator_topics(settings, "op-1")
    clock, hasher = Clock(), Hasher.from_settings(settings)
    seen = login("acc-seen-during-outage")
    async with (
        TcpProxy(servers.mongo_uri) as proxy,
        Publisher(settings) as publish,
        TopicReader(settings, topics.of_operator("op-1", topics.DECISIONS)) as decisions,
        TopicReader(settings, topics.of_operator("op-1", topics.ENFORCEMENT)) as enforcement,
    ):
        client = AsyncMongoClient(f"mongodb://127.0.0.1:{proxy.port}", tz_aware=True, serverSelectionTimeoutMS=500, connectTimeoutMS=500)
        try:
            async with create_blocking(settings, database=client[settings.mongo_db], clock=clock):
                await proxy.cut()
                await publish.event(seen)
                # Decided from memory even with the store away; the account it saw is not yet stored.
                answers = await decisions.wait_for(lambda m: m["causation_id"] == str(seen.id))
                # Published again with each retry of the batch, always the same decision (same id).
                assert {(d["id"], d["payload"]["outcome"]) for d in answers} == {(answers[0]["id"], "ALLOW")}
            # The instance stopped (as a crash would) before it could store the account it had seen.
            await proxy.resume()
            # The client finds the store again on its own schedule (its server selection gives up
            # after 0.5 s here): the restart below is a restart with the store back, not a race.
            await eventually(lambda: _reachable(client), what="the store reachable through the proxy again")
            exclusion = ExclusionSnapshot(
                exclusion_id=uuid.uuid4(),
                identifiers=sorted(hasher.identifiers(PERSON).values()),
                scope=SCOPE_ALL,
                jurisdiction="SE",
                state=ExclusionState.ACTIVE,
                starts_at=T0,
                ends_at=None,
            )
            async with create_blocking(settings, database=client[settings.mongo_db], clock=clock):
                await publish.event(ExclusionActivated(source="registration", subject="person-1", payload=exclusion))
                commands = await enforcement.wait_for(lambda m: m["payload"]["account_id"] == seen.payload.account_id)
                assert {c["payload"]["action"] for c in commands} == {"end_sessions"}
                after = login("acc-seen-during-outage")
                await publish.event(after)
                blocked = await decisions.wait_for(lambda m: m["causation_id"] == str(after.id))
                assert {d["payload"]["outcome"] for d in blocked} == {"BLOCK"}
        finally:
            await client.close()
        async with TopicReader(settings, topics.DEAD_LETTER) as dead_letters:
            assert await dead_letters.read_to_end() == [], "nothing was parked as poison"


async def _reachable(client: AsyncMongoClient) -> bool:
    try:
        await client.admin.command("ping")
    except PyMongoError:
        return False
    return True
