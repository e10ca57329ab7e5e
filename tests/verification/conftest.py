"""The verification service running on the real broker and store, with a clock the test moves."""

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest_asyncio

from services.verification.app import create_app
from services.verification.codes import submission_context
from services.verification.domain import SubmissionOutcome, Verification, sealed_context
from services.verification.repository import MongoOutcomes, MongoVerifications
from shared import topics
from shared.crypto import Sealer
from shared.events import (
    SCOPE_ALL,
    Channel,
    CodeResendPayload,
    CodeSubmittedPayload,
    DocumentReviewedPayload,
    DocumentSubmittedPayload,
    Event,
    ExclusionRequested,
    ExclusionSnapshot,
    ExclusionState,
    ResendCode,
    ReviewDocument,
    SubmitCode,
    SubmitDocument,
    utcnow,
)
from shared.settings import Settings
from tests.support import Publisher, TopicReader, eventually


class Clock:
    """The service's clock: the test moves it instead of sleeping."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def requested(
    *, subject: str | None = None, document_check: bool = False, verify_by: str | None = "email", channel: Channel = Channel.PORTAL
) -> ExclusionRequested:
    """What registration emits for a portal request (we play registration here)."""
    exclusion_id = uuid.uuid4()
    return ExclusionRequested(
        source="registration",
        subject=subject or f"person-{uuid.uuid4().hex[:8]}",
        payload=ExclusionSnapshot(
            exclusion_id=exclusion_id,
            identifiers=["email:0f0f"],
            scope=SCOPE_ALL,
            jurisdiction="DE" if document_check else "SE",
            state=ExclusionState.PENDING_VERIFICATION,
            starts_at=utcnow(),
            duration="+6m",
            channel=channel,
            verify_by=verify_by,
            document_check=document_check,
        ),
    )


@dataclass
class Running:
    settings: Settings
    app: object
    database: object
    clock: Clock
    publisher: Publisher
    notices: TopicReader
    results: TopicReader
    sealer: Sealer = field(init=False)

    def __post_init__(self) -> None:
        self.sealer = Sealer.from_settings(self.settings)

    @property
    def verifications(self) -> MongoVerifications:
        return MongoVerifications(self.database)

    async def request(self, event: ExclusionRequested | None = None, **options) -> ExclusionRequested:
        """Publish a pending portal request and wait until its verification exists."""
        event = event or requested(**options)
        await self.publisher.event(event)
        await eventually(lambda: self.verifications.get(event.payload.exclusion_id), what="the verification to start")
        return event

    async def sent_codes(self, exclusion_id: uuid.UUID, count: int = 1) -> list[str]:
        """The codes sent for an exclusion, in order, opened the way the notification service will."""
        notices = await self.notices.wait_for(
            lambda m: m["payload"]["template"] == "verification_code" and m["payload"]["params"]["exclusion_id"] == str(exclusion_id),
            count=count,
        )
        return [json.loads(self.sealer.open_text(m["payload"]["sealed_params"], sealed_context(m["id"])))["code"] for m in notices]

    async def code(self, exclusion_id: uuid.UUID) -> str:
        return (await self.sent_codes(exclusion_id))[-1]

    async def send(self, command: Event) -> SubmissionOutcome:
        """Publish a verification input and wait for its recorded outcome."""
        await self.publisher.event(command)
        return await eventually(lambda: MongoOutcomes(self.database).get(command.id), what=f"the outcome of {command.type}")

    async def submit(self, exclusion_id: uuid.UUID, code: str) -> SubmissionOutcome:
        return await self.send(code_submitted(self.sealer, exclusion_id, code))

    async def resend(self, exclusion_id: uuid.UUID) -> SubmissionOutcome:
        return await self.send(ResendCode(source="gateway", payload=CodeResendPayload(exclusion_id=exclusion_id)))

    async def upload(self, exclusion_id: uuid.UUID, document_id: str = "doc-1") -> SubmissionOutcome:
        payload = DocumentSubmittedPayload(exclusion_id=exclusion_id, document_id=document_id, content_type="image/png", size=100)
        return await self.send(SubmitDocument(source="gateway", payload=payload))

    async def review(self, exclusion_id: uuid.UUID, document_id: str, *, approved: bool) -> SubmissionOutcome:
        payload = DocumentReviewedPayload(exclusion_id=exclusion_id, document_id=document_id, approved=approved, reviewer="staff-7")
        return await self.send(ReviewDocument(source="gateway", payload=payload))

    async def verification(self, exclusion_id: uuid.UUID) -> Verification:
        return await self.verifications.get(exclusion_id)

    async def settled(self, exclusion_id: uuid.UUID) -> Verification:
        """The verification once its outbox went out: clearing the outbox is a write of its own
        (the version moves on), which lands just after the outcome is recorded."""

        async def flushed() -> Verification | None:
            verification = await self.verifications.get(exclusion_id)
            return verification if verification is not None and not verification.outbox else None

        return await eventually(flushed, what="the verification's outbox to be published")

    async def results_for(self, exclusion_id: uuid.UUID, *, count: int = 0, type: str | None = None) -> list[dict]:
        """Messages on verification.events about one exclusion (at least ``count`` of them)."""

        def matches(m: dict) -> bool:
            return m["payload"]["exclusion_id"] == str(exclusion_id) and (type is None or m["type"] == type)

        if count:
            return await self.results.wait_for(matches, count=count)
        await self.results._drain()
        return [m for m in self.results.messages() if matches(m)]


def code_submitted(sealer: Sealer, exclusion_id: uuid.UUID, code: str) -> SubmitCode:
    """What the portal publishes: the code sealed to its exclusion."""
    sealed = sealer.seal_text(code, submission_context(exclusion_id))
    return SubmitCode(source="gateway", payload=CodeSubmittedPayload(exclusion_id=exclusion_id, sealed_code=sealed))


async def raw_bytes(settings: Settings, topic: str) -> bytes:
    """Every record on a topic, as the broker holds it (keys and values), read until no more come."""
    async with TopicReader(settings, topic) as reader:
        empty_reads = 0
        while empty_reads < 3:
            before = len(reader.records)
            await reader._drain()
            empty_reads = empty_reads + 1 if len(reader.records) == before else 0
        return b"\n".join((record.key or b"") + b" " + (record.value or b"") for record in reader.records)


@pytest_asyncio.fixture
async def clock() -> Clock:
    return Clock(utcnow().replace(microsecond=0))


@pytest_asyncio.fixture
async def verification_settings(settings: Settings) -> Settings:
    # The test drives the timer with tick(now); no background loop.
    return settings.model_copy(update={"verification_timer_seconds": 0})


@pytest_asyncio.fixture
async def running(verification_settings, database, clock):
    app = create_app(verification_settings, clock=clock, database=database)
    async with (
        app,
        Publisher(verification_settings) as publisher,
        TopicReader(verification_settings, topics.NOTIFICATION_REQUESTS) as notices,
        TopicReader(verification_settings, topics.VERIFICATION_EVENTS) as results,
    ):
        yield Running(verification_settings, app, database, clock, publisher, notices, results)
