"""Notification's consumers: contacts kept, requests and lifecycle letters handed to the courier."""

from services.notification.courier import Courier
from services.notification.repository import MongoContacts
from shared import topics
from shared.events import ContactsRecorded, LifecycleEvent, NotificationRequested
from shared.service import Service


def register(service: Service, courier: Courier) -> None:
    @service.subscriber(topics.PERSON_CONTACTS, title="notification.person_contacts")
    async def on_contacts_recorded(event: ContactsRecorded) -> None:
        """Keep the person's sealed contacts (the notification service's own copy)."""
        if event.subject:
            await MongoContacts(service.db).record(event.subject, event.payload)

    @service.subscriber(topics.NOTIFICATION_REQUESTS, title="notification.requests")
    async def on_notification_requested(request: NotificationRequested) -> None:
        """Send what was asked for (a code, a notice to the person or their support persons), once."""
        await courier.requested(request)

    @service.subscriber(topics.EXCLUSION_LIFECYCLE, title="notification.exclusion_lifecycle")
    async def on_exclusion_lifecycle(event: LifecycleEvent) -> None:
        """Write to the person when their exclusion starts, is extended, is about to end, is to be lifted, or ends."""
        await courier.letter(event)
