"""Notifications, their attempts and the persons' sealed contacts in MongoDB: the only code that knows these collections.

notifications      _id = the cause's id / the recipient's number; the Notification model, written whole,
                   conditional on ``version``; ``due_at`` indexed (deferred ones), ``recipient_key`` +
                   ``sent_at`` (the per-person cap).
delivery_attempts  _id = notification id # attempt number: written before the attempt (``outcome`` None),
                   completed after it. An attempt left without an outcome is one a crash interrupted.
contacts           _id = the person (subject); Sealer tokens by kind, the locale and jurisdiction.
"""

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.notification.domain import Notification, State
from shared.crypto import Sealer
from shared.events import ContactsRecordedPayload

INDEXES = {
    "notifications": [
        IndexModel([("due_at", ASCENDING)]),
        IndexModel([("recipient_key", ASCENDING)]),
        IndexModel([("cause_id", ASCENDING)]),
    ],
    "delivery_attempts": [IndexModel([("notification_id", ASCENDING)])],
    "contacts": [],
}
_DATETIMES = ("due_at", "sent_at", "created_at")


class MongoNotifications:
    def __init__(self, database: AsyncDatabase) -> None:
        self._collection = database["notifications"]
        self._attempts = database["delivery_attempts"]

    async def get(self, notification_id: str) -> Notification | None:
        document = await self._collection.find_one({"_id": notification_id})
        return Notification.model_validate(document) if document else None

    async def of_cause(self, cause_id: str) -> list[Notification]:
        return [Notification.model_validate(d) async for d in self._collection.find({"cause_id": cause_id})]

    async def add(self, notification: Notification) -> bool:
        """Store a new notification; False if one with its id was stored before (a redelivered cause)."""
        try:
            await self._collection.insert_one(_document(notification))
        except DuplicateKeyError:
            return False
        return True

    async def replace(self, notification: Notification) -> bool:
        """Write the notification one version on, if nobody changed it meanwhile."""
        changed = notification.model_copy(update={"version": notification.version + 1})
        result = await self._collection.replace_one({"_id": notification.id, "version": notification.version}, _document(changed))
        return result.matched_count == 1

    async def sent_since(self, recipient_key: str, since: datetime, *, besides: str) -> int:
        """How many messages went (or may have gone) to this recipient since ``since``."""
        count = 0
        async for document in self._collection.find({"recipient_key": recipient_key}, {"sent_at": 1, "state": 1}):
            if document["_id"] == besides:
                continue
            gone = document.get("state") in (State.SENT, State.UNCONFIRMED, State.SENDING)
            if gone and document.get("sent_at") is not None and document["sent_at"] >= since:
                count += 1
        return count

    async def due(self, now: datetime, *, limit: int = 100) -> list[Notification]:
        """Deferred notifications whose quiet hours have ended."""
        cursor = self._collection.find({"due_at": {"$lte": now}}).sort("due_at", ASCENDING).limit(limit)
        return [n async for n in (Notification.model_validate(d) async for d in cursor) if n.state is State.DEFERRED]

    async def attempt_started(self, notification: Notification, attempt: int, channel: str, at: datetime) -> None:
        try:
            await self._attempts.insert_one(
                {
                    "_id": f"{notification.id}#{attempt}",
                    "notification_id": notification.id,
                    "attempt": attempt,
                    "channel": channel,
                    "started_at": at,
                    "outcome": None,
                }
            )
        except DuplicateKeyError:
            pass  # written before a crash; the attempt is the same one

    async def attempt_ended(self, notification: Notification, attempt: int, outcome: str, reason: str | None, at: datetime) -> None:
        await self._attempts.update_one(
            {"_id": f"{notification.id}#{attempt}"}, {"$set": {"outcome": outcome, "reason": reason, "ended_at": at}}
        )

    async def attempts(self, notification_id: str) -> list[dict[str, Any]]:
        cursor = self._attempts.find({"notification_id": notification_id}).sort("attempt", ASCENDING)
        return [d async for d in cursor]


class MongoContacts:
    """The persons' contacts as registration last told them: sealed tokens, opened only to send."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._collection = database["contacts"]

    async def record(self, subject: str, contacts: ContactsRecordedPayload) -> None:
        """Keep what is named; a contact not named keeps what was known."""
        known = {kind: value for kind, value in contacts.model_dump().items() if value is not None}
        await self._collection.update_one({"_id": subject}, {"$set": known} if known else {"$setOnInsert": {"known": True}}, upsert=True)

    async def get(self, subject: str) -> dict[str, Any] | None:
        return await self._collection.find_one({"_id": subject})

    async def reseal(self, sealer: Sealer) -> int:
        """Seal every kept contact again with the current key (after a rotation); how many. A contact
        is replaced only if it is still the token read (a newer record in between wins)."""
        resealed = 0
        async for person in self._collection.find({}, {"email": 1, "mobile": 1}):
            context = ContactsRecordedPayload.sealing_context(person["_id"])
            for kind in ("email", "mobile"):
                token = person.get(kind)
                if token and (fresh := sealer.reseal(token, context)):
                    result = await self._collection.update_one({"_id": person["_id"], kind: token}, {"$set": {kind: fresh}})
                    resealed += result.modified_count
        return resealed


def _document(notification: Notification) -> dict[str, Any]:
    document = notification.model_dump(mode="json")
    document["_id"] = notification.id
    for name in _DATETIMES:
        document[name] = getattr(notification, name)
    return document
