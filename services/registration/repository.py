"""Persons and exclusions in MongoDB: the only code that knows these collections' shapes.

Every write of an exclusion replaces the whole document on condition that nobody wrote it since it
was read (``revision``, with ``version`` and ``state``): a transition and the events it emits (the
``outbox``, JSON strings) are stored in one atomic write. The query shapes are kept to what both
MongoDB and the embedded nx-27017 store do right: inserts and whole-document replaces for anything
holding dates (nx-27017 turns a ``$set`` date into a string), ``$in`` for array membership,
``$pull``/``$inc``/``$addToSet`` on plain values, and ``$set`` only of strings, numbers and None.
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.registration.domain import RUNNING_STATES, Exclusion, best_match

INDEXES = {
    "persons": [IndexModel([("identifiers", ASCENDING)])],
    "exclusions": [
        IndexModel([("identifiers", ASCENDING)]),
        IndexModel([("person_id", ASCENDING), ("created_at", ASCENDING)]),
        IndexModel([("request_id", ASCENDING)], unique=True),
        IndexModel([("request_ids", ASCENDING)]),
        IndexModel([("causes", ASCENDING)]),
        IndexModel([("next_transition_at", ASCENDING)]),
        IndexModel([("outbox_at", ASCENDING)]),
    ],
}

UNCLAIMED = 0.0


@dataclass(frozen=True)
class Stored:
    """An exclusion as read, with what optimistic concurrency and the outbox need."""

    exclusion: Exclusion
    revision: int = 0
    outbox: list[str] = field(default_factory=list)
    outbox_at: datetime | None = None

    @property
    def id(self) -> uuid.UUID:
        return self.exclusion.id


class MongoExclusions:
    def __init__(self, database: AsyncDatabase) -> None:
        self._database = database

    @property
    def _persons(self):
        return self._database["persons"]

    @property
    def _exclusions(self):
        return self._database["exclusions"]

    # --- persons ------------------------------------------------------------------------------

    async def match_person(self, identifiers: list[str]) -> tuple[str | None, list[str]]:
        """The person any of these identifiers names (the strongest match wins), and all their identifiers."""
        found = await self._persons.find({"identifiers": {"$in": identifiers}}, {"identifiers": 1}).to_list(20)
        candidates = {document["_id"]: list(document.get("identifiers", [])) for document in found}
        person_id = best_match(candidates, identifiers)
        return person_id, candidates.get(person_id, []) if person_id else []

    async def find_person(self, identifiers: list[str]) -> str | None:
        return (await self.match_person(identifiers))[0]

    async def save_person(
        self,
        person_id: str,
        identifiers: list[str],
        year_of_birth: int | None,
        gender: str | None,
        *,
        contacts: dict[str, str] | None = None,
        locale: str | None = None,
    ) -> None:
        """Create the person if new, and remember every identifier seen for them.

        ``contacts`` are Sealer tokens by kind (email, mobile); a contact not given keeps what was stored.
        """
        document: dict[str, Any] = {"_id": person_id, "identifiers": identifiers, "year_of_birth": year_of_birth, "gender": gender}
        if contacts:
            document["contacts"] = {"email": contacts.get("email"), "mobile": contacts.get("mobile")}
        if locale:
            document["locale"] = locale
        try:
            await self._persons.insert_one(document)
            return
        except DuplicateKeyError:
            pass
        known = {"year_of_birth": year_of_birth, "gender": gender, "locale": locale}
        changes = {key: value for key, value in known.items() if value is not None}
        changes |= {f"contacts.{kind}": token for kind, token in (contacts or {}).items() if token}
        update: dict[str, Any] = {"$addToSet": {"identifiers": {"$each": identifiers}}}
        if changes:
            update["$set"] = changes
        await self._persons.update_one({"_id": person_id}, update)

    # --- reading exclusions -------------------------------------------------------------------

    async def get(self, exclusion_id: uuid.UUID | str) -> Exclusion | None:
        stored = await self.load(exclusion_id)
        return stored.exclusion if stored else None

    async def load(self, exclusion_id: uuid.UUID | str) -> Stored | None:
        return _stored(await self._exclusions.find_one({"_id": str(exclusion_id)}))

    async def by_cause(self, cause_id: uuid.UUID | str) -> Stored | None:
        """The exclusion a command or verification outcome was already applied to."""
        return _stored(await self._exclusions.find_one({"causes": {"$in": [str(cause_id)]}}))

    async def running_for(self, person_id: str) -> Stored | None:
        """The person's exclusion that has not ended yet (the latest, should there be two)."""
        query = {"person_id": person_id, "state": {"$in": sorted(s.value for s in RUNNING_STATES)}}
        found = await self._exclusions.find(query).sort([("created_at", DESCENDING)]).limit(1).to_list(1)
        return _stored(found[0]) if found else None

    async def history(self, person_id: str) -> list[Exclusion]:
        found = await self._exclusions.find({"person_id": person_id}).sort([("created_at", ASCENDING)]).to_list(None)
        return [_exclusion(document) for document in found]

    # --- writing exclusions -------------------------------------------------------------------

    async def add(self, exclusion: Exclusion, outbox: list[str] | None = None, *, at: datetime | None = None) -> Exclusion:
        """Store a new exclusion; if this request already made one, return that one instead."""
        if await self.insert(exclusion, outbox or [], at=at or exclusion.created_at):
            return exclusion
        existing = await self._exclusions.find_one({"request_id": str(exclusion.request_id)})
        return _exclusion(existing) if existing else exclusion

    async def insert(self, exclusion: Exclusion, outbox: list[str], *, at: datetime) -> bool:
        """Store a new exclusion with its events; False if its request already made it."""
        document = {
            **_document(exclusion),
            "revision": 1,
            "outbox": list(outbox),
            "outbox_at": at if outbox else None,
            "claim_until": UNCLAIMED,
        }
        try:
            await self._exclusions.insert_one(document)
        except DuplicateKeyError:
            return False
        return True

    async def save(self, before: Stored, after: Exclusion, outbox: list[str], *, at: datetime) -> bool:
        """Write a transition and its events at once, if nobody wrote the exclusion since ``before`` was read."""
        condition = {
            "_id": str(before.id),
            "revision": before.revision,
            "version": before.exclusion.version,
            "state": before.exclusion.state.value,
        }
        document = {
            **_document(after),
            "revision": before.revision + 1,
            "outbox": [*before.outbox, *outbox],
            "outbox_at": before.outbox_at if before.outbox else (at if outbox else None),
            "claim_until": UNCLAIMED,
        }
        result = await self._exclusions.replace_one(condition, document)
        return result.matched_count == 1

    async def claim_due(self, now: datetime, *, until: datetime, claimer: str) -> Stored | None:
        """Take the next exclusion whose timer is due, unless another replica holds it (claims expire)."""
        document = await self._exclusions.find_one_and_update(
            {"next_transition_at": {"$lte": now}, "claim_until": {"$lte": now.timestamp()}},
            {"$set": {"claim_until": until.timestamp(), "claimed_by": claimer}, "$inc": {"revision": 1}},
            sort=[("next_transition_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )
        return _stored(document)

    # --- the outbox ---------------------------------------------------------------------------

    async def with_outbox(self, older_than: datetime, limit: int = 500) -> list[str]:
        """The ids of exclusions holding events not yet published since before ``older_than``."""
        query = {"outbox_at": {"$lte": older_than}}
        found = await self._exclusions.find(query, {"_id": 1}).sort([("outbox_at", ASCENDING)]).limit(limit).to_list(limit)
        return [document["_id"] for document in found]

    async def published(self, exclusion_id: uuid.UUID, entry: str) -> Stored | None:
        """Take a published event out of the outbox."""
        document = await self._exclusions.find_one_and_update(
            {"_id": str(exclusion_id)},
            {"$pull": {"outbox": entry}, "$inc": {"revision": 1}},
            return_document=ReturnDocument.AFTER,
        )
        return _stored(document)

    async def outbox_emptied(self, stored: Stored) -> None:
        """The outbox is empty as read: the relay has nothing to look for here."""
        await self._exclusions.update_one(
            {"_id": str(stored.id), "revision": stored.revision}, {"$set": {"outbox_at": None}, "$inc": {"revision": 1}}
        )


def _document(exclusion: Exclusion) -> dict[str, Any]:
    document = exclusion.model_dump(mode="python")
    document["_id"] = str(document.pop("id"))
    document["request_id"] = str(exclusion.request_id)
    document["scope"] = exclusion.scope.model_dump(mode="json")
    document["state"] = exclusion.state.value
    document["channel"] = exclusion.channel.value
    return document


def _exclusion(document: dict[str, Any]) -> Exclusion:
    return Exclusion.model_validate({**document, "id": document["_id"]})


def _stored(document: dict[str, Any] | None) -> Stored | None:
    if document is None:
        return None
    return Stored(
        exclusion=_exclusion(document),
        revision=document.get("revision", 0),
        outbox=list(document.get("outbox") or []),
        outbox_at=document.get("outbox_at"),
    )
