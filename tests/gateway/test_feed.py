"""The gateway fails closed on its feed, on the real broker and store: while its lookup is not known
to hold every exclusion (starting behind the lifecycle topic, its feed held or dead), every check
that could answer "not excluded" answers unavailable instead (GAMSTOP 503, ChipOut 500, native 503
``unavailable``) and ``/readyz`` says why; once the feed has caught up, the excluded person is ``Y``."""

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from shared.broker import ensure_topics
from shared.events import SCOPE_ALL, ExclusionActivated, ExclusionSnapshot
from shared.identity import Hasher, Identity
from tests.gateway.conftest import new_person, new_uid, settings_for, world
from tests.support import Publisher, eventually

pytestmark = pytest.mark.integration


class Person:
    """Someone with a GAMSTOP identity and a ChipOut uid, and the snapshot that excludes them."""

    def __init__(self, hasher: Hasher) -> None:
        self.form = new_person()
        self.uid = new_uid()
        identity = Identity(
            uid=self.uid,
            first_name=self.form["firstName"],
            last_name=self.form["lastName"],
            date_of_birth=date.fromisoformat(self.form["dateOfBirth"]),
            postcode=self.form["postcode"],
            email=self.form["email"],
        )
        now = datetime.now(UTC)
        self.snapshot = ExclusionSnapshot(
            exclusion_id=uuid.uuid4(),
            identifiers=sorted(hasher.identifiers(identity).values()),
            scope=SCOPE_ALL,
            jurisdiction="SE",
            starts_at=now - timedelta(hours=1),
            ends_at=now + timedelta(days=30),
        )

    def activated(self) -> ExclusionActivated:
        return ExclusionActivated(source="registration", subject=f"person-{self.uid[:12]}", payload=self.snapshot)


async def answers(gw, person: Person) -> dict[str, object]:
    """The person as each API answers now: GAMSTOP (single and batch), ChipOut, native (single and batch)."""
    key = {"X-API-Key": gw.keys["checker"]}
    gamstop = await gw.client.post("/", data=person.form, headers=key)
    batch = await gw.client.post("/gamstop/v2/batch", json=[person.form], headers=key)
    chipout = await gw.client.get("/v1.3/customer-status", params={"key": gw.keys["checker"], "uid": person.uid})
    native = await gw.client.post("/v1/checks", json={"identity": {"uid": person.uid}}, headers=key)
    natives = await gw.client.post("/v1/checks/batch", json={"persons": [{"identity": {"uid": person.uid}}]}, headers=key)
    status = await gw.client.post("/v1/persons/status", json={"identity": {"uid": person.uid}}, headers=key)
    return {"gamstop": gamstop, "batch": batch, "chipout": chipout, "native": native, "natives": natives, "status": status}


def unavailable(found: dict) -> None:
    """Every answer refuses to say: no Y/N/P, no 204, no check result."""
    gamstop, batch = found["gamstop"], found["batch"]
    assert gamstop.status_code == 503 and gamstop.headers["Retry-After"] and "x-exclusion" not in gamstop.headers
    assert batch.status_code == 503 and batch.headers["Retry-After"]
    assert found["chipout"].status_code == 500, "ChipOut knows only 500 for a failure of ours; never 204"
    assert found["chipout"].json()["status"] == "unavailable"
    for name in ("native", "natives", "status"):
        answer = found[name]
        assert answer.status_code == 503 and answer.headers["Retry-After"], name
        assert answer.json()["status"] == "unavailable" and answer.json()["exclusion"] == "unavailable", name


def excluded(found: dict) -> bool:
    return (
        found["gamstop"].status_code == 200
        and found["gamstop"].headers["X-Exclusion"] == "Y"
        and found["batch"].status_code == 200
        and found["batch"].json()[0]["exclusion"] == "Y"
        and found["chipout"].status_code == 200
        and found["native"].status_code == 200
        and found["native"].json()["excluded"] is True
        and found["natives"].status_code == 200
        and found["natives"].json()["results"][0]["excluded"] is True
        and found["status"].status_code == 200  # its details are registration's documents: none here
    )


def never_not_excluded(found: dict) -> None:
    """A wrong allow is harm: whatever the moment, the answer is Y or unavailable."""
    gamstop = found["gamstop"]
    assert gamstop.status_code == 503 or gamstop.headers["X-Exclusion"] == "Y", "GAMSTOP answered N for an excluded person"
    assert found["chipout"].status_code in (200, 500), "ChipOut answered 204 for an excluded person"
    native = found["native"]
    assert native.status_code == 503 or native.json()["excluded"] is True, "the native check answered not excluded"


async def readyz(gw):
    return await gw.client.get("/readyz")


def feed_consumer(gw):
    """The aiokafka consumer of the gateway's lifecycle subscriber (the lookup's feed)."""
    return gw.app.state.feed._subscriber().consumer


async def test_a_gateway_starting_behind_the_lifecycle_topic_is_unavailable_until_it_has_caught_up(servers):
    settings = settings_for(servers)
    hasher = Hasher.from_settings(settings)
    await ensure_topics(settings)
    person = Person(hasher)
    async with Publisher(settings) as publish:
        for _ in range(150):  # the topic holds a backlog when the gateway starts
            await publish.event(Person(hasher).activated())
        await publish.event(person.activated())

    async with world(servers, registration=False, ready=False, topic_prefix=settings.topic_prefix, mongo_db=settings.mongo_db) as gw:
        seen = []

        async def caught_up():
            found = await answers(gw, person)
            never_not_excluded(found)
            seen.append((await readyz(gw)).status_code)
            return excluded(found)

        await eventually(caught_up, timeout=60, what="the gateway to catch up and answer Y")
        assert (await readyz(gw)).status_code == 200

    assert seen[0] == 503 or seen == [200], "not ready while behind"


async def test_a_held_feed_makes_every_check_unavailable_and_not_ready_then_recovers(servers):
    async with world(servers, registration=False, gateway_feed_max_lag_seconds=1.0, gateway_feed_poll_seconds=0.1) as gw:
        hasher = Hasher.from_settings(gw.settings)
        person = Person(hasher)
        assert (await readyz(gw)).json() == {"status": "ready"}
        consumer = feed_consumer(gw)
        consumer.pause(*consumer.assignment())  # the feed stops applying, as with a broker out of reach
        async with Publisher(gw.settings) as publish:
            await publish.event(person.activated())

            async def not_ready():
                answer = await readyz(gw)
                return answer if answer.status_code == 503 else None

            answer = await eventually(not_ready, timeout=20, what="the lagging feed to make the gateway not ready")
            assert "feed" in answer.json()["reasons"] and answer.headers["Retry-After"]
            unavailable(await answers(gw, person))

            consumer.resume(*consumer.assignment())

            async def recovered():
                found = await answers(gw, person)
                never_not_excluded(found)
                return excluded(found)

            await eventually(recovered, timeout=30, what="the feed to catch up and the person to be Y")
            assert (await readyz(gw)).status_code == 200


async def test_a_dead_feed_consumer_is_noticed_restarted_and_never_answers_not_excluded(servers):
    async with world(servers, registration=False, gateway_feed_poll_seconds=0.1) as gw:
        person = Person(Hasher.from_settings(gw.settings))
        feed = gw.app.state.feed
        consumer = feed_consumer(gw)
        consumer.pause(*consumer.assignment())  # so the event below is not applied before the task dies
        async with Publisher(gw.settings) as publish:
            await publish.event(person.activated())
        for task in feed._subscriber().tasks:
            task.cancel()  # the consumer task dies
        await eventually(lambda: asyncio.sleep(0, feed.restarts == 1), timeout=10, what="the watch to restart the consumer")

        async def recovered():
            found = await answers(gw, person)
            never_not_excluded(found)
            return excluded(found)

        await eventually(recovered, timeout=30, what="the restarted feed to catch up and the person to be Y")
        assert (await readyz(gw)).status_code == 200


async def test_a_write_read_back_is_seen_at_once_while_the_feed_is_current(servers):
    """Read-your-writes after ChipOut's 201 holds with the watch in place."""
    from tests.gateway.test_chipout import exclusion

    async with world(servers) as gw:
        uid = new_uid()
        created = await gw.client.post("/api/v1.3/exclude-customers", json=exclusion(gw.keys["excluder"], uid))
        status = await gw.client.get("/v1.3/customer-status", params={"key": gw.keys["checker"], "uid": uid})
    assert created.status_code == 201 and status.status_code == 200
