"""What registration's integration tests share: a clock the test moves, and the app on the real servers."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from faststream import FastStream

from services.registration.app import create_app
from shared import topics
from shared.events import (
    SCOPE_ALL,
    Channel,
    Event,
    ExclusionRequestedPayload,
    ExclusionVerified,
    LiftRequestedPayload,
    LiftVerified,
    RequestExclusion,
    RequestLift,
    Scope,
    VerificationFailed,
    VerificationOutcomePayload,
)
from shared.identity import Identity, uid_from_personnummer
from shared.settings import Settings
from tests.support import Publisher, TopicReader, eventually

# Whole milliseconds: BSON dates keep no finer time, so stored dates compare equal to these.
START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


class ManualClock:
    """Time that moves only when the test says so."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def set(self, moment: datetime) -> datetime:
        assert moment >= self.now, "time only moves forward"
        self.now = moment
        return self.now


def person(n: int, **fields) -> Identity:
    """Someone new for each ``n``: a personnummer of their own, plus whatever else is given."""
    return Identity(uid=uid_from_personnummer(f"1990{n:08d}"), **fields)


def request(
    identity: Identity,
    duration: str,
    jurisdiction: str = "SE",
    *,
    channel: Channel = Channel.OPERATOR,
    scope: Scope = SCOPE_ALL,
    **payload,
) -> RequestExclusion:
    return RequestExclusion(
        source="test",
        operator_id="op-1" if channel is Channel.OPERATOR else None,
        payload=ExclusionRequestedPayload(
            identity=identity,
            duration=duration,
            jurisdiction=jurisdiction,
            channel=channel,
            attested=channel is Channel.OPERATOR,
            scope=scope,
            **payload,
        ),
    )


def lift(exclusion_id: str, subject: str) -> LiftVerified:
    """What verification announces once the person (``subject``) typed the right code for a lift."""
    lift_id = uuid.uuid4()
    return LiftVerified(
        id=LiftVerified.id_for(lift_id),
        source="verification",
        subject=subject,
        payload=VerificationOutcomePayload(exclusion_id=uuid.UUID(exclusion_id), method="code", lift_id=lift_id),
    )


def unverified_lift(exclusion_id: str | None = None, identity: Identity | None = None) -> RequestLift:
    """The first contract's lift request, as anyone could write it to the commands topic: no proof."""
    return RequestLift(
        source="test",
        payload=LiftRequestedPayload(exclusion_id=uuid.UUID(exclusion_id) if exclusion_id else None, identity=identity),
    )


def verified(exclusion_id: str) -> ExclusionVerified:
    return ExclusionVerified(source="verification", payload=VerificationOutcomePayload(exclusion_id=uuid.UUID(exclusion_id), method="code"))


def failed(exclusion_id: str, reason: str = "attempts exhausted") -> VerificationFailed:
    return VerificationFailed(
        source="verification", payload=VerificationOutcomePayload(exclusion_id=uuid.UUID(exclusion_id), method="code", reason=reason)
    )


@dataclass
class Registration:
    """The running app, the clock, and the lifecycle topic as the test sees them."""

    app: FastStream
    clock: ManualClock
    database: object
    publisher: Publisher
    lifecycle: TopicReader
    notifications: TopicReader

    async def send(self, command: Event) -> None:
        await self.publisher.event(command)

    async def send_in_order(self, *messages: Event, key: bytes = b"one-partition") -> None:
        """Publish on one partition, so they are handled in this order (a redelivery, then a marker)."""
        for message in messages:
            await self.publisher.raw(message.topic, message.model_dump_json().encode(), key=key)

    async def caused_by(self, cause: Event, count: int = 1) -> list[dict]:
        """The lifecycle event(s) a command or verification outcome led to."""
        return await self.lifecycle.wait_for(lambda m: m["causation_id"] == str(cause.id), count=count)

    async def handle(self, cause: Event) -> dict:
        """Send a command and wait for the one lifecycle event it leads to."""
        await self.send(cause)
        [event] = await self.caused_by(cause)
        return event

    async def lift(self, exclusion_id: str) -> LiftVerified:
        """A lift the exclusion's person verified with their code."""
        return lift(exclusion_id, (await self.stored(exclusion_id))["person_id"])

    async def tick(self, **advance: float) -> int:
        """Move the clock on, then run one pass of the timer loop."""
        if advance:
            self.clock.advance(**advance)
        return await self.app.timers.tick(self.clock())

    async def event(self, exclusion_id: str, type_: str) -> dict:
        [event] = await self.lifecycle.wait_for(lambda m: m["payload"]["exclusion_id"] == exclusion_id and m["type"] == type_)
        return event

    async def sequence(self, exclusion_id: str, expected: list[str]) -> list[dict]:
        """Wait until exactly these lifecycle events of the exclusion are out, in this order."""

        async def probe():
            await self.lifecycle._drain()
            found = [m for m in self.lifecycle.messages() if m["payload"]["exclusion_id"] == exclusion_id]
            return found if [m["type"] for m in found] == expected else None

        try:
            return await eventually(probe, what=f"events {expected}")
        except AssertionError:
            raise AssertionError(f"expected {expected}, got {await self.types(exclusion_id)}") from None

    async def types(self, exclusion_id: str) -> list[str]:
        """Every lifecycle event type of one exclusion so far, in the order published."""
        await self.lifecycle._drain()
        return [m["type"] for m in self.lifecycle.messages() if m["payload"]["exclusion_id"] == exclusion_id]

    async def stored(self, exclusion_id: str) -> dict:
        return await self.database["exclusions"].find_one({"_id": exclusion_id})

    async def notices(self, predicate) -> list[dict]:
        return await self.notifications.wait_for(predicate)


@asynccontextmanager
async def registration(settings: Settings, database, clock: ManualClock | None = None, **options) -> AsyncIterator[Registration]:
    """Registration on the real broker and store; its timer loop runs only when the test ticks."""
    settings = settings.model_copy(update={"registration_timer_seconds": 0})
    clock = clock or ManualClock()
    app = create_app(settings, database=database, clock=clock, **options)
    async with (
        app,
        Publisher(settings) as publisher,
        TopicReader(settings, topics.EXCLUSION_LIFECYCLE) as lifecycle,
        TopicReader(settings, topics.NOTIFICATION_REQUESTS) as notifications,
    ):
        yield Registration(app, clock, database, publisher, lifecycle, notifications)
