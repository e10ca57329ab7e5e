"""The forwarder's own store: deliveries (pending → delivered | failed) and its state (sync cursors,
the last successful sync, the breaker). The only code that knows these collections' names and shapes."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.crypto import Sealer

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
DELIVERED_KEPT = timedelta(days=90)  # a delivered record is kept this long (the audit log keeps forwarding.delivered)
INDEXES = {
    "deliveries": [IndexModel([("delivered_at", ASCENDING)], expireAfterSeconds=int(DELIVERED_KEPT.total_seconds()))],
    "delivery_queue": [],
    "forwarder_state": [],
}


@dataclass(frozen=True)
class Status:
    pending: int
    failed: int
    delivered: int
    oldest_pending_at: datetime | None
    last_delivered_at: datetime | None
    last_sync_at: datetime | None
    breaker: str | None
    register: str | None


class Deliveries:
    """Deliveries, and the queue of those still pending (``delivery_queue``: id, next attempt, lease).

    The dispatcher reads only the queue, which holds what is pending and nothing else, and each
    delivery by ``_id`` (docs/adr/0004): it never scans the growing record of what was delivered.
    """

    def __init__(self, database: AsyncDatabase) -> None:
        self._database = database  # read at each use: a service's store opens in its lifespan

    @property
    def _deliveries(self):
        return self._database["deliveries"]

    @property
    def _queue(self):
        return self._database["delivery_queue"]

    @property
    def _state(self):
        return self._database["forwarder_state"]

    async def add(self, delivery: dict[str, Any]) -> bool:
        """Record a delivery, pending, before any attempt, and queue it; False if it was recorded
        already (a redelivered event: it is queued again only if it is still pending)."""
        try:
            await self._deliveries.insert_one({**delivery, "status": PENDING, "attempts": 0})
            recorded = True
        except DuplicateKeyError:
            existing = await self.get(delivery["_id"])
            if existing is None or existing["status"] != PENDING:
                return False
            recorded = False
        await self._queue.update_one(
            {"_id": delivery["_id"]},
            {"$setOnInsert": {"next_attempt_at": delivery["next_attempt_at"], "lease_until": None}},
            upsert=True,
        )
        return recorded

    async def get(self, delivery_id: str) -> dict[str, Any] | None:
        return await self._deliveries.find_one({"_id": delivery_id})

    async def due(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Queued deliveries whose next attempt is due and that nobody holds, the longest due first."""
        queued = await self._queue.find({}).to_list(None)
        due = [q for q in queued if q["next_attempt_at"] <= now and (q.get("lease_until") is None or q["lease_until"] <= now)]
        return sorted(due, key=lambda q: q["next_attempt_at"])[:limit]

    async def take(self, queued: dict[str, Any], now: datetime, lease: timedelta) -> dict[str, Any] | None:
        """Hold a due delivery for one attempt (a lease, so a forwarder that dies mid-attempt lets it go);
        the attempt is counted before it starts. None if another forwarder took it first."""
        held = await self._queue.find_one_and_update(
            {"_id": queued["_id"], "lease_until": queued.get("lease_until")}, {"$set": {"lease_until": now + lease}}
        )
        if held is None:
            return None
        delivery = await self._deliveries.find_one_and_update(
            {"_id": queued["_id"], "status": PENDING}, {"$inc": {"attempts": 1}}, return_document=ReturnDocument.AFTER
        )
        if delivery is None:  # delivered or failed meanwhile: nothing left to do for it
            await self._queue.delete_one({"_id": queued["_id"]})
        return delivery

    async def delivered(self, delivery_id: str, now: datetime) -> None:
        await self._deliveries.update_one({"_id": delivery_id}, {"$set": {"status": DELIVERED, "delivered_at": now, "last_error": None}})
        await self._queue.delete_one({"_id": delivery_id})
        await self._state.update_one({"_id": "delivery"}, {"$set": {"last_delivered_at": now}}, upsert=True)

    async def retry_at(self, delivery_id: str, when: datetime, error: str, *, attempted: bool = True) -> None:
        """Pending still, next tried at ``when``; an attempt the breaker stopped does not count."""
        update: dict[str, Any] = {"$set": {"next_attempt_at": when, "last_error": error}}
        if not attempted:
            update["$inc"] = {"attempts": -1}
        await self._deliveries.update_one({"_id": delivery_id}, update)
        await self._queue.update_one({"_id": delivery_id}, {"$set": {"next_attempt_at": when, "lease_until": None}})

    async def failed(self, delivery_id: str, now: datetime, error: str) -> None:
        await self._deliveries.update_one({"_id": delivery_id}, {"$set": {"status": FAILED, "failed_at": now, "last_error": error}})
        await self._queue.delete_one({"_id": delivery_id})

    async def replay(self, now: datetime, delivery_ids: list[str] | None = None) -> int:
        """Failed deliveries pending again, due now, with a fresh retry budget. How many."""
        query: dict[str, Any] = {"status": FAILED}
        if delivery_ids:
            query["_id"] = {"$in": delivery_ids}
        replayed = 0
        for failed in await self._deliveries.find(query, {"_id": 1}).to_list(None):
            result = await self._deliveries.update_one(
                {"_id": failed["_id"], "status": FAILED},
                {"$set": {"status": PENDING, "next_attempt_at": now, "attempts": 0, "replayed_at": now}},
            )
            if result.modified_count:
                await self._queue.update_one({"_id": failed["_id"]}, {"$set": {"next_attempt_at": now, "lease_until": None}}, upsert=True)
                replayed += 1
        return replayed

    async def failures(self, limit: int = 100) -> list[dict[str, Any]]:
        return (
            await self._deliveries.find({"status": FAILED}, {"sealed_identity": 0}).sort("failed_at", ASCENDING).limit(limit).to_list(None)
        )

    async def status(self) -> Status:
        counts = {s: await self._deliveries.count_documents({"status": s}) for s in (FAILED, DELIVERED)}
        counts[PENDING] = await self._queue.count_documents({})
        oldest = await self._deliveries.find({"status": PENDING}).sort("created_at", ASCENDING).limit(1).to_list(None)
        delivery = await self._state.find_one({"_id": "delivery"}) or {}
        sync = await self._state.find_one({"_id": "sync"}) or {}
        breaker = await self._state.find_one({"_id": "breaker"}) or {}
        return Status(
            pending=counts[PENDING],
            failed=counts[FAILED],
            delivered=counts[DELIVERED],
            oldest_pending_at=oldest[0]["created_at"] if oldest else None,
            last_delivered_at=delivery.get("last_delivered_at"),
            last_sync_at=sync.get("last_sync_at"),
            breaker=breaker.get("state"),
            register=breaker.get("register"),
        )

    async def reseal(self, sealer: Sealer) -> int:
        """Each delivery not yet delivered whose sealed identity is under an older key, sealed again
        with the current one (only if it is still the token read); how many."""
        resealed = 0
        async for delivery in self._deliveries.find({"status": {"$ne": DELIVERED}}, {"sealed_identity": 1, "exclusion_id": 1}):
            token = delivery.get("sealed_identity")
            if token and (fresh := sealer.reseal(token, f"forwarding:{delivery['exclusion_id']}")):
                result = await self._deliveries.update_one(
                    {"_id": delivery["_id"], "sealed_identity": token}, {"$set": {"sealed_identity": fresh}}
                )
                resealed += result.modified_count
        return resealed

    # --- state ------------------------------------------------------------------------------

    async def breaker_changed(self, register: str, state: str, now: datetime) -> None:
        await self._state.update_one(
            {"_id": "breaker"},
            {"$set": {"register": register, "state": state, "changed_at": now}, "$inc": {f"times_{state}": 1}},
            upsert=True,
        )

    async def breaker(self) -> dict[str, Any]:
        return await self._state.find_one({"_id": "breaker"}) or {}

    async def cursor(self, source: str) -> str:
        found = await self._state.find_one({"_id": f"cursor:{source}"})
        return found["cursor"] if found else ""

    async def save_cursor(self, source: str, cursor: str) -> None:
        await self._state.update_one({"_id": f"cursor:{source}"}, {"$set": {"cursor": cursor}}, upsert=True)

    async def synced(self, source: str, now: datetime, imported: int) -> None:
        await self._state.update_one(
            {"_id": "sync"}, {"$set": {"last_sync_at": now, "last_source": source}, "$inc": {"imported": imported}}, upsert=True
        )
