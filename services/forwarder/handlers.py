"""The forwarder's consumer: each lifecycle event that changes what the register must know becomes
a delivery, recorded pending before any attempt."""

from services.forwarder import domain
from services.forwarder.dispatcher import Dispatcher
from services.forwarder.repository import Deliveries
from shared import topics
from shared.events import LifecycleEvent
from shared.service import Service


def register(service: Service, deliveries: Deliveries, dispatcher: Dispatcher) -> None:
    settings = service.settings

    @service.subscriber(topics.EXCLUSION_LIFECYCLE, title="forwarder.exclusion_lifecycle")
    async def on_exclusion_change(event: LifecycleEvent) -> None:
        """Record a delivery to the register for a new, lengthened, lifted or cancelled (not to ChipOut) exclusion made here;
        one that came from elsewhere is never forwarded."""
        if not settings.forwarder_register or not domain.forwarded(event, settings.forwarder_adapter):
            return
        snapshot = event.payload
        now = service.clock()
        recorded = await deliveries.add(
            {
                "_id": domain.delivery_id(event, settings.forwarder_register),
                "event_id": str(event.id),
                "change": event.type,
                "exclusion_id": str(snapshot.exclusion_id),
                "subject": event.subject,
                "register": settings.forwarder_register,
                "snapshot": snapshot.model_dump(mode="json", exclude={"sealed_identity", "identifiers"})
                | {"identifiers": snapshot.identifiers if settings.forwarder_adapter == "kafka" else []},
                "sealed_identity": snapshot.sealed_identity,
                "created_at": now,
                "next_attempt_at": now,
            }
        )
        if recorded:
            dispatcher.wake()
