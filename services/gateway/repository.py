"""The gateway's collections, and its reads of registration's: the only code that knows their shapes.

- ``operators``: one per legal entity; only the SHA-256 of its API key is kept.
- ``exclusion_lookup``: one document per identifier hash, holding a summary of each exclusion the
  identifier belongs to. A check is then one ``_id`` lookup, which every MongoDB-wire store answers
  from its primary index (nx-27017 scans the whole collection for ``$in`` over an array field).
- ``operator_decisions``: blocking's decisions, by operator, so each operator reads only its own.
- ``exclusions``: registration's, read only (see the exclusion-document contract).

Writes use whole-document inserts and conditional replaces of plain JSON values (dates as ISO
strings in the lookup), the subset both MongoDB and nx-27017 do right.
"""

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.events import DecisionMade

from services.gateway.domain import Summary, merged

INDEXES = {
    "operators": [IndexModel([("name", ASCENDING)], unique=True), IndexModel([("key_hash", ASCENDING)], unique=True)],
    "exclusion_lookup": [],
    "operator_decisions": [IndexModel([("operator_id", ASCENDING)])],
}
LOOKUP_CHUNK = 500  # ids per ``$in`` query: well under any store's limit on bound parameters
MAX_ATTEMPTS = 20


class OperatorExistsError(ValueError):
    """An operator by that name is already registered."""


class UnknownOperatorError(LookupError):
    """No operator by that name."""


class LookupConflictError(RuntimeError):
    """An identifier's lookup document kept changing under a write."""


@dataclass(frozen=True)
class OperatorRecord:
    id: str
    name: str
    scopes: frozenset[str]
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> "OperatorRecord":
        return cls(
            id=document["_id"],
            name=document["name"],
            scopes=frozenset(document.get("scopes", [])),
            key_prefix=document.get("key_prefix", ""),
            created_at=document["created_at"],
            revoked_at=document.get("revoked_at"),
        )


class MongoOperators:
    def __init__(self, database: AsyncDatabase) -> None:
        self._operators = database["operators"]

    async def add(self, name: str, scopes: Iterable[str], key_hash: str, key_prefix: str, now: datetime) -> OperatorRecord:
        document = {
            "_id": f"op-{uuid.uuid4().hex[:12]}",
            "name": name,
            "scopes": sorted(scopes),
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

    async def replace_key(self, name: str, key_hash: str, key_prefix: str, now: datetime, scopes: Iterable[str] | None = None) -> OperatorRecord:
        """A new key for the operator (the old one stops working); a revoked operator is reinstated."""
        document = await self._operators.find_one({"name": name})
        if document is None:
            raise UnknownOperatorError(f"no operator named {name!r}")
        document.update(key_hash=key_hash, key_prefix=key_prefix, rotated_at=now, revoked_at=None)
        if scopes is not None:
            document["scopes"] = sorted(scopes)
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
        return {
            document["_id"]: [Summary.from_stored(stored) for stored in document.get("exclusions", [])] for document in documents
        }

    async def record(self, identifiers: Iterable[str], summary: Summary) -> None:
        """Put the summary under each identifier; a newer version already there is kept."""
        for identifier in sorted(set(identifiers)):
            await self._record_one(identifier, summary)

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


class MongoExclusionReads:
    """Registration's ``exclusions``, read only."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._exclusions = database["exclusions"]

    async def get(self, exclusion_id: str) -> dict[str, Any] | None:
        return await self._exclusions.find_one({"_id": exclusion_id})

    async def many(self, exclusion_ids: Iterable[str]) -> list[dict[str, Any]]:
        ids = sorted(set(exclusion_ids))
        if not ids:
            return []
        found = await self._exclusions.find({"_id": {"$in": ids}}).to_list(None)
        return sorted(found, key=lambda d: (str(d.get("created_at") or ""), d["_id"]))

    async def changed_by(
        self, request_id: str, *, new_id: str, known_id: str | None = None, search: bool = True
    ) -> dict[str, Any] | None:
        """The exclusion a command made or changed, once registration has written it.

        The fast reads first: the exclusion a new request derives, the one the caller named. Then,
        if ``search``, the ``request_id`` and ``request_ids`` fields (the latter an array: nx-27017
        answers it by scanning the collection, so callers that name the exclusion search rarely).
        """
        for exclusion_id in filter(None, (new_id, known_id)):
            document = await self._exclusions.find_one({"_id": exclusion_id})
            if document is not None and _changed_by(document, request_id):
                return document
        if not search:
            return None
        document = await self._exclusions.find_one({"request_id": request_id})
        if document is None:
            document = await self._exclusions.find_one({"request_ids": {"$in": [request_id]}})
        return document


def _changed_by(document: Mapping[str, Any], request_id: str) -> bool:
    return document.get("request_id") == request_id or request_id in (document.get("request_ids") or [])


class MongoDecisions:
    """Blocking's decisions, kept per operator."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._decisions = database["operator_decisions"]

    async def record(self, decision: DecisionMade) -> bool:
        document = {
            "_id": str(decision.id),
            "operator_id": decision.operator_id,
            "occurred_at": decision.occurred_at,
            "decision": decision.payload.model_dump(mode="json"),
        }
        try:
            await self._decisions.insert_one(document)
        except DuplicateKeyError:
            return False
        return True

    async def of(self, operator_id: str, *, limit: int, before: datetime | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"operator_id": operator_id}
        if before is not None:
            query["occurred_at"] = {"$lt": before}
        cursor = self._decisions.find(query).sort([("occurred_at", DESCENDING), ("_id", DESCENDING)]).limit(limit)
        return await cursor.to_list(limit)
