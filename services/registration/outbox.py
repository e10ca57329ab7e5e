"""The transactional outbox: events are stored with the transition that caused them, then published.

A transition's write puts its events in the exclusion's ``outbox`` in the same atomic write. After
the write they are published and taken out one by one. Whatever a crash leaves behind is published
by the relay: at start, before any message is consumed, and from the timer loop for entries older
than a grace period (younger ones are still on their way out through the handler that wrote them).
"""

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog

from services.registration.repository import MongoExclusions, Stored
from services.registration.transitions import Transition
from shared.events import Event, parse_event

Publish = Callable[[Event], Awaitable[None]]


def entries(transition: Transition) -> list[str]:
    """The outbox entries of a transition: its events, as the JSON they are published as."""
    return [event.model_dump_json() for event in transition.events]


def caused_by(entry: str) -> str | None:
    return json.loads(entry).get("causation_id")


class Outbox:
    def __init__(self, exclusions: MongoExclusions, publish: Publish) -> None:
        self._exclusions = exclusions
        self._publish = publish
        self._log = structlog.get_logger("registration.outbox")

    async def deliver(self, stored: Stored, pending: list[str]) -> None:
        """Publish these entries of an exclusion's outbox, in order, and take each out once published."""
        after: Stored | None = stored
        for entry in pending:
            event = parse_event(json.loads(entry))
            await self._publish(event)
            after = await self._exclusions.published(stored.id, entry)
            self._log.info("event_published", event_id=str(event.id), type=event.type, exclusion_id=str(stored.id))
        if after is not None and not after.outbox:
            await self._exclusions.outbox_emptied(after)

    async def deliver_caused_by(self, stored: Stored, cause_id: uuid.UUID) -> None:
        """A redelivered cause: publish what it led to, if that has not gone out yet."""
        pending = [entry for entry in stored.outbox if caused_by(entry) == str(cause_id)]
        if pending:
            self._log.info("redelivery_publishes_pending_events", exclusion_id=str(stored.id), events=len(pending))
            await self.deliver(stored, pending)

    async def relay(self, older_than: datetime) -> int:
        """Publish what crashes left in any outbox since before ``older_than``; the number published."""
        published = 0
        for exclusion_id in await self._exclusions.with_outbox(older_than):
            current = await self._exclusions.load(exclusion_id)
            if current is None:
                continue
            await self.deliver(current, current.outbox)
            published += len(current.outbox)
        if published:
            self._log.warning("outbox_relayed", events=published)
        return published
