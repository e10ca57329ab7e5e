"""Persons and exclusions in MongoDB: the only code that knows these collections' shapes."""

import uuid

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.registration.domain import Exclusion

INDEXES = {
    "persons": [IndexModel([("identifiers", ASCENDING)])],
    "exclusions": [
        IndexModel([("identifiers", ASCENDING)]),
        IndexModel([("person_id", ASCENDING), ("starts_at", ASCENDING)]),
        IndexModel([("request_id", ASCENDING)], unique=True),
        IndexModel([("state", ASCENDING), ("next_transition_at", ASCENDING)]),
    ],
}


class MongoExclusions:
    def __init__(self, database: AsyncDatabase) -> None:
        self._persons = database["persons"]
        self._exclusions = database["exclusions"]

    async def find_person(self, identifiers: list[str]) -> str | None:
        found = await self._persons.find_one({"identifiers": {"$in": identifiers}}, {"_id": 1})
        return found["_id"] if found else None

    async def save_person(self, person_id: str, identifiers: list[str], year_of_birth: int | None, gender: str | None) -> None:
        """Create the person if new, and remember every identifier seen for them."""
        try:
            await self._persons.insert_one(
                {"_id": person_id, "identifiers": identifiers, "year_of_birth": year_of_birth, "gender": gender}
            )
        except DuplicateKeyError:
            await self._persons.update_one({"_id": person_id}, {"$addToSet": {"identifiers": {"$each": identifiers}}})

    async def add(self, exclusion: Exclusion) -> Exclusion:
        """Store a new exclusion; if this request already made one, return that one instead."""
        document = exclusion.model_dump(mode="python")
        document["_id"] = str(document.pop("id"))
        document["request_id"] = str(document["request_id"])
        document["scope"] = exclusion.scope.model_dump(mode="json")
        try:
            await self._exclusions.insert_one(document)
            return exclusion
        except DuplicateKeyError:
            existing = await self._exclusions.find_one({"request_id": str(exclusion.request_id)})
            return _exclusion(existing)

    async def get(self, exclusion_id: uuid.UUID) -> Exclusion | None:
        document = await self._exclusions.find_one({"_id": str(exclusion_id)})
        return _exclusion(document) if document else None


def _exclusion(document: dict) -> Exclusion:
    return Exclusion.model_validate({**document, "id": document["_id"]})
