"""Persons and exclusions on the real store: every query shape registration uses, and its guarantees."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient, monitoring

from services.registration.domain import exclude
from services.registration.outbox import entries
from services.registration.repository import INDEXES, MongoExclusions
from services.registration.transitions import due, registered
from shared.events import Channel, ExclusionRequestedPayload, ExclusionState, RequestExclusion
from shared.identity import Identity, uid_from_personnummer
from shared.policies import shipped_policies
from shared.store import ensure_indexes

pytestmark = pytest.mark.integration

NOW = datetime(2025, 1, 31, 12, 0, 0, 123000, tzinfo=UTC)
SE = shipped_policies()["SE"]


def request(n: int = 1, duration: str = "+30d", channel: Channel = Channel.OPERATOR) -> RequestExclusion:
    identity = Identity(uid=uid_from_personnummer(f"1990{n:08d}"))
    return RequestExclusion(source="test", payload=ExclusionRequestedPayload(identity=identity, duration=duration, channel=channel))


def new(n: int = 1, duration: str = "+30d", now: datetime = NOW, person_id: str = "p-1", **options):
    req = request(n, duration, **options)
    exclusion = exclude(req, person_id=person_id, identifiers=[f"national_id:{n}"], now=now, policy=SE)
    return req, exclusion, entries(registered(exclusion, req, now))


@pytest.fixture
async def exclusions(database) -> MongoExclusions:
    await ensure_indexes(database, INDEXES)
    return MongoExclusions(database)


# --- persons --------------------------------------------------------------------------------------


async def test_a_person_is_stored_with_sealed_contacts_and_merged_on_the_next_request(exclusions, database):
    await exclusions.save_person("p-1", ["email:a", "national_id:x"], 1990, "F", contacts={"email": "sealed-e"}, locale="sv")
    await exclusions.save_person("p-1", ["national_id:x", "mobile:m"], None, None, contacts={"mobile": "sealed-m"})

    assert await database["persons"].find_one({"_id": "p-1"}) == {
        "_id": "p-1",
        "identifiers": ["email:a", "national_id:x", "mobile:m"],
        "year_of_birth": 1990,
        "gender": "F",
        "contacts": {"email": "sealed-e", "mobile": "sealed-m"},
        "locale": "sv",
    }


async def test_a_person_is_found_by_any_identifier_and_the_national_id_wins_a_tie(exclusions):
    await exclusions.save_person("p-email", ["email:a"], None, None)
    await exclusions.save_person("p-national", ["national_id:x", "email:b"], None, None)

    assert await exclusions.match_person(["email:a", "national_id:x"]) == ("p-national", ["national_id:x", "email:b"])
    assert await exclusions.find_person(["email:a"]) == "p-email"
    assert await exclusions.match_person(["mobile:unknown"]) == (None, [])


# --- exclusions -----------------------------------------------------------------------------------


async def test_an_exclusion_is_stored_with_its_events_and_read_back_as_it_was(exclusions, database):
    req, exclusion, pending = new()

    assert await exclusions.insert(exclusion, pending, at=NOW)

    stored = await exclusions.load(exclusion.id)
    assert stored.exclusion == exclusion
    assert (stored.revision, stored.outbox, stored.outbox_at) == (1, pending, NOW)
    document = await database["exclusions"].find_one({"_id": str(exclusion.id)})
    assert document["request_id"] == str(req.id) and document["state"] == "active" and document["ends_at"] == exclusion.ends_at


async def test_the_same_request_is_stored_once(exclusions, database):
    req, exclusion, pending = new()
    await exclusions.insert(exclusion, pending, at=NOW)

    again = exclude(req, person_id="p-1", identifiers=["national_id:1"], now=NOW + timedelta(hours=1), policy=SE)

    assert not await exclusions.insert(again, pending, at=NOW)
    assert await exclusions.add(again) == exclusion
    assert await database["exclusions"].count_documents({}) == 1


async def test_an_exclusion_is_found_by_any_cause_applied_to_it(exclusions):
    req, exclusion, pending = new()
    await exclusions.insert(exclusion, pending, at=NOW)

    assert (await exclusions.by_cause(req.id)).id == exclusion.id
    assert await exclusions.by_cause(exclusion.id) is None


async def test_the_running_exclusion_of_a_person_is_the_latest_not_ended(exclusions):
    _, old, _ = new(1, now=NOW - timedelta(days=100))
    _, cancelled, _ = new(2, now=NOW - timedelta(days=1))
    _, running, _ = new(3, now=NOW - timedelta(days=10))
    await exclusions.insert(old.model_copy(update={"state": ExclusionState.EXPIRED}), [], at=NOW)
    await exclusions.insert(cancelled.model_copy(update={"state": ExclusionState.CANCELLED}), [], at=NOW)
    await exclusions.insert(running, [], at=NOW)

    assert (await exclusions.running_for("p-1")).id == running.id
    assert await exclusions.running_for("p-2") is None
    assert [e.id for e in await exclusions.history("p-1")] == [old.id, running.id, cancelled.id]


async def test_a_write_from_a_stale_read_is_refused(exclusions):
    _, exclusion, pending = new()
    await exclusions.insert(exclusion, pending, at=NOW)
    read = await exclusions.load(exclusion.id)
    reminder = due(exclusion, SE, NOW + timedelta(days=29))

    assert await exclusions.save(read, reminder.exclusion, entries(reminder), at=NOW)
    assert not await exclusions.save(read, reminder.exclusion, entries(reminder), at=NOW), "the same read cannot write twice"

    stored = await exclusions.load(exclusion.id)
    assert stored.exclusion == reminder.exclusion
    assert stored.outbox == pending + entries(reminder), "the events not yet published stay in the outbox"


async def test_published_events_leave_the_outbox_and_the_relay_finds_only_what_is_left(exclusions):
    _, first, first_pending = new(1)
    _, second, second_pending = new(2, person_id="p-2")
    await exclusions.insert(first, first_pending, at=NOW)
    await exclusions.insert(second, second_pending, at=NOW + timedelta(minutes=5))

    after = await exclusions.published(first.id, first_pending[0])
    await exclusions.outbox_emptied(after)

    assert after.outbox == []
    assert await exclusions.with_outbox(NOW + timedelta(hours=1)) == [str(second.id)]
    assert await exclusions.with_outbox(NOW + timedelta(minutes=1)) == []
    assert (await exclusions.load(first.id)).outbox_at is None


# --- timer claims ---------------------------------------------------------------------------------


async def test_a_due_exclusion_is_claimed_by_one_claimer_only_until_the_claim_expires(exclusions):
    _, exclusion, _ = new()
    await exclusions.insert(exclusion, [], at=NOW)
    at = exclusion.next_transition_at

    assert await exclusions.claim_due(at - timedelta(seconds=1), until=at, claimer="a") is None, "not due yet"
    claims = await asyncio.gather(*(exclusions.claim_due(at, until=at + timedelta(minutes=1), claimer=c) for c in "abcd"))

    assert [c.id for c in claims if c is not None] == [exclusion.id]
    assert await exclusions.claim_due(at + timedelta(seconds=59), until=at + timedelta(minutes=2), claimer="e") is None
    assert (await exclusions.claim_due(at + timedelta(minutes=1), until=at + timedelta(minutes=2), claimer="e")).id == exclusion.id


async def test_a_claim_makes_an_older_read_stale_and_a_transition_releases_the_claim(exclusions):
    _, exclusion, _ = new()
    await exclusions.insert(exclusion, [], at=NOW)
    before_claim = await exclusions.load(exclusion.id)
    at = exclusion.next_transition_at
    claimed = await exclusions.claim_due(at, until=at + timedelta(minutes=1), claimer="a")
    reminder = due(claimed.exclusion, SE, at)

    assert not await exclusions.save(before_claim, reminder.exclusion, [], at=at)
    assert await exclusions.save(claimed, reminder.exclusion, [], at=at)
    expiry_due = reminder.exclusion.next_transition_at
    assert (await exclusions.claim_due(expiry_due, until=expiry_due, claimer="b")).id == exclusion.id


# --- what runs once per command reads by _id -------------------------------------------------------


class Finds(monitoring.CommandListener):
    """Every ``find`` filter sent to the store (pymongo's command monitoring), by collection."""

    def __init__(self) -> None:
        self.filters: list[tuple[str, dict]] = []

    def started(self, event) -> None:
        if event.command_name == "find":
            self.filters.append((event.command["find"], dict(event.command.get("filter", {}))))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def scanning(filters: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The filters nx-27017 answers by reading the whole collection: ``$in`` on a field other than ``_id``."""
    return [
        (collection, query)
        for collection, query in filters
        if any(name != "_id" and isinstance(value, dict) and "$in" in value for name, value in query.items())
    ]


async def test_a_command_is_applied_with_reads_by_id_only(settings, exclusions):
    finds = Finds()
    client = AsyncMongoClient(settings.mongo, tz_aware=True, event_listeners=[finds])
    try:
        watched = MongoExclusions(client[settings.mongo_db])
        req, exclusion, pending = new(7)
        identifiers = ["national_id:7", "email:seven"]

        assert await watched.match_person(identifiers) == (None, [])
        await watched.save_person("p-7", identifiers, 1990, None)
        assert await watched.by_cause(req.id) is None
        assert await watched.insert(exclusion, pending, at=NOW)
        assert await watched.match_person(["email:seven"]) == ("p-7", identifiers)
        assert (await watched.by_cause(req.id)).id == exclusion.id

        assert finds.filters, "the listener saw the reads"
        assert scanning(finds.filters) == []
    finally:
        await client.close()


async def test_a_pointer_left_by_a_crash_before_the_write_is_not_believed(exclusions, database):
    req, exclusion, pending = new(8)
    await database["applied_causes"].insert_one({"_id": str(req.id), "exclusion_ids": [str(exclusion.id)]})
    await database["person_identifiers"].insert_one({"_id": "national_id:8", "person_ids": ["p-ghost"]})
    await database["persons"].insert_one({"_id": "p-ghost", "identifiers": ["email:other"]})

    assert await exclusions.by_cause(req.id) is None
    assert await exclusions.match_person(["national_id:8"]) == (None, [])

    assert await exclusions.insert(exclusion, pending, at=NOW)
    assert (await exclusions.by_cause(req.id)).id == exclusion.id


async def test_a_cause_applied_after_a_lost_race_is_found_where_it_was_applied(exclusions):
    _, first, _ = new(9)
    _, second, _ = new(10)
    await exclusions.insert(first, [], at=NOW)
    await exclusions.insert(second, [], at=NOW)
    extension = request(9)
    stale = await exclusions.load(first.id)
    await exclusions.save(stale, first.model_copy(update={"version": 2}), [], at=NOW)  # someone else wrote first

    applied = lambda e: e.model_copy(update={"causes": [*e.causes, str(extension.id)], "version": e.version + 1})  # noqa: E731
    assert not await exclusions.save(stale, applied(first), [], at=NOW)  # stale: refused, its pointer stays
    fresh = await exclusions.load(second.id)
    assert await exclusions.save(fresh, applied(second), [], at=NOW)

    assert (await exclusions.by_cause(extension.id)).id == second.id


async def test_documents_stored_before_the_pointers_existed_get_them_at_start(exclusions, database):
    req, exclusion, pending = new(11)
    await exclusions.save_person("p-11", ["national_id:11"], None, None)
    await exclusions.insert(exclusion, pending, at=NOW)
    await database["applied_causes"].delete_many({})
    await database["person_identifiers"].delete_many({})
    assert await exclusions.by_cause(req.id) is None

    assert await exclusions.backfill_pointers() == 2
    assert (await exclusions.by_cause(req.id)).id == exclusion.id
    assert await exclusions.find_person(["national_id:11"]) == "p-11"
    assert await exclusions.backfill_pointers() == 0
