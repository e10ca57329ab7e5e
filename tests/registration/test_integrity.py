"""Registration keeps its promises on the real broker and store: one person however they are named,
never shortened, exactly one effect and one event per command however often it is delivered, the
event out exactly once after a crash between the write and the publish, and refusals parked with why.
"""

import json
from collections import Counter
from datetime import datetime, timedelta

import pytest
from aiokafka.errors import KafkaConnectionError

from services.registration.app import create_app
from shared import topics
from shared.events import CancelExclusion, CancellationPayload, Channel, Event
from shared.identity import Identity
from tests.registration.harness import START, ManualClock, failed, lift, person, registration, request, unverified_lift, verified
from tests.support import Publisher, TopicReader, dead_letter_original, eventually

pytestmark = pytest.mark.integration


def at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


# --- one person, however named -------------------------------------------------------------------------


async def test_a_request_naming_a_known_person_by_another_identifier_extends_their_exclusion(settings, database):
    anna = dict(first_name="Anna", last_name="Svensson", date_of_birth="1990-01-01", postcode="123 45")
    async with registration(settings, database) as reg:
        first = await reg.handle(request(person(1, email="anna@example.se"), "+30d"))
        # The same person by name, date of birth and postcode, with a new mobile: no national id this time.
        second = await reg.handle(request(Identity(email="ANNA@example.se", mobile="+46701234567", **anna), "+60d"))
        # And then by that mobile alone.
        third = await reg.handle(request(Identity(mobile="0701234567"), "+10d"))

        assert second["type"] == third["type"] == "exclusion.extended"
        assert first["subject"] == second["subject"] == third["subject"]
        exclusion_id = first["payload"]["exclusion_id"]
        assert second["payload"]["exclusion_id"] == third["payload"]["exclusion_id"] == exclusion_id
        kinds = sorted(h.split(":")[0] for h in third["payload"]["identifiers"])
        assert kinds == ["email", "mobile", "name_dob_postcode", "national_id"], "every identifier merged"
        assert await database["persons"].count_documents({}) == 1
        assert sorted((await database["persons"].find_one({}))["identifiers"]) == sorted(third["payload"]["identifiers"])
        assert await database["exclusions"].count_documents({}) == 1

        # Once it has ended, a new request starts a new exclusion and the history keeps both.
        await reg.tick(days=61)
        await reg.event(exclusion_id, "exclusion.expired")
        again = await reg.handle(request(Identity(email="anna@example.se"), "+30d"))
        assert again["type"] == "exclusion.activated"
        assert again["subject"] == first["subject"] and again["payload"]["exclusion_id"] != exclusion_id
        history = await database["exclusions"].find({"person_id": first["subject"]}).sort("created_at", 1).to_list(None)
        assert [h["state"] for h in history] == ["expired", "active"]


async def test_extension_takes_the_later_end_and_an_attempted_shortening_changes_nothing(settings, database):
    async with registration(settings, database) as reg:
        identity = person(1)
        first = await reg.handle(request(identity, "+60d"))
        exclusion_id = first["payload"]["exclusion_id"]

        reg.clock.advance(days=10)
        shorter = await reg.handle(request(identity, "+30d"))
        assert shorter["type"] == "exclusion.extended"
        assert at(shorter["payload"]["ends_at"]) == START + timedelta(days=60), "never shortened"
        assert "never shortened" in shorter["payload"]["reason"]

        longer = await reg.handle(request(identity, "+90d"))
        assert at(longer["payload"]["ends_at"]) == START + timedelta(days=100)
        assert longer["payload"]["duration"] == "+90d" and longer["payload"]["reason"] is None

        until_further_notice = await reg.handle(request(identity, "+12m"))
        assert until_further_notice["payload"]["ends_at"] is None

        stored = await reg.stored(exclusion_id)
        assert stored["ends_at"] is None and stored["version"] == 4 and len(stored["request_ids"]) == 4
        assert stored["next_transition_at"] is None, "no reminder, no expiry any more"


async def test_a_new_request_withdraws_a_pending_lift(settings, database):
    async with registration(settings, database) as reg:
        identity = person(1)
        exclusion_id = (await reg.handle(request(identity, "+6m", "UK")))["payload"]["exclusion_id"]
        reg.clock.advance(days=200)
        requested = await reg.handle(await reg.lift(exclusion_id))
        assert requested["type"] == "exclusion.lift_requested"

        withdrawn = await reg.handle(request(identity, "+6m", "UK"))

        assert (withdrawn["type"], withdrawn["payload"]["state"], withdrawn["payload"]["lift_effective_at"]) == (
            "exclusion.extended",
            "active",
            None,
        )
        assert await reg.tick(days=2) == 0, "the lift does not take effect"
        assert (await reg.stored(exclusion_id))["state"] == "active"


# --- redelivery ---------------------------------------------------------------------------------------


async def test_a_redelivered_command_or_verification_has_one_effect_and_one_event(settings, database):
    async with registration(settings, database) as reg:
        marker = 100

        async def twice(message: Event, key: bytes) -> None:
            """Deliver the message twice, then a new request on the same partition: once that is
            handled, both deliveries were."""
            nonlocal marker
            marker += 1
            then = request(person(marker), "+30d")
            await reg.send_in_order(message, message, then, key=key)
            await reg.caused_by(then)

        new = request(person(1), "+30d")
        await twice(new, b"p1")
        exclusion_id = (await reg.caused_by(new))[0]["payload"]["exclusion_id"]
        extension = request(person(1), "+60d")
        await twice(extension, b"p1")
        refused_lift = await reg.lift(exclusion_id)
        await twice(refused_lift, exclusion_id.encode())
        await reg.caused_by(refused_lift)  # a verified lift travels on the verification topic, not the markers'

        uk = (await reg.handle(request(person(2), "+6m", "UK")))["payload"]["exclusion_id"]
        reg.clock.advance(days=200)
        uk_lift = await reg.lift(uk)
        await twice(uk_lift, uk.encode())
        await reg.caused_by(uk_lift)

        portal = (await reg.handle(request(person(3), "+30d", channel=Channel.PORTAL)))["payload"]["exclusion_id"]
        proved = verified(portal)
        await twice(proved, portal.encode())
        failing = (await reg.handle(request(person(4), "+30d", channel=Channel.PORTAL)))["payload"]["exclusion_id"]
        gave_up = failed(failing)
        await twice(gave_up, failing.encode())
        # The markers travel on the commands topic, the verification outcomes on their own: wait for
        # the outcomes' effects before counting.
        await reg.caused_by(proved)
        await reg.caused_by(gave_up)

        await reg.lifecycle._drain()
        events = reg.lifecycle.messages()
        copies = Counter(m["id"] for m in events)
        assert max(copies.values()) == 1, "no event published twice"
        by_cause = Counter(m["causation_id"] for m in events)
        for command in (new, extension, refused_lift, uk_lift):
            assert by_cause[str(command.id)] == 1
        assert await database["exclusions"].count_documents({"person_id": events[0]["subject"]}) == 1
        stored = await reg.stored(exclusion_id)
        assert stored["request_ids"] == [str(new.id), str(extension.id), str(refused_lift.id)]
        assert stored["version"] == 3
        assert [m["type"] for m in events if m["payload"]["exclusion_id"] == portal] == ["exclusion.requested", "exclusion.activated"]
        assert [m["type"] for m in events if m["payload"]["exclusion_id"] == failing] == ["exclusion.requested", "exclusion.cancelled"]
        await reg.tick(days=1)
        await reg.event(uk, "exclusion.lifted")  # exactly one


# --- crash safety -------------------------------------------------------------------------------------


class Outage:
    """A broker that fails the next ``failures`` publishes after the state was written."""

    def __init__(self, publish, failures: int, error: Exception) -> None:
        self.publish, self.failures, self.error, self.attempts = publish, failures, error, 0

    async def __call__(self, event: Event) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise self.error
        await self.publish(event)


async def test_a_crash_between_the_state_write_and_the_publish_still_publishes_the_event_exactly_once(settings, database):
    settings = settings.model_copy(update={"registration_timer_seconds": 0})
    clock, command = ManualClock(), request(person(1), "+30d")
    outage = Outage(None, failures=10**6, error=KafkaConnectionError("broker unreachable"))
    crashed = create_app(settings, database=database, clock=clock, publish=outage)

    async with crashed, Publisher(settings) as publisher:
        await publisher.raw(command.topic, command.model_dump_json().encode(), key=b"k")
        written = await eventually(lambda: database["exclusions"].find_one({"request_id": str(command.id)}), what="the state write")
        await eventually(lambda: _true(outage.attempts >= 2), what="a retried delivery")
    assert written["state"] == "active" and len(written["outbox"]) == 1, "written, but its event never went out"

    async with registration(settings, database, clock) as restarted:
        [event] = await restarted.caused_by(command)
        # The crashed delivery is redelivered after the restart; a request behind it on its partition
        # shows when it has been handled.
        then = request(person(2), "+30d")
        await restarted.send_in_order(then, key=b"k")
        await restarted.caused_by(then)

        await restarted.lifecycle._drain()
        assert [m["id"] for m in restarted.lifecycle.messages()].count(event["id"]) == 1
        assert event["type"] == "exclusion.activated"
        stored = await restarted.stored(event["payload"]["exclusion_id"])
        assert (stored["outbox"], stored["outbox_at"]) == ([], None)


async def test_an_event_left_in_the_outbox_by_a_failed_publish_goes_out_exactly_once_with_the_service_running(settings, database):
    async with Publisher(settings) as broker:
        # A command whose first publish fails (transiently): redelivered, and its event goes out once.
        outage = Outage(broker.event, failures=1, error=KafkaConnectionError("blip"))
        async with registration(settings, database, publish=outage) as reg:
            activated = await reg.handle(request(person(1), "+30d"))
            exclusion_id = activated["payload"]["exclusion_id"]
            assert outage.attempts == 2

            # A timer transition whose publish fails: the pass fails; the relay publishes the event later.
            outage.failures, outage.error = 1, RuntimeError("publish failed")
            reg.clock.advance(days=29)
            with pytest.raises(RuntimeError):
                await reg.app.timers.tick(reg.clock())
            assert len((await reg.stored(exclusion_id))["outbox"]) == 1
            assert await reg.tick(seconds=1) == 0
            assert len((await reg.stored(exclusion_id))["outbox"]) == 1, "left alone within the grace period"
            assert await reg.tick(seconds=30) == 0
            reminder = await reg.event(exclusion_id, "exclusion.ending_soon")

            await reg.lifecycle._drain()
            ids = [m["id"] for m in reg.lifecycle.messages()]
            assert ids.count(activated["id"]) == ids.count(reminder["id"]) == 1
            assert (await reg.stored(exclusion_id))["outbox"] == []


async def _true(value: bool) -> bool:
    return value


# --- refusals and the loop ----------------------------------------------------------------------------


async def test_a_request_the_policy_refuses_or_a_lift_of_nothing_is_dead_lettered_with_the_reason(settings, database):
    async with registration(settings, database) as reg, TopicReader(settings, topics.DEAD_LETTER) as dead_letters:
        refused = [
            request(person(1), "+30d", "FR"),
            request(person(2), "+30d", "UK"),
            request(person(3), "+6m", "AU", support_persons=[{"name": f"S{n}", "email": f"s{n}@x.au"} for n in range(6)]),
            lift("00000000-0000-0000-0000-000000000001", "person-nobody"),
            unverified_lift(identity=person(4)),
        ]
        for command in refused:
            await reg.send(command)
        parked = await dead_letters.wait_for(lambda m: m["payload"]["consumer"] == "registration", count=len(refused))

        errors = {json.loads(dead_letter_original(settings, m))["id"]: m["payload"]["error"] for m in parked}
        assert errors[str(refused[0].id)] == "RequestRefusedError: no policy for jurisdiction 'FR'; known: AU, DE, DK, NL, SE, UK"
        assert errors[str(refused[1].id)].startswith("RequestRefusedError: duration '+30d' is not allowed in UK")
        assert errors[str(refused[2].id)] == "RequestRefusedError: 6 support persons named; AU allows 5"
        assert errors[str(refused[3].id)] == "NothingToLiftError: no exclusion 00000000-0000-0000-0000-000000000001 to lift"
        assert errors[str(refused[4].id)].startswith("UnverifiedLiftError: a lift request must be verified")
        assert await database["exclusions"].count_documents({}) == 0


async def test_the_timer_loop_runs_by_itself(settings, database):
    clock = ManualClock()
    settings = settings.model_copy(update={"registration_timer_seconds": 0.1})
    app = create_app(settings, database=database, clock=clock)
    async with app, Publisher(settings) as publisher, TopicReader(settings, topics.EXCLUSION_LIFECYCLE) as lifecycle:
        command = request(person(1), "+1d")
        await publisher.event(command)
        [activated] = await lifecycle.wait_for(lambda m: m["causation_id"] == str(command.id))

        clock.advance(days=1)

        [expired] = await lifecycle.wait_for(
            lambda m: m["type"] == "exclusion.expired" and m["payload"]["exclusion_id"] == activated["payload"]["exclusion_id"]
        )
        assert expired["payload"]["state"] == "expired"


# --- lifts are the person's act; staff cancel one made in error ------------------------------------


async def test_an_unverified_lift_request_on_the_commands_topic_ends_nothing(settings, database):
    async with registration(settings, database) as reg, TopicReader(settings, topics.DEAD_LETTER) as dead_letters:
        identity = person(1)
        exclusion_id = (await reg.handle(request(identity, "+12m")))["payload"]["exclusion_id"]  # SE: lifted at once on request
        reg.clock.advance(days=400)
        by_id, by_person = unverified_lift(exclusion_id), unverified_lift(identity=identity)
        await reg.send(by_id)
        await reg.send(by_person)

        parked = await dead_letters.wait_for(lambda m: m["payload"]["consumer"] == "registration", count=2)
        marker = await reg.handle(request(identity, "+12m"))

        assert {json.loads(dead_letter_original(settings, m))["id"] for m in parked} == {str(by_id.id), str(by_person.id)}
        assert all(m["payload"]["error"].startswith("UnverifiedLiftError") for m in parked)
        assert marker["type"] == "exclusion.extended" and marker["payload"]["state"] == "active"
        assert await reg.types(exclusion_id) == ["exclusion.activated", "exclusion.extended"]
        assert (await reg.stored(exclusion_id))["state"] == "active"


async def test_a_lift_verified_by_someone_else_ends_nothing(settings, database):
    async with registration(settings, database) as reg, TopicReader(settings, topics.DEAD_LETTER) as dead_letters:
        exclusion_id = (await reg.handle(request(person(1), "+12m")))["payload"]["exclusion_id"]
        other = (await reg.handle(request(person(2), "+12m")))["subject"]
        reg.clock.advance(days=400)
        forged = lift(exclusion_id, other)
        await reg.send(forged)

        [parked] = await dead_letters.wait_for(lambda m: json.loads(dead_letter_original(settings, m))["id"] == str(forged.id))
        assert parked["payload"]["error"].startswith("NotThePersonsLiftError")
        assert (await reg.stored(exclusion_id))["state"] == "active"


async def test_staff_cancel_an_exclusion_made_in_error_with_the_reason(settings, database):
    async with registration(settings, database) as reg:
        exclusion_id = (await reg.handle(request(person(1), "+6m", "UK")))["payload"]["exclusion_id"]
        stored = await reg.stored(exclusion_id)
        command = CancelExclusion(
            source="test",
            operator_id="staff-key-1",
            subject=stored["person_id"],
            payload=CancellationPayload(exclusion_id=exclusion_id, reason="registered for the wrong person", cancelled_by="Staff Seven"),
        )

        cancelled = await reg.handle(command)
        again = await reg.handle(request(person(1), "+6m", "UK"))  # a new request opens a new exclusion

        assert cancelled["type"] == "exclusion.cancelled"
        assert (cancelled["payload"]["state"], cancelled["payload"]["reason"]) == ("cancelled", "registered for the wrong person")
        assert cancelled["operator_id"] == "staff-key-1" and cancelled["payload"]["ended_at"] is not None
        assert (await reg.stored(exclusion_id))["state"] == "cancelled"
        [told] = await reg.notices(lambda m: m["causation_id"] == cancelled["id"])
        assert (told["payload"]["template"], told["payload"]["recipient"]) == ("exclusion_cancelled", "person")
        assert again["type"] == "exclusion.activated" and again["payload"]["exclusion_id"] != exclusion_id
