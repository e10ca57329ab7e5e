"""The notification service on the real broker and store, sending through a real SMTP server and HTTP sink."""

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest_asyncio
from pydantic import SecretStr

from services.notification.app import create_app
from services.notification.domain import Notification
from services.notification.repository import MongoContacts, MongoNotifications
from shared import topics
from shared.crypto import Sealer
from shared.events import (
    SCOPE_ALL,
    ContactsRecorded,
    ContactsRecordedPayload,
    Event,
    ExclusionSnapshot,
    ExclusionState,
    NotificationRequested,
    NotificationRequestedPayload,
    utcnow,
)
from shared.settings import Settings
from tests.notification.sinks import HttpSink, SmtpSink
from tests.support import Publisher, TopicReader, eventually

SMS_TOKEN = "sms-token-for-tests"


def notification_settings(settings: Settings, smtp: SmtpSink, sms: HttpSink, **changes) -> Settings:
    return settings.model_copy(
        update={
            "smtp_port": smtp.port,
            "sms_webhook_url": sms.url,
            "sms_webhook_token": SecretStr(SMS_TOKEN),
            "notification_retry_first_seconds": 0.05,
            "notification_retry_longest_seconds": 0.2,
            "notification_attempts": 3,
            "notification_quiet_hours": {},  # the tests of quiet hours set them
            "notification_timer_seconds": 0,
            "notification_contacts_wait_seconds": 30,
            **changes,
        }
    )


def snapshot(jurisdiction: str = "SE", state: ExclusionState = ExclusionState.ACTIVE, **fields) -> ExclusionSnapshot:
    now = utcnow().replace(microsecond=0)
    values = {
        "exclusion_id": uuid.uuid4(),
        "identifiers": ["email:0f0f"],
        "scope": SCOPE_ALL,
        "jurisdiction": jurisdiction,
        "state": state,
        "starts_at": now,
        "ends_at": now + timedelta(days=180),
        "duration": "+6m",
        **fields,
    }
    return ExclusionSnapshot(**values)


@dataclass
class Running:
    settings: Settings
    app: object
    database: object
    publisher: Publisher
    deliveries: TopicReader
    smtp: SmtpSink
    sms: HttpSink
    sealer: Sealer = field(init=False)

    def __post_init__(self) -> None:
        self.sealer = Sealer.from_settings(self.settings)

    @property
    def notifications(self) -> MongoNotifications:
        return MongoNotifications(self.database)

    async def person(
        self, *, email: str | None = None, mobile: str | None = None, locale: str | None = None, jurisdiction: str = "SE"
    ) -> str:
        """A person registration has told us about (their contacts sealed as registration seals them)."""
        subject = f"person-{uuid.uuid4().hex[:8]}"
        context = ContactsRecordedPayload.sealing_context(subject)
        payload = ContactsRecordedPayload(
            email=self.sealer.seal_text(email, context) if email else None,
            mobile=self.sealer.seal_text(mobile, context) if mobile else None,
            locale=locale,
            jurisdiction=jurisdiction,
        )
        await self.publisher.event(ContactsRecorded(source="registration", subject=subject, payload=payload))
        await eventually(lambda: MongoContacts(self.database).get(subject), what="the contacts to be kept")
        return subject

    def request(
        self, subject: str, template: str, *, code: str | None = None, channel: str = "any", **params: str
    ) -> NotificationRequested:
        request_id = uuid.uuid4()
        sealed = self.sealer.seal_text(json.dumps({"code": code}), f"notification:{request_id}") if code else None
        params.setdefault("exclusion_id", str(uuid.uuid4()))
        params.setdefault("starts_at", "2026-12-03T10:00:00+00:00")
        return NotificationRequested(
            id=request_id,
            source="verification",
            subject=subject,
            payload=NotificationRequestedPayload(template=template, channel=channel, params=params, sealed_params=sealed),  # type: ignore[arg-type]
        )

    async def send(self, event: Event) -> Event:
        await self.publisher.event(event)
        return event

    async def outcome(self, cause_id: uuid.UUID, *, number: int = 0, timeout: float = 30.0) -> dict:
        """The final delivery event of the notification of one cause (and recipient)."""
        notification_id = f"{cause_id}/{number}"
        [event] = await self.deliveries.wait_for(
            lambda m: m["payload"]["notification_id"] == notification_id and m["payload"]["final"], timeout=timeout
        )
        return event

    async def events_of(self, cause_id: uuid.UUID) -> list[dict]:
        await self.deliveries._drain()
        return [m for m in self.deliveries.messages() if m["payload"]["cause_id"] == str(cause_id)]

    async def stored(self, cause_id: uuid.UUID, number: int = 0) -> Notification:
        found = await self.notifications.get(f"{cause_id}/{number}")
        assert found is not None
        return found


@pytest_asyncio.fixture
async def smtp():
    sink = SmtpSink().start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest_asyncio.fixture
async def sms():
    sink = await HttpSink().start()
    try:
        yield sink
    finally:
        await sink.stop()


@pytest_asyncio.fixture
async def running(settings, database, smtp, sms):
    configured = notification_settings(settings, smtp, sms)
    app = create_app(configured, database=database)
    async with (
        app,
        Publisher(configured) as publisher,
        TopicReader(configured, topics.NOTIFICATION_DELIVERIES) as deliveries,
    ):
        yield Running(configured, app, database, publisher, deliveries, smtp, sms)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)
