"""The gateway's collections: the only code that knows their shapes. Each is the gateway's own,
fed from the topics (no other service's collection is read or written here).

- ``operators``: one per API key: an operator's (``operator_id``, the operator it acts for, is its
  ``_id`` unless the key was added for an existing operator) or register staff's (``staff``); its
  ``roles``, and only the SHA-256 of the key. Keys stored before roles carry ``scopes`` instead,
  read as the roles that took their place (``LEGACY_SCOPE_ROLES``; nothing is rewritten).
- ``exclusion_lookup``: one document per identifier hash, holding a summary of each exclusion the
  identifier belongs to. A check is then one ``_id`` lookup, which every MongoDB-wire store answers
  from its primary index (nx-27017 scans the whole collection for ``$in`` over an array field).
- ``exclusion_views``: one per exclusion (``_id`` = its id), as the native API, ChipOut and the portal
  show it, from the latest lifecycle event (``version``), with the person's identifier hashes (to
  check a caller names the exclusion's person) and the last lift refusal.
- ``exclusion_operators``: one per operator that made (a lifecycle event's ``operator_id``: the
  command's) or checked (a native check that matched it) an exclusion, ``_id`` =
  ``<exclusion id>/<operator id>``: an operator reads and changes only those, by ``_id``.
- ``command_effects``: one per command registration applied (``_id`` = the command's id): the
  exclusion it made or changed, and the refusal if it was refused. A write's answer reads it by id.
- ``verification_views``: one per exclusion waiting for (or done with) verification (``_id`` = the
  exclusion id), and one per lift request (``_id`` = the lift id, ``lift`` true, ``exclusion_id``):
  method, state, attempts and resends left, the code's expiry, ``version``.
- ``submission_answers``: one per portal submission (``_id`` = the command's id): what became of it.
- ``identity_documents``: the documents people upload, sealed (AES-GCM, context "document:<id>").
- ``operator_decisions``: blocking's decisions, by operator, so each operator reads only its own.

Every read on a request's path is by ``_id``. Writes use whole-document inserts and conditional
replaces of plain JSON values (dates as ISO strings), the subset both MongoDB and nx-27017 do right.
"""

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.gateway.domain import Summary, merged
from shared.crypto import Sealer
from shared.events import DecisionMade
from shared.identity import Hasher
from shared.store import stale_hashes

DUPLICATE_KEY = 11000

RETENTION_SECONDS = 30 * 24 * 3600  # a command's effect, a submission's answer: read right after, kept a while
INDEXES = {
    "operators": [IndexModel([("name", ASCENDING)], unique=True), IndexModel([("key_hash", ASCENDING)], unique=True)],
    "exclusion_lookup": [],
    "exclusion_views": [],
    "exclusion_operators": [],
    "command_effects": [IndexModel([("recorded_at", ASCENDING)], expireAfterSeconds=RETENTION_SECONDS)],
    "verification_views": [],
    "submission_answers": [IndexModel([("recorded_at", ASCENDING)], expireAfterSeconds=RETENTION_SECONDS)],
    "identity_documents": [],
    "operator_decisions": [IndexModel([("operator_id", ASCENDING)])],
}
LOOKUP_CHUNK = 500  # ids per ``$in`` query: well under any store's limit on bound parameters
MAX_ATTEMPTS = 20


async def together(*writes: Awaitable[Any]) -> None:
    """Await the writes at once; once every one has ended, raise the first error as it was raised
    (not in a group: the consumer tells a store error, retried, from a bad message by its type)."""
    for outcome in await asyncio.gather(*writes, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


class OperatorExistsError(ValueError):
    """An operator by that name is already registered."""


class UnknownOperatorError(LookupError):
    """No operator by that name."""


class LookupConflictError(RuntimeError):
    """An identifier's lookup document kept changing under a write."""


# A key stored before roles: its scopes, read as roles.
LEGACY_SCOPE_ROLES = {"check": "operator", "exclude": "operator", "compliance": "operator-compliance"}


@dataclass(frozen=True)
class OperatorRecord:
    id: str
    name: str
    roles: frozenset[str]
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None
    operator_id: str = ""  # the operator the key acts for (its own id for staff)
    staff: bool = False

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> "OperatorRecord":
        if "roles" in document:
            roles = frozenset(document["roles"])
        else:
            roles = frozenset(LEGACY_SCOPE_ROLES[s] for s in document.get("scopes", []) if s in LEGACY_SCOPE_ROLES)
        return cls(
            id=document["_id"],
            name=document["name"],
            roles=roles,
            key_prefix=document.get("key_prefix", ""),
            created_at=document["created_at"],
            revoked_at=document.get("revoked_at"),
            operator_id=document.get("operator_id") or document["_id"],
            staff=bool(document.get("staff", False)),
        )


class MongoOperators:
    def __init__(self, database: AsyncDatabase) -> None:
        self._operators = database["operators"]

    async def add(
        self,
        name: str,
        roles: Iterable[str],
        key_hash: str,
        key_prefix: str,
        now: datetime,
        *,
        operator_id: str | None = None,
        staff: bool = False,
    ) -> OperatorRecord:
        """A new key: a new operator's, another key of operator ``operator_id``, or (``staff``) register staff's."""
        document = {
            "_id": f"{'staff' if staff else 'op'}-{uuid.uuid4().hex[:12]}",
            "name": name,
            "roles": sorted(roles),
            "operator_id": operator_id,
            "staff": staff,
            "key_hash": key_hash,
            "key_prefix": key_prefix,
            "created_at": now,
            "rotated_at": None,
            "revoked_at": None,
        }
        try:
            await self._operators.insert_one(document)
        except DuplicateKeyError as exc:
            raise OperatorExistsError(f"an operator named {name!r} exists") from exc
        return OperatorRecord.from_document(document)

    async def by_key_hash(self, key_hash: str) -> OperatorRecord | None:
        document = await self._operators.find_one({"key_hash": key_hash})
        if document is None or document.get("revoked_at") is not None:
            return None
        return OperatorRecord.from_document(document)

    async def by_name(self, name: str) -> OperatorRecord | None:
        document = await self._operators.find_one({"name": name})
        return OperatorRecord.from_document(document) if document else None

    async def all(self) -> list[OperatorRecord]:
        found = await self._operators.find({}).sort([("name", ASCENDING)]).to_list(None)
        return [OperatorRecord.from_document(document) for document in found]

    async def replace_key(
        self, name: str, key_hash: str, key_prefix: str, now: datetime, roles: Iterable[str] | None = None
    ) -> OperatorRecord:
        """A new key for the operator (the old one stops working); a revoked operator is reinstated."""
        document = await self._operators.find_one({"name": name})
        if document is None:
            raise UnknownOperatorError(f"no operator named {name!r}")
        document.update(key_hash=key_hash, key_prefix=key_prefix, rotated_at=now, revoked_at=None)
        if roles is not None or "roles" not in document:  # a key stored with scopes gets the roles they read as
            document["roles"] = sorted(roles) if roles is not None else sorted(OperatorRecord.from_document(document).roles)
            document.pop("scopes", None)
        await self._operators.replace_one({"_id": document["_id"]}, document)
        return OperatorRecord.from_document(document)

    async def revoke(self, name: str, now: datetime) -> OperatorRecord:
        document = await self._operators.find_one({"name": name})
        if document is None:
            raise UnknownOperatorError(f"no operator named {name!r}")
        if document.get("revoked_at") is None:
            document["revoked_at"] = now
            await self._operators.replace_one({"_id": document["_id"]}, document)
        return OperatorRecord.from_document(document)


class MongoLookup:
    """Identifier hash → summaries of the exclusions it belongs to."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._lookup = database["exclusion_lookup"]

    async def summaries_by_identifier(self, identifiers: Iterable[str]) -> dict[str, list[Summary]]:
        """Each identifier's summaries: one query per ``LOOKUP_CHUNK`` ids (one ``find_one`` for a single id)."""
        wanted = sorted(set(identifiers))
        if len(wanted) == 1:
            found = await self._lookup.find_one({"_id": wanted[0]})
            documents = [found] if found else []
        else:
            documents = []
            for start in range(0, len(wanted), LOOKUP_CHUNK):
                documents += await self._lookup.find({"_id": {"$in": wanted[start : start + LOOKUP_CHUNK]}}).to_list(None)
        return {document["_id"]: [Summary.from_stored(stored) for stored in document.get("exclusions", [])] for document in documents}

    async def record(self, identifiers: Iterable[str], summary: Summary) -> None:
        """Put the summary under each identifier (all at once: each is a document of its own); a newer
        version already there is kept. Returns once every identifier holds it, or raises."""
        await together(*(self._record_one(identifier, summary) for identifier in sorted(set(identifiers))))

    async def insert_many(self, summaries: Mapping[str, list[Summary]]) -> None:
        """Identifiers written straight in with their summaries (a bench's load); none may exist yet."""
        batch = [{"_id": identifier, "exclusions": [s.stored() for s in found], "revision": 1} for identifier, found in summaries.items()]
        if batch:
            await self._lookup.insert_many(batch, ordered=False)

    async def rehash(self, hasher: Hasher) -> int:
        """Each identifier's summaries moved to the newest form of its hash (after a hash key
        rotation), merged with what the newest form holds; how many documents moved. The old
        document goes only as it was read: one written meanwhile is merged again."""
        moved = 0
        for stale in await stale_hashes(self._lookup, hasher, "_id", ("exclusions", "revision")):
            document: dict[str, Any] | None = stale
            while document is not None:
                fresh = hasher.canonical(document["_id"])
                for stored in document.get("exclusions", []):
                    await self._record_one(fresh, Summary.from_stored(stored))
                deleted = await self._lookup.delete_one({"_id": document["_id"], "revision": document.get("revision", 0)})
                if deleted.deleted_count == 1:
                    moved += 1
                    break
                document = await self._lookup.find_one({"_id": document["_id"]})
        return moved

    async def _record_one(self, identifier: str, summary: Summary) -> None:
        for _ in range(MAX_ATTEMPTS):
            document = await self._lookup.find_one({"_id": identifier})
            if document is None:
                try:
                    await self._lookup.insert_one({"_id": identifier, "exclusions": [summary.stored()], "revision": 1})
                    return
                except DuplicateKeyError:
                    continue  # written meanwhile: merge into it
            entries, changed = merged(document.get("exclusions", []), summary)
            if not changed:
                return
            revision = document.get("revision", 0)
            result = await self._lookup.replace_one(
                {"_id": identifier, "revision": revision}, {"exclusions": entries, "revision": revision + 1}
            )
            if result.matched_count == 1:
                return
        raise LookupConflictError(f"lookup of {identifier.split(':', 1)[0]} identifier kept changing")


class MongoViews:
    """Exclusion id → the exclusion as the gateway shows it."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._views = database["exclusion_views"]
        self._operators = database["exclusion_operators"]

    async def get(self, exclusion_id: str) -> dict[str, Any] | None:
        return await self._views.find_one({"_id": exclusion_id})

    async def known_to(self, exclusion_id: str, operator_id: str) -> bool:
        """Whether the operator made or checked the exclusion (one read by ``_id``)."""
        return await self._operators.find_one({"_id": f"{exclusion_id}/{operator_id}"}, {"_id": 1}) is not None

    async def note_operator(self, exclusion_id: str, operator_id: str, how: str, now: datetime) -> None:
        """The operator made (``how`` "made") or checked ("checked") the exclusion; the first note stands."""
        document = {"_id": f"{exclusion_id}/{operator_id}", "exclusion_id": exclusion_id, "operator_id": operator_id, "how": how, "at": now}
        with contextlib.suppress(DuplicateKeyError):
            await self._operators.insert_one(document)

    async def many(self, exclusion_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The views of these exclusions, oldest first: ``$in`` on ``_id`` only."""
        ids = sorted(set(exclusion_ids))
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), LOOKUP_CHUNK):
            found += await self._views.find({"_id": {"$in": ids[start : start + LOOKUP_CHUNK]}}).to_list(None)
        return sorted(found, key=lambda d: (str(d.get("created_at") or ""), d["_id"]))

    async def record(self, view: Mapping[str, Any], *, made_by: str | None = None, now: datetime | None = None) -> bool:
        """Keep the view unless a newer version is there; the last lift refusal carries over. Whether it changed.

        ``made_by``: the operator whose command the event answers, noted first (whatever the
        version: an older event's operator made it too), so it reads the view once it is there."""
        if made_by:
            await self.note_operator(view["_id"], made_by, "made", now or datetime.now(UTC))
        return await _newest_kept(self._views, view, carried="refusal")

    async def rehash(self, hasher: Hasher) -> int:
        """Each view's identifiers in the newest form of the chain; a view changed meanwhile (a newer
        version, kept in the newest form already) is left to it. How many changed."""
        changed = 0
        for view in await stale_hashes(self._views, hasher, "identifiers", ("version",)):
            fresh = sorted(set(hasher.canonical_all(view["identifiers"])))
            result = await self._views.update_one({"_id": view["_id"], "version": view.get("version")}, {"$set": {"identifiers": fresh}})
            changed += result.modified_count
        return changed

    async def insert_many(self, views: Iterable[Mapping[str, Any]]) -> None:
        """Views written straight in (a bench's load), each as ``domain.view_of`` makes it; none may exist yet."""
        batch = [dict(view) for view in views]
        if batch:
            await self._views.insert_many(batch, ordered=False)


class MongoCommandEffects:
    """Command id → the exclusion it made or changed, and the refusal if it was refused."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._effects = database["command_effects"]

    async def get(self, command_id: uuid.UUID | str) -> dict[str, Any] | None:
        return await self._effects.find_one({"_id": str(command_id)})

    async def record(self, command_id: uuid.UUID | str, exclusion_id: str, refusal: str | None, now: datetime) -> None:
        document = {"_id": str(command_id), "exclusion_id": exclusion_id, "refusal": refusal, "recorded_at": now}
        try:
            await self._effects.insert_one(document)
        except DuplicateKeyError:
            pass  # a redelivered event: the first record stands


class MongoVerificationViews:
    """Exclusion id (or lift id) → where its verification stands."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._views = database["verification_views"]

    async def get(self, exclusion_id: uuid.UUID | str) -> dict[str, Any] | None:
        return await self._views.find_one({"_id": str(exclusion_id)})

    async def record(self, view: Mapping[str, Any]) -> bool:
        """Keep the standing unless a newer version is there; whether it changed."""
        return await _newest_kept(self._views, view)


class MongoSubmissionAnswers:
    """Submission id → what became of it."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._answers = database["submission_answers"]

    async def get(self, submission_id: uuid.UUID | str) -> dict[str, Any] | None:
        return await self._answers.find_one({"_id": str(submission_id)})

    async def record(self, answer: Mapping[str, Any], now: datetime) -> None:
        try:
            await self._answers.insert_one({**answer, "recorded_at": now})
        except DuplicateKeyError:
            pass  # a redelivered event: the first answer stands


class MongoIdentityDocuments:
    """Identity documents as uploaded, sealed; a reviewer's tools read them by id."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._documents = database["identity_documents"]

    async def add(self, document_id: str, *, exclusion_id: uuid.UUID, content_type: str, size: int, sealed: str, now: datetime) -> None:
        await self._documents.insert_one(
            {
                "_id": document_id,
                "exclusion_id": str(exclusion_id),
                "content_type": content_type,
                "size": size,
                "sealed": sealed,
                "uploaded_at": now,
            }
        )

    async def get(self, document_id: str) -> dict[str, Any] | None:
        return await self._documents.find_one({"_id": document_id})

    async def remove(self, document_id: str) -> None:
        """An upload verification refused is not kept."""
        await self._documents.delete_one({"_id": document_id})

    async def reseal(self, sealer: Sealer) -> int:
        """Seal every document again with the current key (key rotation); how many were."""
        resealed = 0
        async for document in self._documents.find({}, {"sealed": 1}):
            token = document.get("sealed")
            if token and (fresh := sealer.reseal(token, f"document:{document['_id']}")):
                result = await self._documents.update_one({"_id": document["_id"], "sealed": token}, {"$set": {"sealed": fresh}})
                resealed += result.modified_count
        return resealed


async def _newest_kept(collection: AsyncCollection, document: Mapping[str, Any], *, carried: str | None = None) -> bool:
    """Insert the document, or replace the stored one if ``document`` is a newer ``version``
    (``carried``: a field the stored one keeps when the new one has none). Whether it was written."""
    for _ in range(MAX_ATTEMPTS):
        current = await collection.find_one({"_id": document["_id"]})
        if current is None:
            try:
                await collection.insert_one(dict(document))
                return True
            except DuplicateKeyError:
                continue  # written meanwhile: compare with it
        if int(current.get("version", 0)) >= int(document["version"]):
            return False
        replacement = {key: value for key, value in document.items() if key != "_id"}
        if carried is not None:
            replacement[carried] = document.get(carried) or current.get(carried)
        result = await collection.replace_one({"_id": document["_id"], "version": current.get("version")}, replacement)
        if result.matched_count == 1:
            return True
    raise LookupConflictError(f"{collection.name} {document['_id']} kept changing")


class MongoDecisions:
    """Blocking's decisions, kept per operator."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._decisions = database["operator_decisions"]

    async def record_many(self, decisions: Sequence[DecisionMade]) -> int:
        """Store the decisions not stored yet (a redelivered batch adds nothing); how many were new."""
        if not decisions:
            return 0
        documents = [
            {
                "_id": str(d.id),
                "operator_id": d.operator_id,
                "occurred_at": d.occurred_at,
                "decision": d.payload.model_dump(mode="json"),
            }
            for d in decisions
        ]
        try:
            result = await self._decisions.insert_many(documents, ordered=False)
        except BulkWriteError as error:
            if any(e.get("code") != DUPLICATE_KEY for e in error.details.get("writeErrors", [])) or error.details.get("writeConcernErrors"):
                raise
            return int(error.details.get("nInserted", 0))
        return len(result.inserted_ids)

    async def of(self, operator_id: str, *, limit: int, before: datetime | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"operator_id": operator_id}
        if before is not None:
            query["occurred_at"] = {"$lt": before}
        cursor = self._decisions.find(query).sort([("occurred_at", DESCENDING), ("_id", DESCENDING)]).limit(limit)
        return await cursor.to_list(limit)
