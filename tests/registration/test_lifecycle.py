"""Every shipped policy's lifecycle on the real broker and store, the clock moved by the test.

Each test runs registration as it runs in production (``create_app``), publishes commands on the
real broker, moves an injected clock and runs the timer loop's pass (``tick``), and reads what
came out on the lifecycle topic and in the store.
"""

from datetime import datetime, timedelta

import pytest

from shared.crypto import Sealer
from shared.events import Channel, SupportPerson, ThirdPartyApplication
from shared.policies import add_months, shipped_policies
from tests.registration.harness import START, failed, person, registration, request, verified

pytestmark = pytest.mark.integration


def at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def months(n: int) -> datetime:
    return add_months(START, n)


# --- SE (Spelpaus / ChipOut) -------------------------------------------------------------------------


async def test_se_a_30_day_exclusion_is_in_force_at_once_reminded_a_day_before_its_end_then_expires(settings, database):
    async with registration(settings, database) as reg:
        activated = await reg.handle(request(person(1), "+30d"))
        exclusion_id = activated["payload"]["exclusion_id"]

        assert activated["type"] == "exclusion.activated"
        assert at(activated["payload"]["starts_at"]) == START
        assert at(activated["payload"]["ends_at"]) == START + timedelta(days=30)
        assert await reg.tick(days=28) == 0
        assert await reg.tick(days=1) == 1
        [_, reminder] = await reg.sequence(exclusion_id, ["exclusion.activated", "exclusion.ending_soon"])
        assert reminder["payload"]["state"] == "active"
        assert await reg.tick(hours=23, minutes=59) == 0
        assert await reg.tick(minutes=1) == 1
        [*_, expired] = await reg.sequence(exclusion_id, ["exclusion.activated", "exclusion.ending_soon", "exclusion.expired"])

        assert expired["payload"]["state"] == "expired"
        stored = await reg.stored(exclusion_id)
        assert (stored["state"], stored["ended_at"], stored["next_transition_at"]) == ("expired", START + timedelta(days=30), None)
        assert stored["outbox"] == [] and stored["outbox_at"] is None


async def test_se_the_panic_button_excludes_at_once_for_24_hours(settings, database):
    async with registration(settings, database) as reg:
        activated = await reg.handle(request(person(1), "+1d"))
        exclusion_id = activated["payload"]["exclusion_id"]

        assert at(activated["payload"]["ends_at"]) == START + timedelta(hours=24)
        assert await reg.tick(hours=23, minutes=59) == 0, "no reminder for a 24-hour exclusion"
        assert await reg.tick(minutes=1) == 1
        await reg.sequence(exclusion_id, ["exclusion.activated", "exclusion.expired"])


async def test_se_until_further_notice_stays_after_its_twelve_months_until_lifted_at_once(settings, database):
    async with registration(settings, database) as reg:
        activated = await reg.handle(request(person(1), "+12m"))
        exclusion_id = activated["payload"]["exclusion_id"]
        assert (activated["payload"]["ends_at"], at(activated["payload"]["minimum_until"])) == (None, months(12))

        reg.clock.advance(days=30)
        refused = await reg.handle(await reg.lift(exclusion_id))
        assert refused["type"] == "exclusion.lift_refused"
        assert "minimum period runs until 2026-03-03" in refused["payload"]["reason"]

        assert await reg.tick(days=800) == 0, "it does not end by itself"
        lifted = await reg.handle(await reg.lift(exclusion_id))

        assert lifted["type"] == "exclusion.lifted"
        assert at(lifted["payload"]["lift_effective_at"]) == reg.clock()
        stored = await reg.stored(exclusion_id)
        assert (stored["state"], stored["ended_at"]) == ("lifted", reg.clock())


# --- UK (GAMSTOP) ------------------------------------------------------------------------------------


async def test_uk_six_months_stays_after_its_minimum_until_a_lift_takes_effect_24_hours_after_the_request(settings, database):
    async with registration(settings, database) as reg:
        activated = await reg.handle(request(person(1), "+6m", "UK"))
        exclusion_id = activated["payload"]["exclusion_id"]
        assert (activated["payload"]["ends_at"], at(activated["payload"]["minimum_until"])) == (None, months(6))

        reg.clock.set(months(3))
        refused = await reg.handle(await reg.lift(exclusion_id))
        assert "minimum period runs until 2025-09-03" in refused["payload"]["reason"]

        assert await reg.tick(days=200) == 0
        assert (await reg.stored(exclusion_id))["state"] == "active", "still excluded after the minimum"
        requested = await reg.handle(await reg.lift(exclusion_id))
        assert requested["type"] == "exclusion.lift_requested"
        assert requested["payload"]["state"] == "lift_requested"
        assert at(requested["payload"]["lift_effective_at"]) == reg.clock() + timedelta(hours=24)

        assert await reg.tick(hours=23) == 0
        assert await reg.tick(hours=1) == 1
        await reg.sequence(exclusion_id, ["exclusion.activated", "exclusion.lift_refused", "exclusion.lift_requested", "exclusion.lifted"])
        assert (await reg.stored(exclusion_id))["ended_at"] == reg.clock()


# --- DE (OASIS) --------------------------------------------------------------------------------------


async def test_de_a_lift_only_on_request_after_the_minimum_effective_a_week_later_and_third_party_applications(settings, database):
    async with registration(settings, database) as reg:
        own = (await reg.handle(request(person(1), "+3m", "DE")))["payload"]
        regulator = ThirdPartyApplication(applicant="regulator", applicant_name="Regierungspräsidium Darmstadt", reason="operator report")
        applied = await reg.handle(request(person(2), "+3m", "DE", channel=Channel.THIRD_PARTY, third_party=regulator))
        portal = await reg.handle(request(person(3), "+3m", "DE", channel=Channel.PORTAL))

        assert (own["ends_at"], at(own["minimum_until"])) == (None, months(3))
        assert applied["type"] == "exclusion.activated", "no verification of the excluded person"
        assert (applied["payload"]["third_party"], at(applied["payload"]["minimum_until"])) == ("regulator", months(12))
        assert (portal["type"], portal["payload"]["document_check"]) == ("exclusion.requested", True)
        [notice] = await reg.notices(lambda m: m["causation_id"] == applied["id"])
        assert (notice["payload"]["template"], notice["payload"]["recipient"]) == ("third_party_exclusion", "person")
        stored = await reg.stored(applied["payload"]["exclusion_id"])
        assert "Darmstadt" not in str(stored)
        assert stored["third_party"]["applicant"] == "regulator" and stored["third_party"]["reason"] == "operator report"
        sealed_name = stored["third_party"]["applicant_name"]
        assert Sealer.from_settings(settings).open_text(sealed_name, f"third_party:{stored['_id']}") == regulator.applicant_name

        reg.clock.set(months(2))
        assert (await reg.handle(await reg.lift(own["exclusion_id"])))["type"] == "exclusion.lift_refused"
        reg.clock.set(months(4))
        requested = await reg.handle(await reg.lift(own["exclusion_id"]))
        assert at(requested["payload"]["lift_effective_at"]) == months(4) + timedelta(days=7)
        refused = await reg.handle(await reg.lift(applied["payload"]["exclusion_id"]))
        assert "minimum period runs until 2026-03-03" in refused["payload"]["reason"]
        # The portal request was never verified: cancelled after the timeout (72 hours) at the first tick.
        assert await reg.tick(days=6) == 1
        assert await reg.tick(days=1) == 1
        await reg.sequence(
            own["exclusion_id"], ["exclusion.activated", "exclusion.lift_refused", "exclusion.lift_requested", "exclusion.lifted"]
        )
        await reg.sequence(portal["payload"]["exclusion_id"], ["exclusion.requested", "exclusion.cancelled"])


# --- NL (CRUKS) --------------------------------------------------------------------------------------


async def test_nl_ends_by_itself_cancellable_after_six_months_with_an_eight_day_reflection(settings, database):
    async with registration(settings, database) as reg:
        long = (await reg.handle(request(person(1), "+12m", "NL")))["payload"]
        short = (await reg.handle(request(person(2), "+6m", "NL")))["payload"]
        family = ThirdPartyApplication(applicant="family", applicant_name="Jan de Vries", reason="debts")
        applied = await reg.handle(request(person(3), "+6m", "NL", channel=Channel.THIRD_PARTY, third_party=family))

        assert (at(long["ends_at"]), at(long["minimum_until"])) == (months(12), months(6))
        assert at(applied["payload"]["ends_at"]) == months(6)
        await reg.notices(lambda m: m["causation_id"] == applied["id"] and m["payload"]["template"] == "third_party_exclusion")

        reg.clock.set(months(5))
        refused = await reg.handle(await reg.lift(long["exclusion_id"]))
        assert "minimum period runs until 2025-09-03" in refused["payload"]["reason"]
        assert await reg.tick(days=31 - 1) == 2, "the reminders of the two six-month exclusions"
        reg.clock.set(months(6))
        assert await reg.tick() == 2
        await reg.sequence(short["exclusion_id"], ["exclusion.activated", "exclusion.ending_soon", "exclusion.expired"])
        await reg.sequence(applied["payload"]["exclusion_id"], ["exclusion.activated", "exclusion.ending_soon", "exclusion.expired"])

        reg.clock.set(months(7))
        requested = await reg.handle(await reg.lift(long["exclusion_id"]))
        assert at(requested["payload"]["lift_effective_at"]) == months(7) + timedelta(days=8)
        assert await reg.tick(days=8) == 1
        await reg.sequence(
            long["exclusion_id"], ["exclusion.activated", "exclusion.lift_refused", "exclusion.lift_requested", "exclusion.lifted"]
        )


# --- AU (BetStop) ------------------------------------------------------------------------------------


async def test_au_support_persons_are_told_when_it_starts_and_ends_and_removal_takes_effect_seven_days_later(settings, database):
    supporters = [SupportPerson(name="Sam Smith", email="sam@example.au"), SupportPerson(name="Alex Jones", mobile="+61412345678")]
    async with registration(settings, database) as reg:
        activated = await reg.handle(request(person(1), "+12m", "AU", support_persons=supporters))
        exclusion_id = activated["payload"]["exclusion_id"]
        [started] = await reg.notices(lambda m: m["causation_id"] == activated["id"])
        assert (started["payload"]["template"], started["payload"]["recipient"]) == ("exclusion_started", "support_persons")
        assert started["payload"]["params"]["exclusion_id"] == exclusion_id
        stored = await reg.stored(exclusion_id)
        assert "Sam" not in str(stored) and "sam@example.au" not in str(stored) and "+61412345678" not in str(stored)
        sealer = Sealer.from_settings(settings)
        opened = [
            SupportPerson.model_validate_json(sealer.open_text(t, f"support_person:{exclusion_id}")) for t in stored["support_persons"]
        ]
        assert opened == supporters

        reg.clock.set(months(2))
        assert (await reg.handle(await reg.lift(exclusion_id)))["type"] == "exclusion.lift_refused"
        reg.clock.set(months(4))
        requested = await reg.handle(await reg.lift(exclusion_id))
        assert at(requested["payload"]["lift_effective_at"]) == months(4) + timedelta(days=7)
        assert await reg.tick(days=7) == 1
        [*_, lifted] = await reg.sequence(
            exclusion_id, ["exclusion.activated", "exclusion.lift_refused", "exclusion.lift_requested", "exclusion.lifted"]
        )
        [ended] = await reg.notices(lambda m: m["causation_id"] == lifted["id"])
        assert (ended["payload"]["template"], ended["payload"]["recipient"]) == ("exclusion_ended", "support_persons")


# --- DK (ROFUS) --------------------------------------------------------------------------------------


async def test_dk_24_hours_and_1_3_6_months_end_by_themselves_and_permanent_is_lifted_on_request_after_a_year(settings, database):
    async with registration(settings, database) as reg:
        ids = {}
        for n, duration in enumerate(["+1d", "+1m", "+3m", "+6m", "+12m"], start=1):
            ids[duration] = (await reg.handle(request(person(n), duration, "DK")))["payload"]["exclusion_id"]

        await reg.tick(days=1)
        await reg.sequence(ids["+1d"], ["exclusion.activated", "exclusion.expired"])
        for duration, end in (("+1m", months(1)), ("+3m", months(3)), ("+6m", months(6))):
            reg.clock.set(end - timedelta(days=1))
            assert await reg.tick() == 1
            reg.clock.set(end)
            assert await reg.tick() == 1
            await reg.sequence(ids[duration], ["exclusion.activated", "exclusion.ending_soon", "exclusion.expired"])

        refused = await reg.handle(await reg.lift(ids["+12m"]))
        assert "minimum period runs until 2026-03-03" in refused["payload"]["reason"]
        reg.clock.set(months(12))
        assert await reg.tick() == 0
        assert (await reg.handle(await reg.lift(ids["+12m"])))["type"] == "exclusion.lifted"


# --- verification and cooling-off ----------------------------------------------------------------------


async def test_a_portal_request_waits_for_verification_then_takes_effect_or_is_cancelled(settings, database):
    async with registration(settings, database) as reg:
        identity = person(1, email="Anna.Svensson@Example.se", mobile="070-123 45 67")
        requested = await reg.handle(request(identity, "+30d", channel=Channel.PORTAL, verify_by="sms"))
        exclusion_id = requested["payload"]["exclusion_id"]
        assert (requested["type"], requested["payload"]["state"], requested["payload"]["verify_by"]) == (
            "exclusion.requested",
            "pending_verification",
            "sms",
        )
        person_document = await database["persons"].find_one({"_id": requested["subject"]})
        sealer, context = Sealer.from_settings(settings), f"contact:{requested['subject']}"
        assert sealer.open_text(person_document["contacts"]["email"], context) == "anna.svensson@example.se"
        assert sealer.open_text(person_document["contacts"]["mobile"], context) == "+46701234567"
        assert "Svensson" not in str(person_document) and "Svensson" not in str(await reg.stored(exclusion_id))

        reg.clock.advance(minutes=10)
        activated = await reg.handle(verified(exclusion_id))
        assert activated["type"] == "exclusion.activated"
        assert at(activated["payload"]["starts_at"]) == START + timedelta(minutes=10)
        assert at(activated["payload"]["ends_at"]) == START + timedelta(minutes=10, days=30)

        failing = (await reg.handle(request(person(2), "+30d", channel=Channel.PORTAL)))["payload"]["exclusion_id"]
        cancelled = await reg.handle(failed(failing, "code expired"))
        assert (cancelled["type"], cancelled["payload"]["reason"]) == ("exclusion.cancelled", "verification failed: code expired")

        forgotten = (await reg.handle(request(person(3), "+30d", channel=Channel.PORTAL)))["payload"]["exclusion_id"]
        assert await reg.tick(hours=71) == 0
        assert await reg.tick(hours=1) == 1
        [_, timed_out] = await reg.sequence(forgotten, ["exclusion.requested", "exclusion.cancelled"])
        assert timed_out["payload"]["reason"] == "not verified within 72 hours"

        # Verified too late: nothing about the cancelled request changes.
        late = verified(forgotten)
        await reg.app.registrar.verification(late)
        assert (await reg.stored(forgotten))["state"] == "cancelled"
        assert await reg.types(forgotten) == ["exclusion.requested", "exclusion.cancelled"]


async def test_a_policy_with_an_activation_cooling_off_runs_it_except_for_the_panic_button(settings, database):
    policies = {"XX": shipped_policies()["SE"].model_copy(update={"jurisdiction": "XX", "activation_cooling_off_hours": 48})}
    async with registration(settings, database, policies=policies) as reg:
        cooling = await reg.handle(request(person(1), "+30d", "XX"))
        portal = await reg.handle(request(person(2), "+30d", "XX", channel=Channel.PORTAL))
        panic = await reg.handle(request(person(3), "+1d", "XX"))
        assert (cooling["type"], at(cooling["payload"]["starts_at"])) == ("exclusion.cooling_off_started", START + timedelta(hours=48))
        assert panic["type"] == "exclusion.activated"

        verified_cooling = await reg.handle(verified(portal["payload"]["exclusion_id"]))
        assert verified_cooling["type"] == "exclusion.cooling_off_started"

        assert await reg.tick(hours=47) == 1, "the panic button's 24 hours are over"
        assert await reg.tick(hours=1) == 2
        await reg.sequence(cooling["payload"]["exclusion_id"], ["exclusion.cooling_off_started", "exclusion.activated"])
        await reg.sequence(
            portal["payload"]["exclusion_id"], ["exclusion.requested", "exclusion.cooling_off_started", "exclusion.activated"]
        )
        await reg.sequence(panic["payload"]["exclusion_id"], ["exclusion.activated", "exclusion.expired"])
