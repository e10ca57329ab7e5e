"""Blocking's own collections: its projection of exclusions, and the operator accounts it has seen.

The only code that knows their names and document shapes. Identifiers are keyed hashes; nothing
raw is stored.
"""

import uuid
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bson import Binary
from pymongo import ASCENDING, IndexModel, ReplaceOne, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from services.blocking.domain import Known
from services.blocking.view import ActiveExclusion, Scopes
from shared.events import ExclusionSnapshot
from shared.identity import Hasher
from shared.store import stale_hashes

EXCLUSIONS, ACCOUNTS = "blocking_exclusions", "blocking_accounts"
REKEYED = "blocking_rekeyed"  # _id: a collection re-keyed at start; key_id: the hash key it was re-keyed to
SNAPSHOTS, SNAPSHOT_CHUNKS = "blocking_view_snapshots", "blocking_view_snapshot_chunks"
INDEXES = {
    EXCLUSIONS: [IndexModel([("excluding", ASCENDING)])],
    ACCOUNTS: [IndexModel([("identifier", ASCENDING)])],
    SNAPSHOTS: [IndexModel([("taken_at", ASCENDING)])],
    SNAPSHOT_CHUNKS: [IndexModel([("snapshot", ASCENDING)]), IndexModel([("written_at", ASCENDING)])],
}
LOAD_BATCH = 10_000
CHUNK_BYTES = 8 * 1024 * 1024  # well under MongoDB's 16 MB document limit
KEEP_SNAPSHOTS = 2
# Chunks no snapshot names (a writer died before its head) are removed once this old: a writer
# still at work is never that slow.
ORPHANS_AFTER = timedelta(hours=1)


def exclusion_document(snapshot: ExclusionSnapshot) -> dict:
    """An exclusion as blocking keeps it: enough to rebuild the view and to order late events."""
    return _document(snapshot, state=snapshot.state.value, excluding=snapshot.excludes())


def _document(exclusion: ExclusionSnapshot | ActiveExclusion, *, state: str, excluding: bool) -> dict:
    return {
        "_id": str(exclusion.exclusion_id),
        "identifiers": sorted(exclusion.identifiers),
        "scope": {"types": sorted(exclusion.scope.types), "games": sorted(exclusion.scope.games)},
        "state": state,
        "excluding": excluding,
        "starts_at": exclusion.starts_at,
        "ends_at": exclusion.ends_at,
        "version": exclusion.version,
    }


def active_exclusion(document: dict, scopes: Scopes) -> ActiveExclusion:
    """The view's entry for a stored exclusion; ``scopes`` shares one Scope object per distinct scope."""
    return ActiveExclusion(
        exclusion_id=uuid.UUID(document["_id"]),
        identifiers=tuple(document["identifiers"]),
        scope=scopes.get(document["scope"]["types"], document["scope"].get("games", ())),
        starts_at=document["starts_at"],
        ends_at=document.get("ends_at"),
        version=document.get("version", 1),
    )


class MongoExclusionProjection:
    """Every exclusion blocking has heard of, as of its newest snapshot (ended ones too, for ordering)."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._collection = database[EXCLUSIONS]

    async def save_many(self, snapshots: Iterable[ExclusionSnapshot]) -> None:
        operations = [ReplaceOne({"_id": str(s.exclusion_id)}, exclusion_document(s), upsert=True) for s in snapshots]
        if operations:
            await self._collection.bulk_write(operations, ordered=True)

    async def rehash(self, hasher: Hasher) -> int:
        """Each exclusion's identifiers in the newest form of the chain, unless a newer version came
        meanwhile; how many changed. (The view takes the newest form as it loads them anyway.)"""
        changed = 0
        for document in await stale_hashes(self._collection, hasher, "identifiers", ("version",)):
            fresh = sorted(set(hasher.canonical_all(document["identifiers"])))
            result = await self._collection.update_one(
                {"_id": document["_id"], "version": document.get("version", 1)}, {"$set": {"identifiers": fresh}}
            )
            changed += result.modified_count
        return changed

    async def known(self, exclusion_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Known]:
        ids = sorted({str(i) for i in exclusion_ids})
        if not ids:
            return {}
        cursor = self._collection.find({"_id": {"$in": ids}}, {"version": 1, "excluding": 1})
        return {uuid.UUID(d["_id"]): Known(d["version"], d["excluding"]) async for d in cursor}

    async def excluding(self, now: datetime) -> AsyncIterator[ActiveExclusion]:
        """Every exclusion that excludes and has not ended by ``now``."""
        scopes = Scopes()
        cursor = self._collection.find({"excluding": True}, {"state": 0, "excluding": 0}, batch_size=LOAD_BATCH)
        async for document in cursor:
            ends_at = document.get("ends_at")
            if ends_at is None or ends_at > now:
                yield active_exclusion(document, scopes)


@dataclass(frozen=True)
class StoredSnapshot:
    """A snapshot of the view as stored: its encoded blob, and the lifecycle positions it is complete up to."""

    snapshot_id: str
    taken_at: datetime
    topic: str  # the lifecycle topic the positions are in
    positions: dict[int, int]  # lifecycle partition -> offset of the first record the view has not applied
    blob: bytes


class MongoViewSnapshots:
    """Snapshots of the view: chunks written first, then a small head naming them, so a snapshot is
    read only once whole; the newest few are kept."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._heads = database[SNAPSHOTS]
        self._chunks = database[SNAPSHOT_CHUNKS]

    async def save(self, snapshot: StoredSnapshot, *, keep: int = KEEP_SNAPSHOTS) -> None:
        blob = snapshot.blob
        pieces = [blob[at : at + CHUNK_BYTES] for at in range(0, len(blob), CHUNK_BYTES)] or [b""]
        for n, piece in enumerate(pieces):  # one at a time: the store keeps serving the rest meanwhile
            await self._chunks.replace_one(
                {"_id": f"{snapshot.snapshot_id}/{n}"},
                {"snapshot": snapshot.snapshot_id, "n": n, "written_at": snapshot.taken_at, "data": Binary(piece)},
                upsert=True,
            )
        await self._heads.insert_one(
            {
                "_id": snapshot.snapshot_id,
                "taken_at": snapshot.taken_at,
                "topic": snapshot.topic,
                "positions": {str(p): o for p, o in snapshot.positions.items()},
                "chunks": len(pieces),
                "bytes": len(blob),
                "crc32": zlib.crc32(blob),
            }
        )
        await self._prune(keep, snapshot.taken_at)

    async def _prune(self, keep: int, now: datetime) -> None:
        heads = [h["_id"] async for h in self._heads.find({}, {"_id": 1}).sort("taken_at", -1)]
        for snapshot_id in heads[keep:]:
            await self._heads.delete_one({"_id": snapshot_id})  # the head first: never a head without its chunks
            await self._chunks.delete_many({"snapshot": snapshot_id})
        named = heads[:keep]
        await self._chunks.delete_many({"snapshot": {"$nin": named}, "written_at": {"$lt": now - ORPHANS_AFTER}})

    async def newest(self) -> AsyncIterator[StoredSnapshot]:
        """Whole snapshots, newest first; one whose chunks are missing or damaged is passed over."""
        async for head in self._heads.find({}).sort("taken_at", -1):
            pieces: list[bytes | None] = [None] * head["chunks"]
            async for chunk in self._chunks.find({"snapshot": head["_id"]}):
                if 0 <= chunk["n"] < len(pieces):
                    pieces[chunk["n"]] = bytes(chunk["data"])
            if any(piece is None for piece in pieces):
                continue
            blob = b"".join(pieces)  # type: ignore[arg-type]
            del pieces
            if len(blob) != head["bytes"] or zlib.crc32(blob) != head["crc32"]:
                continue
            positions = {int(p): int(o) for p, o in head["positions"].items()}
            yield StoredSnapshot(head["_id"], head["taken_at"], head["topic"], positions, blob)


class MongoSeenAccounts:
    """Which operator accounts have used which identifier hashes: whom to tell when an exclusion starts."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._collection = database[ACCOUNTS]
        self._rekeyed = database[REKEYED]

    async def add_many(self, pairs: Iterable[tuple[str, str, str]]) -> None:
        """Record (identifier, operator, account) triples; recording one again changes nothing."""
        operations = [
            UpdateOne(
                {"_id": f"{identifier}|{operator_id}|{account_id}"},
                {"$set": {"identifier": identifier, "operator_id": operator_id, "account_id": account_id}},
                upsert=True,
            )
            for identifier, operator_id, account_id in pairs
        ]
        if operations:
            await self._collection.bulk_write(operations, ordered=False)

    async def rehash_once(self, hasher: Hasher) -> int:
        """``rehash`` unless a whole pass already went to the newest key: blocking's start does it
        before it follows anything, so an exclusion hashed with the newest key reaches the accounts
        seen before the rotation. How many moved."""
        done = await self._rekeyed.find_one({"_id": ACCOUNTS})
        if done is not None and done.get("key_id") == hasher.key_id:
            return 0
        moved = await self.rehash(hasher)
        await self._rekeyed.replace_one({"_id": ACCOUNTS}, {"_id": ACCOUNTS, "key_id": hasher.key_id}, upsert=True)
        return moved

    async def rehash(self, hasher: Hasher) -> int:
        """Each seen account's identifier in the newest form of the chain; how many moved."""
        moved = 0
        for seen in await stale_hashes(self._collection, hasher, "identifier", ("operator_id", "account_id")):
            await self.add_many([(hasher.canonical(seen["identifier"]), seen["operator_id"], seen["account_id"])])
            await self._collection.delete_one({"_id": seen["_id"]})
            moved += 1
        return moved

    async def accounts_for(self, identifiers: Iterable[str]) -> set[tuple[str, str]]:
        wanted = sorted(set(identifiers))
        if not wanted:
            return set()
        cursor = self._collection.find({"identifier": {"$in": wanted}}, {"operator_id": 1, "account_id": 1})
        return {(d["operator_id"], d["account_id"]) async for d in cursor}


class MongoActiveExclusions:
    """The first sketch's interface to the projection: save one exclusion in force, list those in force.

    Kept for callers written against it (the store conformance suite); blocking itself follows
    snapshots through ``MongoExclusionProjection``.
    """

    def __init__(self, database: AsyncDatabase) -> None:
        self._collection = database[EXCLUSIONS]
        self._projection = MongoExclusionProjection(database)

    async def save(self, exclusion: ActiveExclusion) -> None:
        document = _document(exclusion, state="active", excluding=True)
        await self._collection.replace_one({"_id": document["_id"]}, document, upsert=True)

    async def in_force(self, now: datetime) -> AsyncIterator[ActiveExclusion]:
        async for exclusion in self._projection.excluding(now):
            yield replace(exclusion, identifiers=frozenset(exclusion.identifiers))
