"""Blocking on the real broker and store: the app in-process, exclusions set up by publishing
lifecycle events (as registration would), account events in on each operator's own topic,
decisions and enforcement out on each operator's own."""

import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest_asyncio

from services.blocking.app import create_app
from shared import topics
from shared.broker import ensure_operator_topics
from shared.events import (
    SCOPE_ALL,
    AccountEventKind,
    AccountEventOccurred,
    AccountEventPayload,
    ExclusionSnapshot,
    ExclusionState,
    Scope,
)
from shared.identity import Hasher, Identity
from tests.support import Publisher, TopicReader, eventually

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
OPERATORS = ("op-1", "op-2")  # whose topics the tests make before blocking starts


def of(kind: str, operator: str = "op-1") -> str:
    """An operator's own topic (without the deployment's prefix)."""
    return topics.of_operator(operator, kind)


@dataclass
class Clock:
    """The service's clock, moved by the test instead of slept on."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Blocking:
    """A running blocking service and what a test needs around it."""

    settings: object
    database: object
    clock: Clock
    hasher: Hasher
    publish: Publisher
    decisions: TopicReader  # op-1's
    enforcement: TopicReader  # op-1's
    dead_letters: TopicReader
    accounts: int = field(default=0)
    readers: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)  # other operators' readers
    opened: dict[str, TopicReader] = field(default_factory=dict)

    async def reader(self, kind: str, operator: str) -> TopicReader:
        """What one operator receives of one kind (``topics.DECISIONS`` or ``topics.ENFORCEMENT``), read from the beginning."""
        if operator == "op-1" and kind in (topics.DECISIONS, topics.ENFORCEMENT):
            return self.decisions if kind == topics.DECISIONS else self.enforcement
        name = of(kind, operator)
        if name not in self.opened:
            self.opened[name] = await self.readers.enter_async_context(TopicReader(self.settings, name))
        return self.opened[name]

    def snapshot(
        self,
        identity: Identity,
        *,
        scope: Scope = SCOPE_ALL,
        state=ExclusionState.ACTIVE,
        version: int = 1,
        ends_at: datetime | None = T0 + timedelta(days=30),
        exclusion_id: uuid.UUID | None = None,
    ) -> ExclusionSnapshot:
        return ExclusionSnapshot(
            exclusion_id=exclusion_id or uuid.uuid4(),
            identifiers=sorted(self.hasher.identifiers(identity).values()),
            scope=scope,
            jurisdiction="SE",
            state=state,
            starts_at=T0 - timedelta(hours=1),
            ends_at=ends_at,
            version=version,
        )

    async def lifecycle(self, event_type, snapshot: ExclusionSnapshot, *, subject: str = "person-1", wait: bool = True):
        """Publish a lifecycle event; by default wait until blocking's projection has taken it in."""
        event = event_type(source="registration", subject=subject, payload=snapshot)
        await self.publish.event(event)
        if wait:
            await eventually(
                lambda: self.database["blocking_exclusions"].find_one({"_id": str(snapshot.exclusion_id), "version": snapshot.version}),
                what=f"blocking to follow {event.type} v{snapshot.version}",
            )
        return event

    def account_event(
        self, kind: AccountEventKind, identity: Identity, *, account: str | None = None, operator: str = "op-1", **payload
    ) -> AccountEventOccurred:
        self.accounts += 1
        return AccountEventOccurred(
            source="operator",
            operator_id=operator,
            payload=AccountEventPayload(
                operator_event_id=f"evt-{uuid.uuid4().hex[:8]}",
                account_id=account or f"acc-{self.accounts}",
                kind=kind,
                identity=identity,
                **payload,
            ),
        )

    async def decide(self, *events: AccountEventOccurred) -> dict[str, dict]:
        """Publish account events and return each one's decision payload, by the account event's id."""
        for event in events:
            await self.publish.event(event)
        decided = {}
        for operator in sorted({e.operator_id for e in events}):
            wanted = {str(e.id) for e in events if e.operator_id == operator}
            decisions = await self.reader(topics.DECISIONS, operator)
            found = await decisions.wait_for(lambda m, wanted=wanted: m["causation_id"] in wanted, count=len(wanted))
            decided.update({m["causation_id"]: m["payload"] for m in found})
        return decided


@pytest_asyncio.fixture
async def blocking(settings, database):
    clock = Clock()
    await ensure_operator_topics(settings, *OPERATORS)  # as `selfex operator add` does
    app = create_app(settings, database=database, clock=clock)
    async with (
        app,
        Publisher(settings) as publish,
        TopicReader(settings, of(topics.DECISIONS)) as decisions,
        TopicReader(settings, of(topics.ENFORCEMENT)) as enforcement,
        TopicReader(settings, topics.DEAD_LETTER) as dead_letters,
    ):
        blocking = Blocking(settings, database, clock, Hasher.from_settings(settings), publish, decisions, enforcement, dead_letters)
        async with blocking.readers:
            yield blocking
