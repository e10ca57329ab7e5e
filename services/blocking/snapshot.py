"""The view as a few large blobs: what a restarted instance loads instead of a million documents.

A snapshot holds the view's exclusions in columns (BSON, which PyMongo already brings): ids and
identifier digests as raw bytes, which do not compress; dates, versions, scope numbers and counts as
arrays of machine integers, compressed with zlib. An identifier ``kind:<64 hex digits>`` is stored as
its kind's number and 32 bytes; any other is kept as it is. Scopes and dates come back as shared
objects (a million exclusions use a handful of scopes). Decoding needs no code from the data:
nothing in a snapshot can run.
"""

import asyncio
import sys
import time
import uuid
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import bson
import bson.errors
import structlog

from services.blocking.repository import MongoViewSnapshots, StoredSnapshot
from services.blocking.view import ActiveExclusion, ExclusionView, Scopes

if TYPE_CHECKING:
    from services.blocking.follower import ViewFollower

log = structlog.get_logger(__name__)
RETRY_SECONDS = 5.0

FORMAT = 1
NO_END = -(2**63)
VERBATIM = 255  # an identifier's kind number when it is kept as it is
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX = frozenset("0123456789abcdef")


class SnapshotFormatError(ValueError):
    """A snapshot this code cannot read (another format, or damaged)."""


def _micros(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode(exclusions: Sequence[ActiveExclusion]) -> bytes:
    """The exclusions as one BSON document of columns."""
    ids = bytearray()
    versions, starts, ends = array("q"), array("q"), array("q")
    scope_numbers, counts, kinds = array("H"), array("H"), array("B")
    digests = bytearray()
    verbatim: list[str] = []
    scopes: dict[object, int] = {}
    scope_of_object: dict[int, int] = {}  # id(scope) -> number: most exclusions share a Scope object
    prefixes: dict[str, int] = {}
    micros: dict[datetime, int] = {}
    for exclusion in exclusions:
        ids += exclusion.exclusion_id.bytes
        versions.append(exclusion.version)
        start = micros.get(exclusion.starts_at)
        if start is None:
            start = micros[exclusion.starts_at] = _micros(exclusion.starts_at)
        starts.append(start)
        if exclusion.ends_at is None:
            ends.append(NO_END)
        else:
            end = micros.get(exclusion.ends_at)
            if end is None:
                end = micros[exclusion.ends_at] = _micros(exclusion.ends_at)
            ends.append(end)
        number = scope_of_object.get(id(exclusion.scope))
        if number is None:
            number = scopes.setdefault(exclusion.scope, len(scopes))
            scope_of_object[id(exclusion.scope)] = number
        scope_numbers.append(number)
        identifiers = tuple(exclusion.identifiers)
        counts.append(len(identifiers))
        for identifier in identifiers:
            prefix, _, digest = identifier.rpartition(":")
            if len(digest) == 64 and prefix and _HEX.issuperset(digest):
                kind = prefixes.get(prefix)
                if kind is None:
                    kind = prefixes[prefix] = len(prefixes)
                if kind < VERBATIM:
                    kinds.append(kind)
                    digests += bytes.fromhex(digest)
                    continue
            kinds.append(VERBATIM)
            verbatim.append(identifier)
    packed = lambda column: bson.Binary(zlib.compress(column.tobytes(), 6))  # noqa: E731
    return bson.encode(
        {
            "format": FORMAT,
            "byteorder": sys.byteorder,
            "count": len(versions),
            "scopes": [{"types": sorted(s.types), "games": sorted(s.games)} for s in scopes],  # type: ignore[attr-defined]
            "prefixes": [p + ":" for p in sorted(prefixes, key=prefixes.__getitem__)],
            "ids": bson.Binary(bytes(ids)),
            "digests": bson.Binary(bytes(digests)),
            "verbatim": verbatim,
            "versions": packed(versions),
            "starts": packed(starts),
            "ends": packed(ends),
            "scope_numbers": packed(scope_numbers),
            "counts": packed(counts),
            "kinds": packed(kinds),
        }
    )


def _column(document: dict, name: str, typecode: str, length: int) -> array:
    column = array(typecode)
    column.frombytes(zlib.decompress(document[name]))
    if document["byteorder"] != sys.byteorder:
        column.byteswap()
    if len(column) != length:
        raise SnapshotFormatError(f"column {name} holds {len(column)} values, not {length}")
    return column


def decode(blob: bytes, now: datetime) -> Iterator[ActiveExclusion]:
    """The exclusions of an encoded snapshot that have not ended by ``now``."""
    document = bson.decode(blob)
    if document.get("format") != FORMAT:
        raise SnapshotFormatError(f"snapshot format {document.get('format')!r}, this code reads {FORMAT}")
    count = document["count"]
    versions, starts, ends = (_column(document, name, "q", count) for name in ("versions", "starts", "ends"))
    scope_numbers, counts = _column(document, "scope_numbers", "H", count), _column(document, "counts", "H", count)
    kinds = _column(document, "kinds", "B", sum(counts))
    ids, digests = memoryview(document["ids"]), memoryview(document["digests"])
    if len(ids) != 16 * count:
        raise SnapshotFormatError("the ids column is short")
    shared = Scopes()
    scopes = [shared.get(s["types"], s["games"]) for s in document["scopes"]]
    prefixes = document["prefixes"]
    verbatim = iter(document["verbatim"])
    dates: dict[int, datetime] = {}
    cutoff = _micros(now)
    new, set_slot, from_bytes, safety = object.__new__, object.__setattr__, int.from_bytes, uuid.SafeUUID.unknown
    digest_at = kind_at = 0
    for i in range(count):
        n = counts[i]
        identifiers = []
        for kind in kinds[kind_at : kind_at + n]:
            if kind == VERBATIM:
                identifiers.append(next(verbatim))
            else:
                identifiers.append(prefixes[kind] + digests[digest_at : digest_at + 32].hex())
                digest_at += 32
        kind_at += n
        end = ends[i]
        if end != NO_END and end <= cutoff:
            continue
        # uuid.UUID(bytes=...) checks what a snapshot we wrote already guarantees, at twice the cost
        exclusion_id = new(uuid.UUID)
        set_slot(exclusion_id, "int", from_bytes(ids[16 * i : 16 * i + 16]))
        set_slot(exclusion_id, "is_safe", safety)
        start = starts[i]
        starts_at = dates.get(start)
        if starts_at is None:
            starts_at = dates[start] = EPOCH + timedelta(microseconds=start)
        if end == NO_END:
            ends_at = None
        else:
            ends_at = dates.get(end)
            if ends_at is None:
                ends_at = dates[end] = EPOCH + timedelta(microseconds=end)
        yield ActiveExclusion(exclusion_id, tuple(identifiers), scopes[scope_numbers[i]], starts_at, ends_at, versions[i])


class ViewSnapshots:
    """Loads the newest usable snapshot into the view at start, and stores one every ``interval`` seconds.

    A snapshot is taken in one step of the event loop (the view's exclusions, which are immutable,
    and the follower's positions, up to which the view holds everything), then encoded in a thread
    and written while deciding goes on. None is taken while the view is not current.
    """

    def __init__(
        self,
        view: ExclusionView,
        follower: "ViewFollower",
        store: Callable[[], MongoViewSnapshots],
        interval: float,
        *,
        retry: float = RETRY_SECONDS,
    ) -> None:
        self._view, self._follower, self._store = view, follower, store
        self._interval, self._retry = interval, retry
        self._task: asyncio.Task | None = None
        self.loaded: StoredSnapshot | None = None

    async def load(self, now: datetime) -> bool:
        """Fill the (empty) view from the newest snapshot the follower can resume after; False if none."""
        async for stored in self._store().newest():
            if stored.topic != self._follower.topic or not self._follower.can_resume_from(stored.positions):
                log.info("view_snapshot_passed_over", snapshot=stored.snapshot_id, reason="positions")
                continue
            try:
                for exclusion in decode(stored.blob, now):
                    self._view.add(exclusion)
            except (SnapshotFormatError, bson.errors.BSONError, zlib.error, KeyError, TypeError, ValueError) as error:
                log.warning("view_snapshot_passed_over", snapshot=stored.snapshot_id, reason=type(error).__name__)
                self._view.clear()
                continue
            self._follower.resume_from(stored.positions)
            self.loaded = stored
            log.info("view_snapshot_loaded", snapshot=stored.snapshot_id, taken_at=stored.taken_at.isoformat(), positions=stored.positions)
            return True
        return False

    def start(self) -> None:
        """Store snapshots from now on: the first soon if the view was not loaded from a recent one."""
        if self._interval > 0 and self._task is None:
            age = (_wall_clock() - self.loaded.taken_at).total_seconds() if self.loaded else self._interval
            self._task = asyncio.create_task(self._run(max(0.0, self._interval - age)), name="blocking-view-snapshots")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def write(self) -> StoredSnapshot | None:
        """Store a snapshot of the view now, unless the view is not current (then None)."""
        if self._follower.unavailable_reason() is not None:
            return None
        # One step of the event loop: the positions, and the view that holds everything before them.
        positions, exclusions, taken_at = self._follower.positions(), list(self._view.by_id.values()), _wall_clock()
        started = time.perf_counter()
        blob = await asyncio.to_thread(encode, exclusions)
        del exclusions
        encoded = time.perf_counter()
        stored = StoredSnapshot(f"{taken_at:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}", taken_at, self._follower.topic, positions, blob)
        await self._store().save(stored)
        log.info(
            "view_snapshot_stored",
            snapshot=stored.snapshot_id,
            bytes=len(blob),
            encode_seconds=round(encoded - started, 2),
            store_seconds=round(time.perf_counter() - encoded, 2),
        )
        return stored

    async def _run(self, wait: float) -> None:
        while True:
            await asyncio.sleep(wait)
            try:
                wait = self._interval if await self.write() is not None else self._retry
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 — the store is away: the next round tries again
                log.warning("view_snapshot_failed", error=type(error).__name__)
                wait = self._retry


def _wall_clock() -> datetime:
    return datetime.now(UTC)
