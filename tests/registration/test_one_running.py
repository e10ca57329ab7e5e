"""One running exclusion per person, whatever races: the store's guard and the commands' key."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import TopicPartition

from services.registration.app import create_app
from services.registration.domain import exclude, person_identifiers, primary_identifier
from services.registration.outbox import entries
from services.registration.repository import INDEXES, AlreadyRunningError, MongoExclusions
from services.registration.transitions import due, registered
from shared import topics
from shared.events import Channel, ExclusionRequestedPayload, LiftRequestedPayload, RequestExclusion, RequestLift
from shared.identity import Hasher, Identity, uid_from_personnummer
from shared.policies import shipped_policies
from shared.store import ensure_indexes
from tests.registration.harness import ManualClock, request
from tests.support import Publisher, TopicReader, eventually

NOW = datetime(2025, 1, 31, 12, 0, 0, 123000, tzinfo=UTC)
SE = shipped_policies()["SE"]


def new(identifiers: list[str], *, person_id: str = "p-1", now: datetime = NOW):
    req = RequestExclusion(
        source="test",
        payload=ExclusionRequestedPayload(
            identity=Identity(uid=uid_from_personnummer("199001011234")), duration="+30d", channel=Channel.OPERATOR
        ),
    )
    exclusion = exclude(req, person_id=person_id, identifiers=identifiers, now=now, policy=SE)
    return exclusion, entries(registered(exclusion, req, now))


HASHER = Hasher(b"test-secret-0123456789abcdef")
PERSONNUMMER = "199001011234"
ANNA = dict(first_name="Anna", last_name="Svensson", date_of_birth="1990-01-01", postcode="123 45")


# --- the commands' key ------------------------------------------------------------------------------


def test_one_persons_requests_share_a_key_however_they_name_them_and_it_is_no_raw_data():
    by_uid = request(Identity(uid=uid_from_personnummer(PERSONNUMMER), email="anna@example.se"), "+30d")  # ChipOut
    by_number = request(Identity(national_id="19900101-1234", **ANNA), "+6m")  # native
    portal = request(Identity(national_id=PERSONNUMMER, mobile="0701234567"), "+30d", channel=Channel.PORTAL)
    lift = RequestLift(source="test", payload=LiftRequestedPayload(identity=Identity(national_id=PERSONNUMMER)))
    keys = {c.for_person(HASHER, "SE").key() for c in (by_uid, by_number, portal, lift)}

    assert len(keys) == 1
    [key] = keys
    assert key.startswith(b"national_id:") and PERSONNUMMER.encode() not in key
    assert uid_from_personnummer(PERSONNUMMER).encode() not in key, "keyed: not the bare SHA-256 of the number"
    assert key.decode() == HASHER.identifiers(Identity(national_id=PERSONNUMMER))[kind_national_id()]


def test_without_a_national_id_the_next_strongest_identifier_keys_and_registration_agrees():
    by_name = request(Identity(email="ANNA@example.se", mobile="+46701234567", **ANNA), "+30d").for_person(HASHER, "SE")
    by_email = request(Identity(email="anna@example.se"), "+30d").for_person(HASHER, "SE")
    by_mobile = request(Identity(mobile="070-123 45 67"), "+30d").for_person(HASHER, "SE")

    assert by_name.subject.startswith("name_dob_postcode:") and by_email.subject.startswith("email:")
    assert by_mobile.subject == request(Identity(mobile="+46 70 123 45 67"), "+1d").for_person(HASHER, "SE").subject
    for command in (by_name, by_email, by_mobile):
        identifiers = person_identifiers(HASHER.identifiers(command.payload.identity, "SE"))
        assert primary_identifier(identifiers) == command.subject


def test_a_lift_naming_only_its_exclusion_is_keyed_by_the_person_the_caller_names():
    lift = RequestLift(source="test", payload=LiftRequestedPayload(exclusion_id="00000000-0000-0000-0000-000000000001"))

    assert lift.for_person(HASHER, "SE").key() is None
    assert lift.for_person(HASHER, "SE", identity=Identity(email="anna@example.se")).key() == (
        request(Identity(email="Anna@Example.se"), "+30d").for_person(HASHER, "SE").key()
    )


def kind_national_id():
    from shared.identity import IdentifierKind

    return IdentifierKind.NATIONAL_ID


# --- the store's guard ------------------------------------------------------------------------------


@pytest.fixture
async def exclusions(database) -> MongoExclusions:
    await ensure_indexes(database, INDEXES)
    return MongoExclusions(database)


@pytest.mark.integration
async def test_two_exclusions_of_one_person_stored_at_once_make_one_and_name_it_to_the_other(exclusions, database):
    # Two requests for a new person, each with a person id of its own (neither saw the other's).
    first, first_pending = new(["email:anna", "national_id:1"], person_id="p-a")
    second, second_pending = new(["national_id:1", "mobile:070"], person_id="p-b")

    outcomes = await asyncio.gather(
        exclusions.insert(first, first_pending, at=NOW), exclusions.insert(second, second_pending, at=NOW), return_exceptions=True
    )

    stored = await database["exclusions"].find({}).to_list(None)
    assert len(stored) == 1, f"two running exclusions for one person: {outcomes}"
    [refused] = [o for o in outcomes if isinstance(o, AlreadyRunningError)]
    assert refused.exclusion_id == stored[0]["_id"]
    assert await exclusions.running_claims(stored[0]["_id"]) == sorted(stored[0]["identifiers"])


@pytest.mark.integration
async def test_an_ended_exclusion_frees_its_identifiers_for_the_next_one(exclusions, database):
    first, pending = new(["national_id:1"])
    await exclusions.insert(first, pending, at=NOW)
    read = await exclusions.load(first.id)
    reminder = due(first, SE, first.next_transition_at)
    await exclusions.save(read, reminder.exclusion, entries(reminder), at=reminder.exclusion.starts_at)
    read = await exclusions.load(first.id)
    expiry = due(read.exclusion, SE, read.exclusion.ends_at)
    assert expiry.exclusion.state.value == "expired"

    with pytest.raises(AlreadyRunningError):
        await exclusions.insert(new(["national_id:1"], now=NOW + timedelta(days=1))[0], [], at=NOW + timedelta(days=1))
    assert await exclusions.save(read, expiry.exclusion, entries(expiry), at=read.exclusion.ends_at)
    assert await exclusions.running_claims(first.id) == []

    later = NOW + timedelta(days=40)
    second, _ = new(["national_id:1"], now=later)
    assert await exclusions.insert(second, [], at=later)
    assert await exclusions.running_claims(second.id) == ["national_id:1"]


@pytest.mark.integration
async def test_a_claim_left_by_an_exclusion_that_ended_without_releasing_it_is_taken_over(exclusions, database):
    first, _ = new(["national_id:1"])
    await exclusions.insert(first, [], at=NOW)
    await database["exclusions"].update_one({"_id": str(first.id)}, {"$set": {"state": "lifted"}})  # a crash before the release

    later = NOW + timedelta(days=1)
    second, _ = new(["national_id:1"], now=later)
    assert await exclusions.insert(second, [], at=later)
    assert await exclusions.running_claims(second.id) == ["national_id:1"]


# --- two registration replicas, one new person -------------------------------------------------------


@pytest.mark.integration
async def test_first_requests_for_one_person_at_two_replicas_at_once_make_one_exclusion_and_extend_it(settings, database):
    """Requests that reach different partitions (keyed by different identifiers of one person) race at two replicas."""
    settings = settings.model_copy(update={"registration_timer_seconds": 0})
    clock = ManualClock()
    gate = FirstLookups(parties=2)  # the two replicas look the new person up before either stores anything
    replicas = [create_app(settings, database=Gated(database, gate), clock=clock) for _ in range(2)]
    anna = Identity(uid=uid_from_personnummer(PERSONNUMMER), email="anna@example.se")
    commands = [
        request(anna, "+30d").for_person(HASHER, "SE"),
        request(Identity(email="anna@example.se"), "+6m").for_person(HASHER, "SE"),
        request(Identity(email="Anna@example.se", mobile="0701234567"), "+4m").for_person(HASHER, "SE"),
    ]
    async with replicas[0], replicas[1], Publisher(settings) as publisher, TopicReader(settings, topics.EXCLUSION_LIFECYCLE) as lifecycle:
        await eventually(lambda: _both_consume(replicas, settings), what="both replicas to hold partitions of the commands topic")
        # One command on each partition, all at once: at least two of them reach different replicas.
        await asyncio.gather(
            *(
                publisher.producer.send_and_wait(
                    settings.topic(topics.EXCLUSION_COMMANDS), command.model_dump_json().encode(), key=command.key(), partition=partition
                )
                for partition, command in enumerate(commands)
            )
        )
        events = await lifecycle.wait_for(lambda m: m["causation_id"] in {str(c.id) for c in commands}, count=3)

    assert sorted(e["type"] for e in events) == ["exclusion.activated", "exclusion.extended", "exclusion.extended"]
    stored = await database["exclusions"].find({}).to_list(None)
    assert len(stored) == 1, [(s["_id"], s["person_id"], s["state"]) for s in stored]
    assert {e["payload"]["exclusion_id"] for e in events} == {stored[0]["_id"]}
    assert stored[0]["duration"] == "+6m" and sorted(stored[0]["request_ids"]) == sorted(str(c.id) for c in commands)
    # Not asserted: one person document. A replica that lost the race may already have written the
    # person under the id of its own strongest identifier (e-mail rather than national id); the
    # exclusion is one either way. Seen once in CI; left for the person-merging work.


class FirstLookups:
    """Holds the first ``parties`` person lookups until all have read: the race, made certain."""

    def __init__(self, parties: int) -> None:
        self.barrier = asyncio.Barrier(parties)
        self.left = parties

    async def wait(self) -> None:
        if self.left <= 0:
            return
        self.left -= 1
        try:
            async with asyncio.timeout(10):
                await self.barrier.wait()
        except (TimeoutError, asyncio.BrokenBarrierError):
            pass  # only one came: nothing to hold back


class Gated:
    """The real database, but a ``persons.find`` answer waits at the gate before it is returned."""

    def __init__(self, database, gate: FirstLookups) -> None:
        self._database, self._gate = database, gate

    def __getattr__(self, name):
        return getattr(self._database, name)

    def __getitem__(self, name: str):
        collection = self._database[name]
        return _GatedPersons(collection, self._gate) if name == "persons" else collection


class _GatedPersons:
    def __init__(self, collection, gate: FirstLookups) -> None:
        self._collection, self._gate = collection, gate

    def __getattr__(self, name):
        return getattr(self._collection, name)

    def find(self, *args, **kwargs):
        cursor, gate = self._collection.find(*args, **kwargs), self._gate

        class Lookup:
            async def to_list(self, *a, **k):
                found = await cursor.to_list(*a, **k)
                await gate.wait()  # each has read who the person is; now either may write
                return found

        return Lookup()


async def _both_consume(replicas, settings) -> bool:
    topic = settings.topic(topics.EXCLUSION_COMMANDS)
    held = []
    for app in replicas:
        partitions = set()
        for subscriber in app.broker.subscribers:
            consumer = getattr(subscriber, "consumer", None)
            if consumer is not None:
                partitions |= {tp for tp in consumer.assignment() if tp.topic == topic}
        held.append(partitions)
    return all(held) and set().union(*held) == {TopicPartition(topic, p) for p in range(settings.topic_partitions)}
