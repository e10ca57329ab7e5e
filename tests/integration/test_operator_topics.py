"""Kafka tenancy on the real broker and store: each operator sends account events on a topic of its
own and receives decisions and enforcement on topics of its own; blocking takes the operator from the
topic an event came on, never from what the event says; an operator added while everything runs is
served within the metadata refresh interval.

The embedded broker has no ACLs, so isolation is checked by what each operator's consumer receives
(and what the gateway shows each operator).
"""

import asyncio
import json
import os
import sys
import uuid
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from services.blocking.app import create_app as create_blocking
from services.gateway.access import Permission
from shared import topics
from shared.broker import ensure_operator_topics
from shared.events import (
    SCOPE_ALL,
    AccountEventKind,
    AccountEventOccurred,
    AccountEventPayload,
    ExclusionActivated,
    ExclusionSnapshot,
    ExclusionState,
    utcnow,
)
from shared.identity import Hasher, Identity
from tests.gateway.conftest import world
from tests.support import Publisher, TopicReader, eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
SELFEX = str(Path(sys.executable).parent / "selfex")
METADATA_MAX_AGE_MS = 1000  # how soon a new operator's topics are seen (the default is 5000)


class Tenancy:
    """The gateway and blocking running on one world, two operators A and B, a publisher."""

    def __init__(self, gw, publish: Publisher, stack: AsyncExitStack) -> None:
        self.gw, self.settings, self.publish, self.stack = gw, gw.settings, publish, stack
        self.hasher = Hasher.from_settings(gw.settings)
        self.readers: dict[str, TopicReader] = {}

    async def reader(self, operator_id: str, kind: str) -> TopicReader:
        """What an operator's platform would read of its own topic of this kind (from the beginning)."""
        name = topics.of_operator(operator_id, kind)
        if name not in self.readers:
            self.readers[name] = await self.stack.enter_async_context(TopicReader(self.settings, name))
        return self.readers[name]

    def event(self, operator_id: str, identity: Identity, *, account: str | None = None) -> AccountEventOccurred:
        return AccountEventOccurred(
            source="operator",
            operator_id=operator_id,
            payload=AccountEventPayload(
                operator_event_id=f"e-{uuid.uuid4().hex[:8]}",
                account_id=account or f"acc-{uuid.uuid4().hex[:8]}",
                kind=AccountEventKind.LOGIN,
                identity=identity,
            ),
        )

    async def send(self, event: AccountEventOccurred, *, on: str | None = None) -> None:
        """Publish an account event on an operator's input topic (the one it names, unless ``on`` says another)."""
        topic = topics.of_operator(on or event.operator_id, topics.ACCOUNT_EVENTS)
        await self.publish.raw(topic, event.model_dump_json().encode(), key=event.key())

    async def decisions(self, operator_id: str, *events: AccountEventOccurred) -> dict[str, dict]:
        """The decisions on the operator's own topic for these events, by event id (waits for all)."""
        wanted = {str(e.id) for e in events}
        reader = await self.reader(operator_id, topics.DECISIONS)
        found = await reader.wait_for(lambda m: m["causation_id"] in wanted, count=len(wanted), timeout=60)
        return {m["causation_id"]: m for m in found}

    async def shown(self, key: str) -> list[dict]:
        """What ``GET /v1/decisions`` shows the operator with this key."""
        answer = await self.gw.client.get("/v1/decisions", params={"limit": 1000}, headers={"X-API-Key": key})
        assert answer.status_code == 200, answer.text
        return answer.json()["decisions"]

    async def activate(self, identity: Identity) -> ExclusionActivated:
        now = utcnow()
        snapshot = ExclusionSnapshot(
            exclusion_id=uuid.uuid4(),
            identifiers=sorted(self.hasher.identifiers(identity).values()),
            scope=SCOPE_ALL,
            jurisdiction="SE",
            state=ExclusionState.ACTIVE,
            starts_at=now - timedelta(hours=1),
            ends_at=now + timedelta(days=30),
        )
        event = ExclusionActivated(source="registration", subject=uuid.uuid4().hex, payload=snapshot)
        await self.publish.event(event)
        return event


def someone() -> Identity:
    return Identity(email=f"p-{uuid.uuid4().hex[:10]}@example.se")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tenancy(servers):
    async with world(servers, registration=False, kafka_metadata_max_age_ms=METADATA_MAX_AGE_MS) as gw, AsyncExitStack() as stack:
        for name in ("A", "B"):
            await gw.operator(name, {Permission.CHECK})
        await ensure_operator_topics(gw.settings, gw.operator_ids["A"], gw.operator_ids["B"])  # as `selfex operator add` does
        await stack.enter_async_context(create_blocking(gw.settings, database=gw.database))
        publish = await stack.enter_async_context(Publisher(gw.settings))
        yield Tenancy(gw, publish, stack)


async def test_each_operator_receives_only_its_own_customers_decisions_and_enforcement(tenancy):
    a, b = tenancy.gw.operator_ids["A"], tenancy.gw.operator_ids["B"]
    anna, bob, carl = someone(), someone(), someone()
    seen = [tenancy.event(a, anna, account="a-anna"), tenancy.event(b, anna, account="b-anna")]
    for event in seen:
        await tenancy.send(event)
    await tenancy.decisions(a, seen[0])
    await tenancy.decisions(b, seen[1])  # both accounts are now known to blocking

    activated = await tenancy.activate(anna)
    enforced = {
        op: await (await tenancy.reader(op, topics.ENFORCEMENT)).wait_for(lambda m: m["causation_id"] == str(activated.id), timeout=60)
        for op in (a, b)
    }
    from_a = [tenancy.event(a, anna, account="a-anna"), tenancy.event(a, bob)]
    from_b = [tenancy.event(b, carl), tenancy.event(b, anna, account="b-anna")]
    for event in from_a + from_b:
        await tenancy.send(event)
    decided_a, decided_b = await tenancy.decisions(a, *from_a), await tenancy.decisions(b, *from_b)

    assert [(c["operator_id"], c["payload"]["account_id"]) for c in enforced[a]] == [(a, "a-anna")]
    assert [(c["operator_id"], c["payload"]["account_id"]) for c in enforced[b]] == [(b, "b-anna")]
    assert decided_a[str(from_a[0].id)]["payload"]["outcome"] == "BLOCK" and decided_b[str(from_b[1].id)]["payload"]["outcome"] == "BLOCK"
    for operator, mine in ((a, seen[:1] + from_a), (b, seen[1:] + from_b)):
        for kind in (topics.DECISIONS, topics.ENFORCEMENT):
            everything = await (await tenancy.reader(operator, kind)).read_to_end()
            assert {m["operator_id"] for m in everything} == {operator}, f"only {operator}'s own on its {kind}"
        received = {m["causation_id"] for m in await (await tenancy.reader(operator, topics.DECISIONS)).read_to_end()}
        theirs = {str(e.id) for e in seen + from_a + from_b} - {str(e.id) for e in mine}
        assert {str(e.id) for e in mine} <= received and not received & theirs


async def test_an_event_on_one_operator_s_topic_naming_another_is_decided_for_the_topic_s_operator_only(tenancy):
    a, b = tenancy.gw.operator_ids["A"], tenancy.gw.operator_ids["B"]
    forged = tenancy.event(b, someone(), account="claimed-by-a")  # says B, sent on A's topic
    await tenancy.send(forged, on=a)
    genuine = tenancy.event(
        b, someone(), account="genuine-b"
    )  # a later event B really sends: B's topic has been read past the forged one's time
    await tenancy.send(genuine)

    [decision] = (await tenancy.decisions(a, forged)).values()
    await tenancy.decisions(b, genuine)
    shown_b = await eventually(
        lambda: _having(tenancy.shown(tenancy.gw.keys["B"]), "genuine-b"), timeout=60, what="B's genuine decision in B's /v1/decisions"
    )
    shown_a = await eventually(
        lambda: _having(tenancy.shown(tenancy.gw.keys["A"]), "claimed-by-a"), timeout=60, what="the decision in A's /v1/decisions"
    )
    on_b = await (await tenancy.reader(b, topics.DECISIONS)).read_to_end()

    assert decision["operator_id"] == a, "decided for the operator whose topic it came on"
    assert str(forged.id) not in {m["causation_id"] for m in on_b}, "no decision for B on B's topic"
    assert "claimed-by-a" not in {d["account_id"] for d in shown_b}, "nor in B's /v1/decisions"
    assert [d["account_event_id"] for d in shown_a if d["account_id"] == "claimed-by-a"] == [str(forged.id)]


async def test_an_operator_added_while_everything_runs_gets_decisions_for_events_on_its_new_topic(tenancy):
    settings, name = tenancy.settings, f"Newcomer {uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        **settings.environment(),
        # The world's gateway runs on one injected database: the command is pointed at it as the gateway's own.
        "SELFEX_MONGO_DB": settings.mongo_db,
        "SELFEX_MONGO_DATABASES": json.dumps({"gateway": settings.mongo_db}),
    }
    process = await asyncio.create_subprocess_exec(
        SELFEX, "operator", "add", name, "--quiet", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    output, errors = await process.communicate()
    assert process.returncode == 0, errors.decode()[-2000:]
    key = output.decode().strip()
    newcomer = (await tenancy.gw.database["operators"].find_one({"name": name}))["_id"]
    made = set(await _topic_names(tenancy))
    assert {settings.topic(t) for t in topics.operator_topics(newcomer)} <= made, "`selfex operator add` made its topics"

    event = tenancy.event(newcomer, someone(), account="first-customer")
    await tenancy.send(event)
    # Blocking started before the topic existed: it reads it once its metadata is refreshed (1 s here).
    [decision] = (await tenancy.decisions(newcomer, event)).values()
    shown = await eventually(lambda: _having(tenancy.shown(key), "first-customer"), timeout=60, what="the newcomer's /v1/decisions")

    assert decision["operator_id"] == newcomer and decision["payload"]["outcome"] == "ALLOW"
    assert [d["account_event_id"] for d in shown] == [str(event.id)]


async def _having(answer, account: str) -> list[dict] | None:
    decisions = await answer
    return decisions if any(d["account_id"] == account for d in decisions) else None


async def _topic_names(tenancy: Tenancy) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=tenancy.settings.kafka)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()
