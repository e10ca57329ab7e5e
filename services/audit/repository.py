"""The audit log in MongoDB: append-only entries, each chained to the one before by its hash."""

import hashlib
import json
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

INDEXES = {
    "audit_log": [
        IndexModel([("seq", ASCENDING)], unique=True),
        IndexModel([("event.type", ASCENDING), ("event.occurred_at", ASCENDING)]),
        IndexModel([("event.subject", ASCENDING)]),
        IndexModel([("event.correlation_id", ASCENDING)]),
    ]
}
GENESIS = "0" * 64


def entry_hash(previous: str, entry: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the entry's canonical JSON."""
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{previous}{canonical}".encode()).hexdigest()


class MongoAuditLog:
    def __init__(self, database: AsyncDatabase) -> None:
        self._collection = database["audit_log"]
        self._last: tuple[int, str] | None = None

    async def _tail(self) -> tuple[int, str]:
        if self._last is None:
            last = await self._collection.find_one({}, sort=[("seq", DESCENDING)])
            self._last = (last["seq"], last["hash"]) if last else (0, GENESIS)
        return self._last

    async def append(self, event_id: str, record: dict[str, Any]) -> bool:
        """Append one entry; False if the event is already in the log (redelivery)."""
        if await self._collection.find_one({"_id": event_id}, {"_id": 1}):
            return False
        while True:
            seq, previous = await self._tail()
            entry = {"seq": seq + 1, **record}
            digest = entry_hash(previous, entry)
            try:
                await self._collection.insert_one({"_id": event_id, **entry, "prev_hash": previous, "hash": digest})
            except DuplicateKeyError:
                if await self._collection.find_one({"_id": event_id}, {"_id": 1}):
                    return False  # the same event, appended meanwhile
                self._last = None  # another writer took this seq: chain onto its entry
                continue
            self._last = (seq + 1, digest)
            return True
