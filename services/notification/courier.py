"""The courier: from a cause (a request, a lifecycle event) to one message per recipient, delivered once.

Accept (one stored notification per cause and recipient: a redelivered cause finds it) → quiet hours
and the per-person cap → attempts with backoff. Each attempt is written before the message is
handed over (state ``sending``); a notification found in that state was interrupted between the
send and its record, and is recorded ``unconfirmed``, never sent again. Contacts stay sealed until
the moment of sending and are never logged.
"""

import json
from typing import Any

import structlog
from jinja2 import TemplateError, TemplateNotFound
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from services.notification import domain
from services.notification.channels import (
    DeliveryError,
    EmailChannel,
    Mail,
    PermanentDeliveryError,
    SmsWebhookChannel,
    TemporaryDeliveryError,
)
from services.notification.domain import Notification, State
from services.notification.repository import MongoContacts, MongoNotifications
from services.notification.templates import Templates
from shared.crypto import Sealer, SealError
from shared.events import (
    ContactsRecordedPayload,
    DeliveryOutcome,
    DeliveryRecorded,
    DeliveryRecordedPayload,
    Event,
    NotificationRequested,
    SupportPerson,
    derived_id,
)
from shared.service import Service


class ContactsNotKnownYetError(TimeoutError):
    """The person's contacts travel on another topic and have not arrived yet: retried, not parked."""


class ConcurrentNotificationUpdateError(TimeoutError):
    """Someone else changed the notification between our read and our write: the message is retried."""


class Courier:
    def __init__(self, service: Service, sealer: Sealer, templates: Templates, email: EmailChannel, sms: SmsWebhookChannel) -> None:
        self.service = service
        self.settings = service.settings
        self.sealer = sealer
        self.templates = templates
        self.email = email
        self.sms = sms
        self.log = structlog.get_logger("notification")

    @property
    def notifications(self) -> MongoNotifications:
        return MongoNotifications(self.service.db)

    @property
    def contacts(self) -> MongoContacts:
        return MongoContacts(self.service.db)

    # --- causes ---------------------------------------------------------------------------------

    async def requested(self, request: NotificationRequested) -> None:
        """Someone asked to tell the person (or their support persons) something."""
        for notification in await self._accept_request(request):
            await self.deliver(notification)

    async def letter(self, event: Event) -> None:
        """A lifecycle event the person is told about (a start, an extension, the reminder, the end)."""
        kind = domain.letter_for(event)
        if kind is None or event.subject is None:
            return
        snapshot = event.payload
        notification = await self._accept_for_person(
            event.id,
            event,
            kind=kind,
            channel="any",
            locale=None,
            params=domain.letter_params(snapshot),
            jurisdiction=snapshot.jurisdiction,
        )
        await self.deliver(notification)

    async def _accept_request(self, request: NotificationRequested) -> list[Notification]:
        payload = request.payload
        if payload.recipient == "applicant":
            # A third party's contact is never on a topic: such a notice is recorded, and reaches nobody.
            applicant = Notification(
                id=domain.notification_id(request.id),
                cause_id=request.id,
                correlation_id=request.correlation_id,
                subject=request.subject,
                recipient="applicant",
                recipient_key=f"{request.subject}/applicant",
                kind=payload.template,
                params=payload.params,
                created_at=self.service.clock(),
            )
            return [await self._stored(applicant)]
        if payload.recipient != "support_persons":
            notification = await self._accept_for_person(
                request.id,
                request,
                kind=payload.template,
                channel=payload.channel,
                locale=payload.locale,
                params=payload.params,
                jurisdiction=payload.params.get("jurisdiction"),
                sealed_params=payload.sealed_params,
            )
            return [notification]
        accepted = []
        exclusion_id = payload.params.get("exclusion_id", "")
        for number, token in enumerate(payload.sealed_contacts, start=1):
            notification = Notification(
                id=domain.notification_id(request.id, number),
                cause_id=request.id,
                correlation_id=request.correlation_id,
                subject=request.subject,
                recipient="support_persons",
                recipient_key=f"{request.subject}/support/{number}",
                kind=f"support_{payload.template}",
                channel=payload.channel,
                locale=domain.locale_for(payload.locale, None, payload.params.get("jurisdiction")),
                jurisdiction=payload.params.get("jurisdiction"),
                params=payload.params,
                sealed_support_person=token,
                contact_context=f"support_person:{exclusion_id}",
                created_at=self.service.clock(),
            )
            accepted.append(await self._stored(notification))
        return accepted

    async def _accept_for_person(
        self,
        cause_id,
        cause: Event,
        *,
        kind: str,
        channel: Any,
        locale: str | None,
        params: dict[str, str],
        jurisdiction: str | None,
        sealed_params: str | None = None,
    ) -> Notification:
        notification_id = domain.notification_id(cause_id)
        existing = await self.notifications.get(notification_id)
        if existing is not None:
            return existing
        subject = cause.subject or ""
        contacts = await self.contacts.get(subject) if subject else None
        now = self.service.clock()
        if contacts is None and (now - cause.occurred_at).total_seconds() < self.settings.notification_contacts_wait_seconds:
            raise ContactsNotKnownYetError(f"no contacts known for {subject or 'a request without subject'} yet")
        contacts = contacts or {}
        notification = Notification(
            id=notification_id,
            cause_id=cause_id,
            correlation_id=cause.correlation_id or cause.id,
            subject=cause.subject,
            recipient="person",
            recipient_key=subject,
            kind=kind,
            channel=channel,
            locale=domain.locale_for(locale, contacts.get("locale"), jurisdiction or contacts.get("jurisdiction")),
            jurisdiction=jurisdiction or contacts.get("jurisdiction"),
            params=params,
            sealed_params=sealed_params,
            # As the requester sealed them: to the request (NotificationRequested's id).
            sealed_params_context=f"notification:{cause_id}" if sealed_params else None,
            sealed_email=contacts.get("email"),
            sealed_mobile=contacts.get("mobile"),
            contact_context=ContactsRecordedPayload.sealing_context(subject),
            created_at=now,
        )
        return await self._stored(notification)

    async def _stored(self, notification: Notification) -> Notification:
        if await self.notifications.add(notification):
            self.log.info("notification_accepted", notification_id=notification.id, kind=notification.kind, subject=notification.subject)
            return notification
        stored = await self.notifications.get(notification.id)
        assert stored is not None, "a notification that could not be added because it exists"
        return stored

    # --- delivery -------------------------------------------------------------------------------

    async def deliver(self, notification: Notification) -> Notification:
        """Deliver a notification as far as it can go now; what it became is stored and published."""
        if notification.final:
            return notification
        now = self.service.clock()
        if notification.state is State.SENDING:
            # An attempt was handed over and its outcome never recorded: it may have gone out. Never twice.
            await self.notifications.attempt_ended(notification, notification.attempts, DeliveryOutcome.UNCONFIRMED, "interrupted", now)
            return await self._conclude(notification, State.UNCONFIRMED, DeliveryOutcome.UNCONFIRMED, "interrupted between send and record")
        if notification.state in (State.PENDING, State.DEFERRED):
            if not notification.urgent:
                spec = self.settings.notification_quiet_hours.get(notification.jurisdiction or "")
                until = domain.quiet_until(now, spec)
                if until is not None:
                    return await self._defer(notification, until)
            since = now - domain.CAP_WINDOW
            sent = await self.notifications.sent_since(notification.recipient_key, since, besides=notification.id)
            if domain.over_cap(sent, self.settings.notification_per_person_per_hour):
                reason = f"{sent} messages to this recipient within the hour (cap {self.settings.notification_per_person_per_hour})"
                return await self._conclude(notification, State.SUPPRESSED, DeliveryOutcome.SUPPRESSED, reason)
        return await self._attempts(notification)

    async def _attempts(self, notification: Notification) -> Notification:
        settings = self.settings
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TemporaryDeliveryError),
            wait=wait_exponential_jitter(
                multiplier=settings.notification_retry_first_seconds,
                max=settings.notification_retry_longest_seconds,
                jitter=settings.notification_retry_first_seconds,
            ),
            stop=stop_after_attempt(max(1, settings.notification_attempts - notification.attempts)),
            reraise=True,
        )
        current = [notification]  # the notification as last stored, attempt after attempt
        try:
            async for attempt in retrying:
                with attempt:
                    await self._attempt(current)
        except TemporaryDeliveryError as exc:
            return await self._conclude(current[0], State.FAILED, DeliveryOutcome.GAVE_UP, f"{current[0].attempts} attempts: {exc.reason}")
        except PermanentDeliveryError:
            pass  # recorded by the attempt
        return current[0]

    async def _attempt(self, current: list[Notification]) -> None:
        """One attempt: recorded as begun, handed over, its outcome recorded (``current[0]``: the
        notification as stored after it). A failure is raised: a temporary one for another attempt."""
        try:
            current[0] = await self._try(current[0])
        except DeliveryError as exc:
            current[0] = exc.stored or current[0]
            raise

    async def _try(self, notification: Notification) -> Notification:
        try:
            email, mobile = self._open_contact(notification)
        except SealError:
            return await self._conclude(notification, State.FAILED, DeliveryOutcome.PERMANENT_FAILURE, "the sealed contact does not open")
        channel = domain.channel_for(notification.channel, bool(email), bool(mobile) and self.sms.configured)
        if channel is None:
            return await self._conclude(notification, State.FAILED, DeliveryOutcome.NO_CONTACT, "no contact for any configured channel")
        try:
            rendered = self.templates.render(notification.locale, notification.kind, self._context(notification))
        except TemplateNotFound:
            return await self._conclude(
                notification, State.FAILED, DeliveryOutcome.PERMANENT_FAILURE, f"no template for {notification.kind}"
            )
        except (TemplateError, SealError, ValueError) as exc:  # a template or a request that can never render
            return await self._conclude(
                notification, State.FAILED, DeliveryOutcome.PERMANENT_FAILURE, f"cannot render: {type(exc).__name__}"
            )
        number, now = notification.attempts + 1, self.service.clock()
        message_id = domain.message_id(notification, self.email.domain)
        sending = await self._save(notification, state=State.SENDING, attempts=number, sent_at=now, reason=None)
        await self.notifications.attempt_started(sending, number, channel, now)
        try:
            if channel == "email":
                assert email is not None
                mail = Mail(email, rendered.subject, rendered.text, rendered.html, message_id, notification.locale)
                await self.email.send(mail)
            else:
                assert mobile is not None
                await self.sms.send(mobile, rendered.sms, notification.id)
        except DeliveryError as exc:
            permanent = isinstance(exc, PermanentDeliveryError)
            outcome = DeliveryOutcome.PERMANENT_FAILURE if permanent else DeliveryOutcome.TEMPORARY_FAILURE
            await self.notifications.attempt_ended(sending, number, outcome, exc.reason, self.service.clock())
            if permanent:
                exc.stored = await self._conclude(sending, State.FAILED, outcome, exc.reason, channel=channel, message_id=message_id)
            else:
                exc.stored = await self._save(sending, state=State.RETRYING, reason=exc.reason)
                await self._publish(exc.stored, outcome, final=False, channel=channel, message_id=message_id)
            raise
        await self.notifications.attempt_ended(sending, number, DeliveryOutcome.SENT, None, self.service.clock())
        return await self._conclude(sending, State.SENT, DeliveryOutcome.SENT, None, channel=channel, message_id=message_id)

    def _open_contact(self, notification: Notification) -> tuple[str | None, str | None]:
        """The address and number, opened now, for this send only."""
        context = notification.contact_context
        if notification.sealed_support_person is not None:
            person = SupportPerson.model_validate_json(self.sealer.open_text(notification.sealed_support_person, context))
            return person.email, person.mobile
        email = self.sealer.open_text(notification.sealed_email, context) if notification.sealed_email else None
        mobile = self.sealer.open_text(notification.sealed_mobile, context) if notification.sealed_mobile else None
        return email, mobile

    def _context(self, notification: Notification) -> dict[str, Any]:
        secrets: dict[str, str] = {}
        if notification.sealed_params:
            secrets = json.loads(self.sealer.open_text(notification.sealed_params, notification.sealed_params_context or ""))
        organisations = self.settings.notification_support_organisations.get(notification.jurisdiction or "", [])
        return {"p": notification.params, "code": secrets.get("code", ""), "organisations": organisations}

    # --- records --------------------------------------------------------------------------------

    async def _defer(self, notification: Notification, until) -> Notification:
        if notification.state is State.DEFERRED and notification.due_at == until:
            return notification
        deferred = await self._save(notification, state=State.DEFERRED, due_at=until)
        await self._publish(deferred, DeliveryOutcome.DEFERRED, final=False, reason="quiet hours")
        return deferred

    async def _conclude(
        self, notification: Notification, state: State, outcome: DeliveryOutcome, reason: str | None, **fields
    ) -> Notification:
        changes: dict[str, Any] = {"state": state, "reason": reason, "due_at": None}
        if state is State.UNCONFIRMED:
            changes["sent_at"] = notification.sent_at or self.service.clock()
        ended = await self._save(notification, **changes)
        await self._publish(ended, outcome, final=True, reason=reason, **fields)
        return ended

    async def _save(self, notification: Notification, **changes: Any) -> Notification:
        changed = notification.model_copy(update=changes)
        if not await self.notifications.replace(changed):
            raise ConcurrentNotificationUpdateError(f"notification {notification.id} changed meanwhile")
        return changed.model_copy(update={"version": changed.version + 1})

    async def _publish(
        self,
        notification: Notification,
        outcome: DeliveryOutcome,
        *,
        final: bool,
        reason: str | None = None,
        channel: str | None = None,
        message_id: str | None = None,
    ) -> None:
        reason = reason if reason is not None else notification.reason
        event = DeliveryRecorded(
            id=derived_id(notification.id, f"delivery/{outcome.value}@{notification.attempts}"),
            source=domain.SOURCE,
            correlation_id=notification.correlation_id,
            causation_id=notification.cause_id,
            subject=notification.subject,
            payload=DeliveryRecordedPayload(
                notification_id=notification.id,
                cause_id=notification.cause_id,
                kind=notification.kind,
                recipient=notification.recipient,
                channel=channel,
                locale=notification.locale,
                attempt=notification.attempts,
                outcome=outcome,
                final=final,
                reason=reason[:500] if reason else None,
                message_id=message_id,
                due_at=notification.due_at,
            ),
        )
        await self.service.publish(event)
        self.log.info(
            "delivery_recorded",
            notification_id=notification.id,
            kind=notification.kind,
            channel=channel,
            attempt=notification.attempts,
            outcome=outcome.value,
            final=final,
            reason=reason,
        )

    async def tick(self) -> int:
        """Deliver the deferred notifications whose quiet hours are over; how many were looked at."""
        due = await self.notifications.due(self.service.clock())
        for notification in due:
            await self.deliver(notification)
        return len(due)
