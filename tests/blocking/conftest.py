"""Blocking on the real broker and store: the app in-process, exclusions set up by publishing
lifecycle events (as registration would), account events in, decisions and enforcement out."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest_asyncio

from services.blocking.app import create_app
from shared import topics
from shared.events import (
    AccountEventKind,
    AccountEventOccurred,
    AccountEventPayload,
    ExclusionSnapshot,
    ExclusionState,
    Scope,
    SCOPE_ALL,
)
from shared.identity import Hasher, Identity
from tests.support import Publisher, TopicReader, eventually

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


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
    decisions: TopicReader
    enforcement: TopicReader
    dead_letters: TopicReader
    accounts: int = field(default=0)

    def snapshot(self, identity: Identity, *, scope: Scope = SCOPE_ALL, state=ExclusionState.ACTIVE, version: int = 1,
                 ends_at: datetime | None = T0 + timedelta(days=30), exclusion_id: uuid.UUID | None = None) -> ExclusionSnapshot:
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
                lambda: self.database["blocking_exclusions"].find_one(
                    {"_id": str(snapshot.exclusion_id), "version": snapshot.version}
                ),
                what=f"blocking to follow {event.type} v{snapshot.version}",
            )
        return event

    def account_event(self, kind: AccountEventKind, identity: Identity, *, account: str | None = None,
                      operator: str = "op-1", **payload) -> AccountEventOccurred:
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
        wanted = {str(e.id) for e in events}
        found = await self.decisions.wait_for(lambda m: m["causation_id"] in wanted, count=len(wanted))
        return {m["causation_id"]: m["payload"] for m in found}


@pytest_asyncio.fixture
async def blocking(settings, database):
    clock = Clock()
    app = create_app(settings, database=database, clock=clock)
    async with (
        app,
        Publisher(settings) as publish,
        TopicReader(settings, topics.DECISIONS) as decisions,
        TopicReader(settings, topics.ENFORCEMENT) as enforcement,
        TopicReader(settings, topics.DEAD_LETTER) as dead_letters,
    ):
        yield Blocking(settings, database, clock, Hasher.from_settings(settings), publish, decisions, enforcement, dead_letters)
