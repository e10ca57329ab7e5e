"""A restarted blocking instance loads its view from a stored snapshot and follows the lifecycle topic
from the snapshot's positions: it holds every exclusion, and honours what happened after the
snapshot (and while it was stopped) from the very first event. A damaged or half-written snapshot is
passed over; without one, the view comes from the projection as before."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from bson import Binary

from services.blocking.app import SNAPSHOTS, VIEW, create_app
from services.blocking.repository import SNAPSHOT_CHUNKS
from services.blocking.repository import SNAPSHOTS as SNAPSHOT_HEADS
from services.blocking.snapshot import SnapshotFormatError, decode, encode
from services.blocking.view import ActiveExclusion, Scopes
from shared import topics
from shared.broker import ensure_operator_topics, ensure_topics
from shared.events import (
    AccountEventKind,
    ExclusionActivated,
    ExclusionExpired,
    ExclusionLifted,
    ExclusionState,
    ExclusionType,
    Game,
)
from shared.identity import Hasher, Identity, uid_from_personnummer
from tests.blocking.conftest import OPERATORS, T0, Blocking, Clock, of
from tests.support import Publisher, TopicReader, eventually

K = AccountEventKind


def person(n: int) -> Identity:
    return Identity(uid=uid_from_personnummer(f"1975030{n}4321"), email=f"snap{n}@example.org")


# --- the encoding ----------------------------------------------------------------------------


def exclusions_of_every_shape() -> list[ActiveExclusion]:
    scopes = Scopes()
    games, poker_ads = scopes.get(["GAMES"]), scopes.get(["GAMES", "ADS"], ["POKER"])
    digest = "ab" * 32
    return [
        ActiveExclusion(uuid.uuid4(), (f"national_id:{digest}", f"email:{'cd' * 32}"), games, T0, T0 + timedelta(days=30), 3),
        ActiveExclusion(uuid.uuid4(), (f"national_id:{digest}",), poker_ads, T0 - timedelta(microseconds=1), None, 1),
        # identifiers that are not "kind:<64 hex>" are kept as they are
        ActiveExclusion(uuid.uuid4(), ("device_fingerprint:ABC", "odd", f"email:{'EF' * 32}"), games, T0, None, 2**40),
        ActiveExclusion(uuid.uuid4(), (), games, datetime(1999, 1, 1, tzinfo=UTC), T0 + timedelta(seconds=1), 7),
    ]


def test_a_snapshot_gives_back_every_exclusion_in_force_as_it_was():
    held = exclusions_of_every_shape()
    back = list(decode(encode(held), T0))
    assert back == held
    assert back[0].scope is back[2].scope, "one Scope object per distinct scope"
    assert back[0].scope.types == frozenset({ExclusionType.GAMES}) and back[1].scope.games == frozenset({Game.POKER})
    assert all(e.starts_at.tzinfo is not None for e in back)


def test_exclusions_ended_by_the_time_of_loading_are_left_out():
    held = exclusions_of_every_shape()
    assert [e.exclusion_id for e in decode(encode(held), T0 + timedelta(seconds=1))] == [e.exclusion_id for e in held[:3]]


def test_a_damaged_snapshot_is_refused():
    blob = bytearray(encode(exclusions_of_every_shape()))
    import bson

    with pytest.raises(bson.errors.InvalidBSON):
        list(decode(bytes(blob[: len(blob) // 2]), T0))

    document = bson.decode(bytes(blob))
    document["format"] = 99
    with pytest.raises(SnapshotFormatError):
        list(decode(bson.encode(document), T0))


# --- on the real broker and store ------------------------------------------------------------


class Stack:
    """Instances that come and go on one topic prefix and database, and a publisher around them."""

    def __init__(self, settings, database, publish, decisions) -> None:
        self.settings, self.database, self.clock = settings, database, Clock()
        self.blocking = Blocking(
            settings,
            database,
            self.clock,
            Hasher.from_settings(settings),
            publish,
            decisions,
            None,
            None,
            accounts=uuid.uuid4().int % 10**6,
        )

    def app(self, **changes):
        return create_app(self.settings.model_copy(update=changes), database=self.database, clock=self.clock)

    async def first_decision(self, identity: Identity) -> str:
        [decided] = (await self.blocking.decide(self.blocking.account_event(K.LOGIN, identity))).values()
        return decided["outcome"]


@pytest.fixture
async def stack(settings, database):
    await ensure_topics(settings)
    await ensure_operator_topics(settings, *OPERATORS)
    async with Publisher(settings) as publish, TopicReader(settings, of(topics.DECISIONS)) as decisions:
        yield Stack(settings, database, publish, decisions)


async def test_a_restarted_instance_loads_the_snapshot_and_honours_what_happened_after_it_from_the_first_event(stack):
    b = stack.blocking
    year = T0 + timedelta(days=365)
    kept, lifted, later = b.snapshot(person(1), ends_at=year), b.snapshot(person(2), ends_at=year), b.snapshot(person(4), ends_at=year)
    expired = b.snapshot(person(3), ends_at=T0 + timedelta(days=30))
    async with stack.app() as app:
        for exclusion in (kept, lifted, expired):
            await b.lifecycle(ExclusionActivated, exclusion)
        view = app.context.get(VIEW)
        await eventually(lambda: _true(len(view) == 3), what="the view to hold the three exclusions")
        written = await app.context.get(SNAPSHOTS).write()
        assert written is not None
    # Blocking is down: one person is excluded, one exclusion is lifted and one expires meanwhile.
    await b.lifecycle(ExclusionActivated, later, wait=False)
    await b.lifecycle(ExclusionLifted, lifted.model_copy(update={"state": ExclusionState.LIFTED, "version": 2}), wait=False)
    stack.clock.now = T0 + timedelta(days=31)  # past the expiring exclusion's end, before the others'
    await b.lifecycle(ExclusionExpired, expired.model_copy(update={"state": ExclusionState.EXPIRED, "version": 2}), wait=False)
    async with stack.app() as app:
        snapshots = app.context.get(SNAPSHOTS)
        assert snapshots.loaded is not None and snapshots.loaded.snapshot_id == written.snapshot_id
        assert await stack.first_decision(person(4)) == "BLOCK", "activated while stopped: blocked on the very first event"
        assert await stack.first_decision(person(2)) == "ALLOW", "lifted after the snapshot"
        assert await stack.first_decision(person(3)) == "ALLOW", "expired after the snapshot"
        view = app.context.get(VIEW)
        assert set(view.by_id) == {kept.exclusion_id, later.exclusion_id}
        assert await stack.first_decision(person(1)) == "BLOCK"


async def test_every_exclusion_of_the_snapshot_is_held_after_a_restart(stack):
    b = stack.blocking
    many = [b.snapshot(Identity(email=f"many{n}@example.org"), ends_at=None) for n in range(300)]
    async with stack.app() as app:
        for exclusion in many:
            await b.lifecycle(ExclusionActivated, exclusion, wait=False)
        view = app.context.get(VIEW)
        await eventually(lambda: _true(len(view) == len(many)), what="the view to hold every exclusion")
        await app.context.get(SNAPSHOTS).write()
        projection = stack.database["blocking_exclusions"]
        await eventually(lambda: _at_least(projection, len(many)), what="the projection to hold every exclusion")
    async with stack.app() as app:
        assert app.context.get(SNAPSHOTS).loaded is not None
        view = app.context.get(VIEW)
        assert {e.exclusion_id: tuple(e.identifiers) for e in view.by_id.values()} == {s.exclusion_id: tuple(s.identifiers) for s in many}
        assert await stack.first_decision(Identity(email="many299@example.org")) == "BLOCK"


async def test_a_half_written_or_damaged_snapshot_is_passed_over(stack):
    b = stack.blocking
    exclusion = b.snapshot(person(5))
    async with stack.app() as app:
        await b.lifecycle(ExclusionActivated, exclusion)
        written = await app.context.get(SNAPSHOTS).write()
    later = datetime.now(UTC) + timedelta(minutes=1)
    # Newer than the whole one: chunks whose head was never written, a head whose chunk is missing,
    # a head whose chunk is damaged.
    chunks, heads = stack.database[SNAPSHOT_CHUNKS], stack.database[SNAPSHOT_HEADS]
    await chunks.insert_one({"_id": "headless/0", "snapshot": "headless", "n": 0, "written_at": later, "data": Binary(b"\x00" * 64)})
    head = {"topic": stack.settings.topic(topics.EXCLUSION_LIFECYCLE), "positions": {}, "chunks": 1, "bytes": 64, "crc32": 0}
    await heads.insert_one({"_id": "missing", "taken_at": later, **head})
    await chunks.insert_one({"_id": "damaged/0", "snapshot": "damaged", "n": 0, "written_at": later, "data": Binary(b"\x01" * 64)})
    await heads.insert_one({"_id": "damaged", "taken_at": later + timedelta(seconds=1), **head})
    async with stack.app() as app:
        assert app.context.get(SNAPSHOTS).loaded.snapshot_id == written.snapshot_id
        assert await stack.first_decision(person(5)) == "BLOCK"


async def test_a_snapshot_beyond_the_topic_s_end_is_passed_over_for_the_projection(stack):
    b = stack.blocking
    async with stack.app(blocking_snapshot_seconds=0) as app:  # no snapshot but this one
        await b.lifecycle(ExclusionActivated, b.snapshot(person(6)))
        written = await app.context.get(SNAPSHOTS).write()
    # as if the topic had been recreated: its records after the snapshot's positions cannot be read
    await stack.database[SNAPSHOT_HEADS].update_one({"_id": written.snapshot_id}, {"$set": {"positions": {"0": 10**9}}})
    async with stack.app(blocking_snapshot_seconds=0) as app:
        assert app.context.get(SNAPSHOTS).loaded is None
        assert await stack.first_decision(person(6)) == "BLOCK"


async def test_without_a_snapshot_the_view_is_loaded_from_the_projection(stack):
    b = stack.blocking
    async with stack.app(blocking_snapshot_seconds=0):
        await b.lifecycle(ExclusionActivated, b.snapshot(person(7)))
    await b.lifecycle(ExclusionActivated, b.snapshot(person(8)), wait=False)
    assert await stack.database[SNAPSHOT_HEADS].count_documents({}) == 0
    async with stack.app(blocking_snapshot_seconds=0) as app:
        assert app.context.get(SNAPSHOTS).loaded is None
        assert await stack.first_decision(person(8)) == "BLOCK"
        assert await stack.first_decision(person(7)) == "BLOCK"


async def test_an_instance_that_found_no_snapshot_stores_one_once_current(stack):
    async with stack.app(blocking_snapshot_seconds=3600):
        await eventually(lambda: stack.database[SNAPSHOT_HEADS].find_one({}), what="a snapshot to be stored")


async def _at_least(collection, count: int) -> bool:
    return await collection.count_documents({}) >= count


async def _true(value):
    return value
