"""Known people's events, appended to the audit log as the service appends them (redacted, chained per
partition): what the query, statistics and retention tests count on."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.audit.repository import INDEXES, Entry, MongoAuditLog
from shared import topics
from shared.events import (
    SCOPE_ALL,
    AccountEventKind,
    AccountEventOccurred,
    AccountEventPayload,
    DecisionMade,
    DecisionPayload,
    EnforcementCommanded,
    EnforcementPayload,
    Event,
    ExclusionActivated,
    ExclusionRequestedPayload,
    ExclusionSnapshot,
    ExclusionVerified,
    MessageDeadLettered,
    MessageDeadLetteredPayload,
    NotificationRequested,
    NotificationRequestedPayload,
    Outcome,
    RequestExclusion,
    VerificationOutcomePayload,
)
from shared.identity import Hasher, Identity
from shared.store import ensure_indexes
from tests.support import TEST_HASH_SECRET

PREFIX = "t."
HASHER = Hasher(TEST_HASH_SECRET.encode())


@dataclass
class Person:
    identity: Identity
    operator_id: str
    exclusion_id: uuid.UUID = field(default_factory=uuid.uuid4)
    person_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    account_event: uuid.UUID | None = None

    @property
    def hashes(self) -> list[str]:
        return HASHER.lookup_forms(self.identity)


class Log:
    """Appends events to the log, each on its topic's partition 0, with offsets counted per topic."""

    def __init__(self, database) -> None:
        self.database = database
        self.log = MongoAuditLog(database)
        self.offsets: dict[str, int] = {}

    async def open(self) -> "Log":
        await ensure_indexes(self.database, INDEXES)
        return self

    async def add(self, event: Event, topic: str | None = None, recorded_at: str = "2026-01-31T12:00:00.000+00:00") -> None:
        name = PREFIX + (topic or topics.route(event.topic, event.operator_id))
        offset = self.offsets.get(name, -1) + 1
        self.offsets[name] = offset
        await self.log.append([Entry(name, 0, offset, recorded_at, event.redacted(HASHER))])


def person(operator_id: str, tag: str | None = None) -> Person:
    tag = tag or uuid.uuid4().hex[:8]
    return Person(Identity(email=f"p.{tag}@example.com", national_id=f"19{uuid.uuid4().int % 10**10:010d}"), operator_id)


async def excluded(
    log: Log,
    who: Person,
    at: datetime,
    *,
    jurisdiction: str = "UK",
    duration: str = "+6m",
    ends_at: datetime | None = None,
    year_of_birth: int | None = None,
    gender: Any = None,
    enforce_after: timedelta | None = None,
    account: str = "acct-1",
) -> None:
    """The person's exclusion from request to activation (with a login before it, its decision, the
    enforcement for that account, and a start letter), each event at a known time."""
    request = RequestExclusion(
        occurred_at=at,
        source="gateway",
        operator_id=who.operator_id,
        payload=ExclusionRequestedPayload(
            identity=who.identity,
            duration=duration,
            jurisdiction=jurisdiction,
            attested=True,
            year_of_birth=year_of_birth,
            gender=gender,
        ),
    ).for_person(HASHER)
    login = AccountEventOccurred(
        occurred_at=at - timedelta(minutes=5),
        source="op",
        operator_id=who.operator_id,
        payload=AccountEventPayload(
            operator_event_id=f"e-{uuid.uuid4().hex[:6]}", account_id=account, kind=AccountEventKind.LOGIN, identity=who.identity
        ),
    )
    who.account_event = login.id
    decision = DecisionMade(
        occurred_at=at - timedelta(minutes=5) + timedelta(milliseconds=100),
        source="blocking",
        operator_id=who.operator_id,
        causation_id=login.id,
        payload=DecisionPayload(
            account_event_id=login.id,
            operator_event_id=login.payload.operator_event_id,
            account_id=account,
            kind=AccountEventKind.LOGIN,
            outcome=Outcome.ALLOW,
        ),
    )
    snapshot = ExclusionSnapshot(
        exclusion_id=who.exclusion_id,
        identifiers=sorted(HASHER.identifiers(who.identity).values()),
        scope=SCOPE_ALL,
        jurisdiction=jurisdiction,
        starts_at=at,
        ends_at=ends_at,
        duration=duration,
    )
    verified = ExclusionVerified(
        occurred_at=at + timedelta(seconds=1),
        source="verification",
        subject=who.person_id,
        correlation_id=request.id,
        payload=VerificationOutcomePayload(exclusion_id=who.exclusion_id, method="code"),
    )
    activated = ExclusionActivated(
        occurred_at=at + timedelta(seconds=2),
        source="registration",
        subject=who.person_id,
        operator_id=who.operator_id,
        correlation_id=request.id,
        payload=snapshot,
    )
    enforcement = EnforcementCommanded(
        occurred_at=at + timedelta(seconds=2) + (enforce_after or timedelta(0)),
        source="blocking",
        subject=who.person_id,
        operator_id=who.operator_id,
        payload=EnforcementPayload(account_id=account, action="end_sessions", exclusion_id=who.exclusion_id),
    )
    letter = NotificationRequested(
        occurred_at=at + timedelta(seconds=10),
        source="registration",
        subject=who.person_id,
        payload=NotificationRequestedPayload(template="exclusion_started"),
    )
    for event in (login, decision, request, verified, activated, enforcement, letter):
        await log.add(event)


async def blocked(log: Log, who: Person, at: datetime, account: str = "acct-1") -> None:
    """A later login of the person, and its BLOCK."""
    login = AccountEventOccurred(
        occurred_at=at,
        source="op",
        operator_id=who.operator_id,
        payload=AccountEventPayload(
            operator_event_id=f"e-{uuid.uuid4().hex[:6]}", account_id=account, kind=AccountEventKind.LOGIN, identity=who.identity
        ),
    )
    await log.add(login)
    await log.add(
        DecisionMade(
            occurred_at=at + timedelta(milliseconds=100),
            source="blocking",
            operator_id=who.operator_id,
            payload=DecisionPayload(
                account_event_id=login.id,
                operator_event_id=login.payload.operator_event_id,
                account_id=account,
                kind=AccountEventKind.LOGIN,
                outcome=Outcome.BLOCK,
            ),
        )
    )


async def parked(log: Log, topic: str, at: datetime) -> None:
    await log.add(
        MessageDeadLettered(
            occurred_at=at,
            source="registration",
            payload=MessageDeadLetteredPayload(
                topic=topic, partition=0, offset=1, consumer="registration", error="not JSON", original_sha256="0" * 64, original_size=3
            ),
        )
    )
