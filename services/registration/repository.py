"""Persons and exclusions in MongoDB: the only code that knows these collections' shapes.

Every write of an exclusion replaces the whole document on condition that nobody wrote it since it
was read (``revision``, with ``version`` and ``state``): a transition and the events it emits (the
``outbox``, JSON strings) are stored in one atomic write. The query shapes are kept to what both
MongoDB and the embedded nx-27017 store do right: inserts and whole-document replaces for anything
holding dates (nx-27017 turns a ``$set`` date into a string), ``$in`` for array membership,
``$pull``/``$inc``/``$addToSet`` on plain values, and ``$set`` only of strings, numbers and None.

At most one exclusion runs per identifier, whatever races: ``running_exclusions`` holds one
document per identifier hash (its ``_id``, so the store's own unique key is the guard) naming the
exclusion that runs for it. A new exclusion claims every identifier before it is stored and the
claims go when it ends; a claim left by a crash is taken over once its exclusion has ended, or
when it never came to be stored (a partial unique index would say the same, but nx-27017 has none).

Whatever runs once per command is read by ``_id`` only: nx-27017 answers ``$in`` on any other
field by scanning the collection (seconds per command at 100,000 exclusions), and equality on an
indexed array field finds nothing there. So two small collections point back from a value to the
documents that hold it: ``person_identifiers`` (identifier hash → the persons it names) and
``applied_causes`` (a command or verification outcome → the exclusions it was applied to). Each is
written before the document it points to, and a pointer is only believed once that document
holds the value too, so a crash between the two writes leaves a pointer that leads nowhere and
nothing that is wrongly believed.
"""

import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.registration.domain import RUNNING_STATES, Exclusion, best_match
from shared.crypto import Sealer
from shared.events import FINAL_STATES
from shared.identity import Hasher
from shared.store import stale_hashes

INDEXES = {
    "persons": [],
    "person_identifiers": [],  # _id: the identifier hash; person_ids: who it names
    "exclusions": [
        # A person's exclusions (``running_for``, once per command): nx-27017 answers from a
        # single-field index only, and scans the whole collection otherwise (tens of ms a command at
        # 5,000 exclusions, growing with them; measured).
        IndexModel([("person_id", ASCENDING)]),
        IndexModel([("request_id", ASCENDING)], unique=True),
        IndexModel([("request_ids", ASCENDING)]),
        IndexModel([("next_transition_at", ASCENDING)]),
        IndexModel([("outbox_at", ASCENDING)]),
    ],
    "applied_causes": [],  # _id: the command's or outcome's id; exclusion_ids: where it was applied
    "running_exclusions": [IndexModel([("exclusion_id", ASCENDING)])],  # _id: the identifier hash
}

UNCLAIMED = 0.0
# A claim whose exclusion was never stored after this long was left by a crash (its own request,
# redelivered, finds it its own well before: the exclusion id derives from the request).
CLAIM_ABANDONED_AFTER = timedelta(minutes=5)
FINAL_STATE_VALUES = frozenset(state.value for state in FINAL_STATES)
MAX_RESEAL_ATTEMPTS = 20


class ConflictingWritesError(RuntimeError):
    """A document kept changing under a maintenance write."""


class AlreadyRunningError(Exception):
    """Another exclusion already runs for one of the new exclusion's identifiers."""

    def __init__(self, exclusion_id: str) -> None:
        super().__init__(f"exclusion {exclusion_id} already runs for this person")
        self.exclusion_id = exclusion_id


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

    @property
    def _running(self):
        return self._database["running_exclusions"]

    @property
    def _person_identifiers(self):
        return self._database["person_identifiers"]

    @property
    def _causes(self):
        return self._database["applied_causes"]

    # --- persons ------------------------------------------------------------------------------

    async def match_person(self, identifiers: list[str]) -> tuple[str | None, list[str]]:
        """The person any of these identifiers names (the strongest match wins), and all their identifiers."""
        pointers = await self._person_identifiers.find({"_id": {"$in": sorted(set(identifiers))}}).to_list(None)
        person_ids = sorted({person_id for pointer in pointers for person_id in pointer.get("person_ids", [])})
        found = await self._persons.find({"_id": {"$in": person_ids}}, {"identifiers": 1}).to_list(None) if person_ids else []
        wanted = set(identifiers)
        candidates = {
            document["_id"]: list(document.get("identifiers", []))
            for document in found
            if wanted & set(document.get("identifiers", []))  # a pointer written before a crash proves nothing
        }
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
        for identifier in sorted(set(identifiers)):
            await _point(self._person_identifiers, identifier, "person_ids", person_id)
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
        pointer = await self._causes.find_one({"_id": str(cause_id)})
        for exclusion_id in (pointer or {}).get("exclusion_ids", []):
            stored = await self.load(exclusion_id)
            if stored is not None and str(cause_id) in stored.exclusion.causes:
                return stored
        return None

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
        """Store a new exclusion with its events; False if its request already made it.

        A running one first claims its identifiers: ``AlreadyRunningError`` names the exclusion
        that runs for one of them, and nothing is stored.
        """
        if exclusion.running:
            await self._claim(exclusion, at)
        await self._point_causes(exclusion.causes, exclusion)
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
        await self._point_causes(sorted(set(after.causes) - set(before.exclusion.causes)), after)
        result = await self._exclusions.replace_one(condition, document)
        if result.matched_count != 1:
            return False
        if not after.running:
            await self._running.delete_many({"exclusion_id": str(after.id)})
        elif added := sorted(set(after.identifiers) - set(before.exclusion.identifiers)):
            for identifier in added:  # an extension's new identifiers, unless another exclusion runs for one
                try:
                    await self._running.insert_one(_claim(identifier, after, at))
                except DuplicateKeyError:
                    pass
        return True

    async def _point_causes(self, causes: list[str], exclusion: Exclusion) -> None:
        for cause in causes:
            await _point(self._causes, cause, "exclusion_ids", str(exclusion.id))

    async def backfill_pointers(self) -> int:
        """Write the pointers of documents stored before the pointer collections existed; how many."""
        if await self._causes.find_one({}) is not None or await self._exclusions.find_one({}) is None:
            return 0
        written = 0
        async for document in self._exclusions.find({}, {"causes": 1}):
            for cause in document.get("causes") or []:
                await _point(self._causes, cause, "exclusion_ids", document["_id"])
                written += 1
        async for document in self._persons.find({}, {"identifiers": 1}):
            for identifier in document.get("identifiers") or []:
                await _point(self._person_identifiers, identifier, "person_ids", document["_id"])
                written += 1
        return written

    async def insert_loaded(self, exclusions: list[Exclusion], *, at: datetime) -> None:
        """Exclusions written straight in, none of them or their persons stored yet (a bench's load),
        with all that ``insert`` and ``save_person`` would write: each identifier's pointer to its
        person, each person (its identifiers those of its exclusions), each request's pointer to its
        exclusion, the running ones' claims; the pointers and claims first, as one by one."""
        if not exclusions:
            return
        persons: dict[str, set[str]] = {}
        for exclusion in exclusions:
            persons.setdefault(exclusion.person_id, set()).update(exclusion.identifiers)
        pointers = {identifier: sorted(person_ids) for identifier, person_ids in _pointed(persons).items()}
        await self._person_identifiers.insert_many(
            [{"_id": identifier, "person_ids": person_ids} for identifier, person_ids in pointers.items()], ordered=False
        )
        await self._persons.insert_many(
            [
                {"_id": person_id, "identifiers": sorted(identifiers), "year_of_birth": None, "gender": None}
                for person_id, identifiers in persons.items()
            ],
            ordered=False,
        )
        causes = [{"_id": cause, "exclusion_ids": [str(exclusion.id)]} for exclusion in exclusions for cause in exclusion.causes]
        if causes:
            await self._causes.insert_many(causes, ordered=False)
        claims = [
            _claim(identifier, exclusion, at)
            for exclusion in exclusions
            if exclusion.running
            for identifier in sorted(set(exclusion.identifiers))
        ]
        if claims:
            await self._running.insert_many(claims, ordered=False)
        documents = [{**_document(e), "revision": 1, "outbox": [], "outbox_at": None, "claim_until": UNCLAIMED} for e in exclusions]
        await self._exclusions.insert_many(documents, ordered=False)

    # --- key rotation -------------------------------------------------------------------------

    async def reseal(self, sealer: Sealer) -> int:
        """Seal every stored contact and sealed request field again with the current key; how many.

        Safe beside running replicas: a contact is replaced only if it is still the token read, an
        exclusion only at the revision read (a write in between is retried on the next pass).
        """
        resealed = 0
        async for person in self._persons.find({}, {"contacts": 1}):
            for kind, token in (person.get("contacts") or {}).items():
                if token and (fresh := sealer.reseal(token, f"contact:{person['_id']}")):
                    result = await self._persons.update_one(
                        {"_id": person["_id"], f"contacts.{kind}": token}, {"$set": {f"contacts.{kind}": fresh}}
                    )
                    resealed += result.modified_count
        async for document in self._exclusions.find({}, {"third_party": 1, "support_persons": 1, "forwarding": 1}):
            tokens = [
                (document.get("third_party") or {}).get("applicant_name"),
                document.get("forwarding"),
                *(document.get("support_persons") or []),
            ]
            if any(token and not sealer.is_current(token) for token in tokens) and await self._reseal_exclusion(document["_id"], sealer):
                resealed += 1
        return resealed

    async def _reseal_exclusion(self, exclusion_id: str, sealer: Sealer) -> bool:
        for _ in range(MAX_RESEAL_ATTEMPTS):
            document = await self._exclusions.find_one({"_id": exclusion_id})
            if document is None:
                return False
            third_party = dict(document.get("third_party") or {})
            applicant = third_party.get("applicant_name")
            fresh_applicant = sealer.reseal(applicant, f"third_party:{exclusion_id}") if applicant else None
            persons = list(document.get("support_persons") or [])
            fresh_persons = [sealer.reseal(token, f"support_person:{exclusion_id}") for token in persons]
            forwarding = document.get("forwarding")
            fresh_forwarding = sealer.reseal(forwarding, f"forwarding:{exclusion_id}") if forwarding else None
            if fresh_applicant is None and fresh_forwarding is None and not any(fresh_persons):
                return False
            if fresh_applicant:
                document["third_party"] = third_party | {"applicant_name": fresh_applicant}
            if fresh_forwarding:
                document["forwarding"] = fresh_forwarding
            revision = document.get("revision", 0)
            document["support_persons"] = [fresh or token for fresh, token in zip(fresh_persons, persons, strict=True)]
            document["revision"] = revision + 1
            if (await self._exclusions.replace_one({"_id": exclusion_id, "revision": revision}, document)).matched_count == 1:
                return True
        raise ConflictingWritesError(f"exclusion {exclusion_id} kept changing while it was resealed")

    # --- one running exclusion per identifier -------------------------------------------------

    async def rehash(self, hasher: Hasher) -> int:
        """Every stored identifier hash in the newest form of the chain (after a hash key rotation);
        how many documents changed. Safe while commands flow: a person keeps the old form until the
        new one and its pointer are written, and an exclusion is rewritten only as it was read."""
        changed = 0
        for person in await stale_hashes(self._persons, hasher, "identifiers"):
            stale = [h for h in person["identifiers"] if not hasher.is_newest(h)]
            fresh = sorted(set(hasher.canonical_all(stale)))
            for identifier in fresh:  # the pointer first, as save_person writes it
                await _point(self._person_identifiers, identifier, "person_ids", person["_id"])
            await self._persons.update_one({"_id": person["_id"]}, {"$addToSet": {"identifiers": {"$each": fresh}}})
            await self._persons.update_one({"_id": person["_id"]}, {"$pull": {"identifiers": {"$in": stale}}})
            changed += 1
        for pointer in await stale_hashes(self._person_identifiers, hasher, "_id", ("person_ids",)):
            for person_id in pointer.get("person_ids") or []:
                await _point(self._person_identifiers, hasher.canonical(pointer["_id"]), "person_ids", person_id)
            await self._person_identifiers.delete_one({"_id": pointer["_id"]})
            changed += 1
        for claim in await stale_hashes(self._running, hasher, "_id", ("exclusion_id", "person_id", "claimed_at")):
            with contextlib.suppress(DuplicateKeyError):  # the newest form is claimed already
                await self._running.insert_one({**claim, "_id": hasher.canonical(claim["_id"])})
            await self._running.delete_one({"_id": claim["_id"], "exclusion_id": claim["exclusion_id"]})
            changed += 1
        for document in await stale_hashes(self._exclusions, hasher, "identifiers", ("revision",)):
            while document is not None:  # written meanwhile: read it again
                fresh = sorted(set(hasher.canonical_all(document["identifiers"])))
                if fresh == sorted(document["identifiers"]):
                    break
                result = await self._exclusions.update_one(
                    {"_id": document["_id"], "revision": document["revision"]}, {"$set": {"identifiers": fresh}, "$inc": {"revision": 1}}
                )
                if result.matched_count == 1:
                    changed += 1
                    break
                document = await self._exclusions.find_one({"_id": document["_id"]}, {"identifiers": 1, "revision": 1})
        return changed

    async def running_claims(self, exclusion_id: uuid.UUID | str) -> list[str]:
        """The identifiers ``exclusion_id`` holds as the one running for them."""
        found = await self._running.find({"exclusion_id": str(exclusion_id)}, {"_id": 1}).to_list(None)
        return sorted(document["_id"] for document in found)

    async def _claim(self, exclusion: Exclusion, at: datetime) -> None:
        """Claim every identifier for ``exclusion`` (in one order, so two claimers meet on the first shared one)."""
        mine, taken = str(exclusion.id), list[str]()
        for identifier in sorted(exclusion.identifiers):
            holder = await self._claim_one(identifier, exclusion, at)
            if holder != mine:
                if taken:
                    await self._running.delete_many({"_id": {"$in": taken}, "exclusion_id": mine})
                raise AlreadyRunningError(holder)
            taken.append(identifier)

    async def _claim_one(self, identifier: str, exclusion: Exclusion, at: datetime) -> str:
        """The exclusion running for ``identifier``: this one if it could claim it."""
        while True:
            try:
                await self._running.insert_one(_claim(identifier, exclusion, at))
                return str(exclusion.id)
            except DuplicateKeyError:
                pass
            held = await self._running.find_one({"_id": identifier})
            if held is None:
                continue  # released meanwhile
            holder = held["exclusion_id"]
            if holder == str(exclusion.id) or not await self._abandoned(held, at):
                return holder
            await self._running.delete_one({"_id": identifier, "exclusion_id": holder})

    async def _abandoned(self, claim: dict[str, Any], at: datetime) -> bool:
        """A claim whose exclusion has ended, or was never stored (a crash between claim and insert)."""
        holder = await self._exclusions.find_one({"_id": claim["exclusion_id"]}, {"state": 1})
        if holder is not None:
            return holder.get("state") in FINAL_STATE_VALUES
        claimed_at = claim.get("claimed_at")
        return not isinstance(claimed_at, datetime) or at - claimed_at > CLAIM_ABANDONED_AFTER

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


async def _point(collection, key: str, field_name: str, target: str) -> None:
    """Add ``target`` to what ``key`` points at (the pointer document is made if new)."""
    try:
        await collection.insert_one({"_id": key, field_name: [target]})
    except DuplicateKeyError:
        await collection.update_one({"_id": key}, {"$addToSet": {field_name: target}})


def _pointed(persons: dict[str, set[str]]) -> dict[str, set[str]]:
    """Identifier hash → the persons holding it."""
    pointers: dict[str, set[str]] = {}
    for person_id, identifiers in persons.items():
        for identifier in identifiers:
            pointers.setdefault(identifier, set()).add(person_id)
    return pointers


def _claim(identifier: str, exclusion: Exclusion, at: datetime) -> dict[str, Any]:
    return {"_id": identifier, "exclusion_id": str(exclusion.id), "person_id": exclusion.person_id, "claimed_at": at}


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
