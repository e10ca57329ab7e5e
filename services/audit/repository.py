"""The audit log in MongoDB: append-only records, one hash chain per Kafka partition, written a
batch at a time; the signed checkpoints of the chains' heads; and the results of the periodic
verification of the chains. The service only inserts and finds.

Exactly once: a record's ``_id`` is its event's id and ``(topic, partition, offset)`` is unique too,
so neither a redelivered message nor the same event published twice is recorded again. A batch is
one ordered ``insert_many``: if it is cut short (the process killed, the store gone), what reached
the store is a prefix of each chain, and the retry goes on from the chain's tail as the store has it.
"""

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.audit.chain import Tail, chain_of, position_of, record, tail_of

if TYPE_CHECKING:
    from services.audit.verifier import Report

LOG = "audit_log"
CHECKPOINTS = "audit_checkpoints"
ANCHORS = "audit_anchors"  # where retention cut a chain: signed, written by `selfex audit retain` only
VERIFICATIONS = "audit_verifications"  # each periodic verification's result, newest last
# Which instance verifies which period: the first to insert the period's claim (replicas verify once).
VERIFICATION_CLAIMS = "audit_verification_claims"
KEPT_FINDINGS = 20
# Records per piece of verify's read of the whole log.
SCAN_PIECE = 20_000  # a result keeps the first findings and problems (and how many there were)
INDEXES = {
    LOG: [
        IndexModel([("topic", ASCENDING), ("partition", ASCENDING), ("seq", ASCENDING)], unique=True),  # the chain
        IndexModel([("topic", ASCENDING), ("partition", ASCENDING), ("offset", ASCENDING)], unique=True),
        # The compliance queries: records of a type, of an operator, in a time range (``at``), and a
        # person's records by the ids that tie them to the person (``refs`` holds the subject too).
        IndexModel([("type", ASCENDING), ("at", ASCENDING)]),
        IndexModel([("refs", ASCENDING)]),
        IndexModel([("operator_id", ASCENDING), ("at", ASCENDING)]),
        IndexModel([("at", ASCENDING)]),
    ],
    CHECKPOINTS: [IndexModel([("at", ASCENDING)])],
    ANCHORS: [IndexModel([("chain", ASCENDING), ("seq", ASCENDING)])],
    VERIFICATIONS: [IndexModel([("ended_at", ASCENDING)])],  # read newest first: an index serves either direction
}


class Entry:
    """One message to record: where it was, when it was read, and the event without personal data."""

    __slots__ = ("event", "offset", "partition", "recorded_at", "topic")

    def __init__(self, topic: str, partition: int, offset: int, recorded_at: str, event: dict[str, Any]) -> None:
        self.topic, self.partition, self.offset, self.recorded_at, self.event = topic, partition, offset, recorded_at, event


class MongoAuditLog:
    def __init__(self, database: AsyncDatabase) -> None:
        self._log = database[LOG]
        self._checkpoints = database[CHECKPOINTS]
        self._anchors = database[ANCHORS]
        self._tails: dict[str, Tail] = {}  # the chains this instance appends to, as it last left them

    def tails(self) -> dict[str, Tail]:
        """The heads of the chains this instance has appended to or read (for its checkpoints)."""
        return dict(self._tails)

    async def tail(self, chain: str) -> Tail:
        known = self._tails.get(chain)
        if known is None:
            topic, partition = position_of(chain)
            last = await self._log.find_one(
                {"topic": topic, "partition": partition}, {"seq": 1, "offset": 1, "hash": 1}, sort=[("seq", DESCENDING)]
            )
            known = self._tails[chain] = tail_of(last)
        return known

    async def append(self, entries: Sequence[Entry]) -> int:
        """Append a batch, each entry to its partition's chain, in one ordered insert; how many were new.

        An entry at or before its chain's tail offset is already recorded (a redelivery); one whose
        event id is recorded already (the same event published twice) is left out. The ids are not
        looked up first (the store would spend as long on that as on the insert): an insert refused
        for a duplicate, or for a tail another writer moved, is made again from the tails the store
        has, this time leaving out the ids it holds.
        """
        if not entries:
            return 0
        chains: dict[str, list[Entry]] = {}
        for entry in sorted(entries, key=lambda e: (e.topic, e.partition, e.offset)):
            chains.setdefault(chain_of(entry.topic, entry.partition), []).append(entry)
        try:
            return await self._append(chains, look_up_ids=False)
        except (BulkWriteError, DuplicateKeyError):
            return await self._append(chains, look_up_ids=True)

    async def _append(self, chains: dict[str, list[Entry]], *, look_up_ids: bool) -> int:
        tails = {chain: await self.tail(chain) for chain in chains}
        fresh = [e for chain, run in chains.items() for e in run if e.offset > tails[chain].offset]
        ids = [str(e.event["id"]) for e in fresh]
        known = {d["_id"] async for d in self._log.find({"_id": {"$in": ids}}, {"_id": 1})} if ids and look_up_ids else set()
        documents, heads = [], dict(tails)
        for entry in fresh:
            event_id = str(entry.event["id"])
            if event_id in known:
                continue
            known.add(event_id)  # twice in one batch: once
            chain = chain_of(entry.topic, entry.partition)
            document = record(
                heads[chain],
                topic=entry.topic,
                partition=entry.partition,
                offset=entry.offset,
                recorded_at=entry.recorded_at,
                event=entry.event,
            )
            documents.append(document)
            heads[chain] = tail_of(document)
        if documents:
            try:
                await self._log.insert_many(documents, ordered=True)
            except BaseException:
                for chain in chains:  # another writer, or a prefix written: read the tails again
                    self._tails.pop(chain, None)
                raise
        self._tails.update(heads)
        return len(documents)

    async def chains(self) -> list[str]:
        chains = []
        for topic in await self._log.distinct("topic"):
            chains += [chain_of(topic, partition) for partition in await self._log.distinct("partition", {"topic": topic})]
        return sorted(chains)

    def records(self, chain: str, *, after: int = 0, batch_size: int = 5000) -> AsyncIterator[dict[str, Any]]:
        """One chain's records in ``seq`` order (those after seq ``after``)."""
        topic, partition = position_of(chain)
        where: dict[str, Any] = {"topic": topic, "partition": partition}
        if after:
            where["seq"] = {"$gt": after}
        return aiter(self._log.find(where, sort=[("seq", ASCENDING)], batch_size=batch_size))

    async def every_record(self, *, piece: int = SCAN_PIECE) -> AsyncIterator[list[dict[str, Any]]]:
        """Every record in the store's own order, ``piece`` at a time, the next piece asked for while
        the caller works on this one. Pieces, not one cursor: the embedded store reads a whole result
        before it answers, so one cursor over the log would leave the caller idle until the store had
        read it all, and the store idle after. The log only grows at its end, so the pieces are stable."""

        def read(skip: int) -> "asyncio.Future[list[dict[str, Any]]]":
            return asyncio.ensure_future(self._log.find({}, skip=skip, limit=piece, batch_size=piece).to_list(None))

        ahead = deque([read(0), read(piece)])  # two pieces asked for ahead: the store never waits on the caller
        asked = 2 * piece
        try:
            while ahead:
                batch = await ahead.popleft()
                if len(batch) < piece:  # the end: what was asked for after it is empty
                    for later in ahead:
                        later.cancel()
                    ahead.clear()
                else:
                    ahead.append(read(asked))
                    asked += piece
                    await asyncio.sleep(0)  # let it send its query before the caller takes the loop
                if batch:
                    yield batch
        finally:
            for later in ahead:
                later.cancel()

    async def record_at(self, chain: str, seq: int) -> dict[str, Any] | None:
        topic, partition = position_of(chain)
        return await self._log.find_one({"topic": topic, "partition": partition, "seq": seq})

    async def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        await self._checkpoints.insert_one(dict(checkpoint))

    async def checkpoints(self) -> list[dict[str, Any]]:
        return [c async for c in self._checkpoints.find({}, sort=[("at", ASCENDING)])]

    async def recent_checkpoints(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` checkpoints (each instance writes one every few minutes: not all of them)."""
        return [c async for c in self._checkpoints.find({}, sort=[("at", DESCENDING)], limit=limit)]

    async def anchors(self) -> list[dict[str, Any]]:
        """Every retention anchor, oldest first (see ``services.audit.retention``)."""
        return [a async for a in self._anchors.find({}, sort=[("at", ASCENDING)])]


class MongoVerifications:
    """The periodic verifications: a claim per period (inserted first: one instance verifies it),
    and each result, inserted once and never changed."""

    def __init__(self, database: AsyncDatabase) -> None:
        self._results = database[VERIFICATIONS]
        self._claims = database[VERIFICATION_CLAIMS]

    async def claim(self, period: str, writer: str, at: datetime) -> bool:
        """Whether this instance is the first to claim the period (and so verifies it)."""
        if await self._claims.find_one({"_id": period}, {"_id": 1}) is not None:
            return False
        try:
            await self._claims.insert_one({"_id": period, "writer": writer, "at": moment(at)})
        except DuplicateKeyError:
            return False
        return True

    async def save(self, result: dict[str, Any]) -> None:
        await self._results.insert_one(dict(result))

    async def newest(self) -> dict[str, Any] | None:
        return await self._results.find_one({}, sort=[("ended_at", DESCENDING)])


def verification_result(report: "Report", *, period: str, started: datetime, ended: datetime, writer: str, every: float) -> dict[str, Any]:
    """A verification's result as it is kept: counts, intact or not, and the first findings and
    problems. A finding names a chain, a seq, a record's id (its event's id) and what was done to
    it; a problem, a checkpoint's or anchor's id or a chain's position: nothing personal."""
    return {
        "_id": period,
        "started_at": moment(started),
        "ended_at": moment(ended),
        "writer": writer,
        "interval_seconds": every,
        "records": report.records,
        "chains": report.chains,
        "seconds": round(report.seconds, 3),
        "intact": report.intact,
        "findings": [
            {"chain": f.chain, "seq": f.seq, "record_id": f.record_id, "kind": f.what, "detail": f.detail}
            for f in report.findings[:KEPT_FINDINGS]
        ],
        "findings_total": len(report.findings),
        "problems": report.problems[:KEPT_FINDINGS],
        "problems_total": len(report.problems),
        "heads_checked": report.heads_checked,
        "anchored": report.anchored,
    }


def moment(at: datetime) -> str:
    """A moment as the audit's documents keep it: UTC, ISO 8601 to the millisecond (sorts as text)."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def newest_heads(checkpoints: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each chain's furthest head over a set of checkpoints."""
    heads: dict[str, dict[str, Any]] = {}
    for checkpoint in checkpoints:
        for head in checkpoint["heads"]:
            if head["chain"] not in heads or head["seq"] > heads[head["chain"]]["seq"]:
                heads[head["chain"]] = head
    return heads
