"""Blocking's own copy of the exclusions in force, so its view can be rebuilt at start."""

import uuid

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from services.blocking.domain import ActiveExclusion
from shared.events import Scope

INDEXES = {"blocking_exclusions": [IndexModel([("ends_at", ASCENDING)])]}


class MongoActiveExclusions:
    def __init__(self, database: AsyncDatabase) -> None:
        self._collection = database["blocking_exclusions"]

    async def save(self, exclusion: ActiveExclusion) -> None:
        await self._collection.update_one(
            {"_id": str(exclusion.exclusion_id)},
            {
                "$set": {
                    "identifiers": sorted(exclusion.identifiers),
                    "scope": exclusion.scope.model_dump(mode="json"),
                    "starts_at": exclusion.starts_at,
                    "ends_at": exclusion.ends_at,
                }
            },
            upsert=True,
        )

    async def in_force(self, now):
        """Every exclusion not yet ended at ``now``."""
        query = {"$or": [{"ends_at": None}, {"ends_at": {"$gt": now}}]}
        async for document in self._collection.find(query):
            yield ActiveExclusion(
                exclusion_id=uuid.UUID(document["_id"]),
                identifiers=frozenset(document["identifiers"]),
                scope=Scope.model_validate(document["scope"]),
                starts_at=document["starts_at"],
                ends_at=document.get("ends_at"),
            )
