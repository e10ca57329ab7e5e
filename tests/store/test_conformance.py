"""Every MongoDB query shape Selfex uses, and its repositories, on the real store."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from services.audit.chain import GENESIS, record_hash
from services.audit.repository import INDEXES as AUDIT_INDEXES
from services.audit.repository import Entry, MongoAuditLog
from services.blocking.domain import ActiveExclusion
from services.blocking.repository import INDEXES as BLOCKING_INDEXES
from services.blocking.repository import MongoActiveExclusions
from services.registration.domain import exclude
from services.registration.repository import INDEXES as REGISTRATION_INDEXES
from services.registration.repository import MongoExclusions
from shared.events import SCOPE_ALL, ExclusionRequestedPayload, ExclusionType, Game, RequestExclusion, Scope
from shared.idempotency import APPLIED_EVENTS_INDEXES, AppliedEvents
from shared.identity import Identity, uid_from_personnummer
from shared.store import ensure_indexes

pytestmark = pytest.mark.integration

# Whole milliseconds: BSON dates keep no finer time, so these round-trip exactly.
NOW = datetime(2025, 1, 31, 12, 0, 0, 123000, tzinfo=UTC)
SLOTS = Scope(types=frozenset({ExclusionType.GAMES}), games=frozenset({Game.SLOTS}))


async def ids(cursor) -> list:
    return [document["_id"] async for document in cursor]


# --- query shapes


async def test_an_inserted_document_is_found_by_its_id_as_it_was(database):
    document = {"_id": "p-1", "identifiers": ["email:a", "mobile:b"], "year_of_birth": 1990, "gender": None, "scope": {"types": ["GAMES"]}}
    await database["persons"].insert_one(document)

    assert await database["persons"].find_one({"_id": "p-1"}) == document
    assert await database["persons"].find_one({"_id": "nobody"}) is None


async def test_in_over_an_array_field_finds_a_document_holding_any_of_the_values_projected_to_its_id(database):
    await database["persons"].insert_many(
        [{"_id": "p-1", "identifiers": ["email:a", "mobile:b"]}, {"_id": "p-2", "identifiers": ["email:c"]}]
    )

    assert await database["persons"].find_one({"identifiers": {"$in": ["national_id:x", "mobile:b"]}}, {"_id": 1}) == {"_id": "p-1"}
    assert await database["persons"].find_one({"identifiers": {"$in": ["national_id:x"]}}) is None


async def test_in_over_an_indexed_array_field_finds_the_member(database):
    # Membership of one value is always asked with $in: nx-27017 answers {"array": value} wrongly
    # when the array is indexed (no match), so that shape is not used anywhere in Selfex.
    await database["exclusions"].create_index("request_ids")
    await database["exclusions"].insert_one({"_id": "x-1", "request_ids": ["r-1", "r-2"]})

    assert await database["exclusions"].find_one({"request_ids": {"$in": ["r-2"]}}, {"_id": 1}) == {"_id": "x-1"}
    assert await database["exclusions"].find_one({"request_ids": {"$in": ["r-3"]}}) is None


async def test_inserting_an_existing_id_raises_duplicate_key_error_and_changes_nothing(database):
    await database["persons"].insert_one({"_id": "p-1"})

    with pytest.raises(DuplicateKeyError):
        await database["persons"].insert_one({"_id": "p-1", "other": True})
    assert await database["persons"].find_one({"_id": "p-1"}) == {"_id": "p-1"}


async def test_add_to_set_each_appends_only_the_values_not_yet_there(database):
    await database["persons"].insert_one({"_id": "p-1", "identifiers": ["email:a", "mobile:b"]})

    await database["persons"].update_one({"_id": "p-1"}, {"$addToSet": {"identifiers": {"$each": ["mobile:b", "device:c", "device:c"]}}})

    assert (await database["persons"].find_one({"_id": "p-1"}))["identifiers"] == ["email:a", "mobile:b", "device:c"]


async def test_an_upsert_creates_the_document_then_sets_its_fields(database):
    collection = database["blocking_exclusions"]

    created = await collection.update_one({"_id": "x-1"}, {"$set": {"ends_at": NOW, "identifiers": ["email:a"]}}, upsert=True)
    updated = await collection.update_one({"_id": "x-1"}, {"$set": {"identifiers": ["email:a", "mobile:m"]}}, upsert=True)

    assert (created.upserted_id, created.matched_count) == ("x-1", 0)
    assert (updated.upserted_id, updated.matched_count, updated.modified_count) == (None, 1, 1)
    assert await collection.find_one({"_id": "x-1"}) == {"_id": "x-1", "ends_at": NOW, "identifiers": ["email:a", "mobile:m"]}
    assert await collection.count_documents({}) == 1


async def test_set_on_an_existing_document_keeps_a_datetime_a_datetime(database):
    await database["docs"].insert_one({"_id": "x-1", "ends_at": None})

    await database["docs"].update_one({"_id": "x-1"}, {"$set": {"ends_at": NOW}}, upsert=True)

    assert await database["docs"].find_one({"_id": "x-1"}) == {"_id": "x-1", "ends_at": NOW}


async def test_set_on_an_existing_document_keeps_a_boolean_a_boolean(database):
    await database["things"].insert_one({"_id": "b", "flag": True, "other": False})

    await database["things"].update_one({"_id": "b"}, {"$set": {"flag": False, "new": True}})

    found = await database["things"].find_one({"_id": "b"})
    assert found == {"_id": "b", "flag": False, "other": False, "new": True}
    assert [type(found[k]) for k in ("flag", "new")] == [bool, bool]
    assert await database["things"].count_documents({"flag": False}) == 1


async def test_a_tz_aware_datetime_comes_back_aware_in_utc_to_the_millisecond(database):
    assert database.client.codec_options.tz_aware, "create_client(settings) reads datetimes back aware"
    local = NOW.astimezone(timezone(timedelta(hours=1)))
    await database["times"].insert_one({"_id": 1, "utc": NOW, "local": local, "fine": NOW + timedelta(microseconds=456)})

    found = await database["times"].find_one({"_id": 1})

    assert (found["utc"], found["local"], found["fine"]) == (NOW, NOW, NOW)
    assert found["utc"].utcoffset() == found["local"].utcoffset() == timedelta(0)


async def test_none_matches_a_null_field_and_a_missing_one(database):
    await database["docs"].insert_many([{"_id": "null", "ends_at": None}, {"_id": "missing"}, {"_id": "set", "ends_at": NOW}])

    assert sorted(await ids(database["docs"].find({"ends_at": None}))) == ["missing", "null"]


async def test_gt_on_datetimes_compares_instants_whatever_the_offset(database):
    await database["docs"].insert_many(
        [
            {"_id": "past", "ends_at": NOW - timedelta(seconds=1)},
            {"_id": "now", "ends_at": NOW},
            {"_id": "later", "ends_at": NOW + timedelta(days=1)},
        ]
    )

    assert await ids(database["docs"].find({"ends_at": {"$gt": NOW.astimezone(timezone(timedelta(hours=2)))}})) == ["later"]


async def test_or_of_null_and_gt_finds_the_open_ended_and_the_not_yet_ended(database):
    await database["docs"].insert_many(
        [
            {"_id": "open", "ends_at": None},
            {"_id": "ended", "ends_at": NOW - timedelta(days=1)},
            {"_id": "running", "ends_at": NOW + timedelta(days=1)},
        ]
    )

    assert sorted(await ids(database["docs"].find({"$or": [{"ends_at": None}, {"ends_at": {"$gt": NOW}}]}))) == ["open", "running"]


async def test_find_one_sorted_descending_returns_the_highest(database):
    await database["audit_log"].insert_many([{"_id": "b", "seq": 2}, {"_id": "c", "seq": 10}, {"_id": "a", "seq": 1}])

    assert await database["audit_log"].find_one({}, sort=[("seq", DESCENDING)]) == {"_id": "c", "seq": 10}
    assert await database["audit_log"].find_one({}, sort=[("seq", ASCENDING)]) == {"_id": "a", "seq": 1}
    assert await database["empty"].find_one({}, sort=[("seq", DESCENDING)]) is None


async def test_a_duplicate_on_a_unique_secondary_index_names_the_field_and_a_duplicate_id_does_not(database):
    await database["audit_log"].create_indexes([IndexModel([("seq", ASCENDING)], unique=True)])
    await database["audit_log"].insert_one({"_id": "e-1", "seq": 1})

    with pytest.raises(DuplicateKeyError) as same_seq:
        await database["audit_log"].insert_one({"_id": "e-2", "seq": 1})
    with pytest.raises(DuplicateKeyError) as same_id:
        await database["audit_log"].insert_one({"_id": "e-1", "seq": 2})

    assert "seq" in str(same_seq.value)
    assert "seq" not in str(same_id.value)  # the error names the unique index that refused the write
    assert await database["audit_log"].count_documents({}) == 1


def declared(models) -> set:
    return {(tuple(m.document["key"].items()), m.document.get("unique", False), m.document.get("expireAfterSeconds")) for m in models}


async def created(collection) -> set:
    # By key and options: nx-27017 reports index names of its own, not the ones pymongo asked for.
    info = await collection.index_information()
    return {(tuple(i["key"]), i.get("unique", False), i.get("expireAfterSeconds")) for i in info.values()}


@pytest.mark.parametrize(
    "indexes",
    [REGISTRATION_INDEXES, BLOCKING_INDEXES, AUDIT_INDEXES, APPLIED_EVENTS_INDEXES],
    ids=["registration", "blocking", "audit", "applied-events"],
)
async def test_every_index_a_service_declares_is_created_with_its_options_and_again_changes_nothing(database, indexes):
    await ensure_indexes(database, indexes)
    before = {c: await created(database[c]) for c in indexes}
    await ensure_indexes(database, indexes)

    assert {c: await created(database[c]) for c in indexes} == before
    assert all(declared(models) <= before[c] for c, models in indexes.items())


async def test_a_ttl_index_is_created_with_its_expiry(database):
    await ensure_indexes(database, APPLIED_EVENTS_INDEXES)

    assert ((("applied_at", 1),), False, 30 * 24 * 3600) in await created(database["applied_events"])


async def test_drop_database_removes_every_collection(database):
    await database["persons"].insert_one({"_id": "p-1"})

    await database.client.drop_database(database.name)

    assert await database.list_collection_names() == []
    assert await database["persons"].find_one({}) is None


# --- registration and idempotency


def request(duration: str = "+30d") -> RequestExclusion:
    identity = Identity(uid=uid_from_personnummer("199001011234"))
    return RequestExclusion(source="test", operator_id="op-1", payload=ExclusionRequestedPayload(identity=identity, duration=duration))


async def test_saving_a_person_twice_merges_their_identifiers(database):
    exclusions = MongoExclusions(database)

    await exclusions.save_person("p-1", ["email:a", "national_id:x"], 1990, "F")
    await exclusions.save_person("p-1", ["national_id:x", "mobile:m"], None, None)

    person = {"_id": "p-1", "identifiers": ["email:a", "national_id:x", "mobile:m"], "year_of_birth": 1990, "gender": "F"}
    assert await database["persons"].find_one({"_id": "p-1"}) == person


async def test_a_person_is_found_by_any_of_their_identifiers(database):
    exclusions = MongoExclusions(database)
    await exclusions.save_person("p-1", ["email:a", "national_id:x"], None, None)
    await exclusions.save_person("p-2", ["email:b"], None, None)

    assert await exclusions.find_person(["mobile:unknown", "national_id:x"]) == "p-1"
    assert await exclusions.find_person(["email:b"]) == "p-2"
    assert await exclusions.find_person(["mobile:unknown"]) is None


@pytest.mark.parametrize("duration", ["+30d", "+12m"], ids=["ending", "until-further-notice"])
async def test_adding_the_same_request_twice_returns_the_exclusion_stored_first(database, duration):
    await ensure_indexes(database, REGISTRATION_INDEXES)
    exclusions, req = MongoExclusions(database), request(duration)
    first = exclude(req, person_id="p-1", identifiers=["national_id:x"], now=NOW)

    assert await exclusions.add(first) == first
    again = await exclusions.add(exclude(req, person_id="p-1", identifiers=["national_id:x"], now=NOW + timedelta(hours=1)))

    assert again == first
    assert await exclusions.get(first.id) == first
    assert await database["exclusions"].count_documents({}) == 1
    assert await exclusions.get(uuid.uuid4()) is None


async def test_an_event_is_applied_the_first_time_only(database):
    await ensure_indexes(database, APPLIED_EVENTS_INDEXES)
    applied, elsewhere = AppliedEvents(database, "registration"), AppliedEvents(database, "blocking")

    assert (await applied.first_time("e-1"), await applied.first_time("e-1")) == (True, False)
    assert (await applied.seen("e-1"), await applied.seen("e-2"), await elsewhere.seen("e-1")) == (True, False, False)


# --- blocking


def active(ends_at: datetime | None, scope: Scope = SCOPE_ALL) -> ActiveExclusion:
    return ActiveExclusion(uuid.uuid4(), frozenset({"national_id:x", "email:a"}), scope, NOW - timedelta(days=1), ends_at)


async def in_force(database, now: datetime = NOW) -> list[ActiveExclusion]:
    return [each async for each in MongoActiveExclusions(database).in_force(now)]


async def test_a_saved_exclusion_is_in_force_until_it_ends(database):
    running, ended = active(NOW + timedelta(days=30), SLOTS), active(NOW - timedelta(seconds=1))
    await MongoActiveExclusions(database).save(running)
    await MongoActiveExclusions(database).save(ended)

    assert await in_force(database) == [running]
    assert await in_force(database, NOW + timedelta(days=30)) == []


async def test_an_exclusion_without_an_end_is_always_in_force(database):
    open_ended = active(None)
    await MongoActiveExclusions(database).save(open_ended)

    assert await in_force(database, NOW + timedelta(days=365 * 50)) == [open_ended]


async def test_saving_an_exclusion_again_replaces_it(database):
    repository, first = MongoActiveExclusions(database), active(NOW + timedelta(days=1))
    extended = ActiveExclusion(first.exclusion_id, first.identifiers | {"mobile:m"}, SLOTS, first.starts_at, None)

    await repository.save(first)
    await repository.save(extended)

    assert await in_force(database, NOW + timedelta(days=2)) == [extended]


# --- audit


def record(n: int, partition: int = 0, event_id: str | None = None) -> Entry:
    event = {"id": event_id or f"e-{partition}-{n}", "type": "decision.made", "occurred_at": "2025-01-31T12:00:00+00:00"}
    return Entry("t.decisions", partition, n, "2025-01-31T12:00:00.000+00:00", event)


async def entries(database, chain: str = "t.decisions/0") -> list[dict]:
    topic, partition = chain.rsplit("/", 1)
    return [entry async for entry in database["audit_log"].find({"topic": topic, "partition": int(partition)}, sort=[("seq", ASCENDING)])]


async def test_audit_records_are_chained_per_partition_by_their_hashes(database):
    await ensure_indexes(database, AUDIT_INDEXES)
    log = MongoAuditLog(database)

    assert await log.append([record(1), record(1, partition=1), record(2)]) == 3

    first, second = await entries(database)
    assert (first["seq"], first["prev_hash"], second["seq"], second["prev_hash"]) == (1, GENESIS, 2, first["hash"])
    assert (first["hash"], second["hash"]) == (record_hash(GENESIS, first["body"]), record_hash(first["hash"], second["body"]))
    [other] = await entries(database, "t.decisions/1")
    assert (other["seq"], other["prev_hash"]) == (1, GENESIS)


async def test_appending_the_same_event_or_the_same_offset_twice_records_it_once(database):
    await ensure_indexes(database, AUDIT_INDEXES)
    log = MongoAuditLog(database)

    assert await log.append([record(1), record(2)]) == 2
    assert await log.append([record(2), record(3, event_id="e-0-1")]) == 0  # redelivered; republished
    assert await MongoAuditLog(database).append([record(1), record(2), record(4)]) == 1  # a new writer reads the tail
    assert [e["offset"] for e in await entries(database)] == [1, 2, 4]


async def test_a_writer_with_a_stale_tail_chains_onto_the_store_s_tail(database):
    await ensure_indexes(database, AUDIT_INDEXES)
    one, other = MongoAuditLog(database), MongoAuditLog(database)
    await one.append([record(1)])
    await other.append([record(2)])  # a new writer reads the tail from the store: seq 1

    # one still believes the tail is seq 1: seq 2 is taken, so it reads the tail again and appends at 3
    assert await one.append([record(3), record(4, event_id="e-0-2")]) == 1  # and leaves out an id the store holds

    chain = await entries(database)
    assert [e["seq"] for e in chain] == [1, 2, 3]
    assert [e["prev_hash"] for e in chain] == [GENESIS] + [e["hash"] for e in chain[:-1]]
