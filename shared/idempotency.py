"""Exactly-once effects over at-least-once delivery: remember which events a consumer applied."""

from datetime import timedelta

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.events import derived_id, utcnow

__all__ = ["APPLIED_EVENTS_INDEXES", "AppliedEvents", "derived_id"]

APPLIED_EVENTS_RETENTION = timedelta(days=30)
APPLIED_EVENTS_INDEXES = {
    "applied_events": [IndexModel([("applied_at", ASCENDING)], expireAfterSeconds=int(APPLIED_EVENTS_RETENTION.total_seconds()))]
}


class AppliedEvents:
    """The ids of events a consumer has applied. Kept for longer than any redelivery can lag."""

    def __init__(self, database: AsyncDatabase, consumer: str) -> None:
        self._collection = database["applied_events"]
        self._consumer = consumer

    async def first_time(self, event_id) -> bool:
        """Record the event as applied; False if it had been applied before."""
        try:
            await self._collection.insert_one({"_id": f"{self._consumer}:{event_id}", "applied_at": utcnow()})
        except DuplicateKeyError:
            return False
        return True

    async def seen(self, event_id) -> bool:
        return await self._collection.find_one({"_id": f"{self._consumer}:{event_id}"}, {"_id": 1}) is not None
