"""Registration and notification together on the real broker and store: the contacts travel sealed,
and the start letter, the reminder and the end reach the person; support persons are told too."""

import pytest

from services.notification.app import create_app
from shared import topics
from shared.events import SupportPerson
from shared.store import create_client
from tests.notification.conftest import notification_settings
from tests.notification.sinks import text_of
from tests.registration.harness import person, registration, request
from tests.support import TopicReader, eventually

pytestmark = pytest.mark.integration


async def test_the_person_gets_the_start_letter_the_reminder_and_the_end_from_registration_s_events(settings, database, smtp, sms):
    configured = notification_settings(settings, smtp, sms)
    client = create_client(configured)
    try:
        async with registration(configured, database) as reg:
            notification = create_app(configured, database=client[configured.database_for("notification")], clock=reg.clock)
            async with notification, TopicReader(configured, topics.PERSON_CONTACTS) as contacts:
                address = "karin.berg@example.se"
                activated = await reg.handle(request(person(1, email=address), "+30d", "SE", locale="sv-SE"))
                exclusion_id = activated["payload"]["exclusion_id"]

                [started] = await eventually(lambda: _async(smtp.to(address)), what="the start letter")
                assert started["Subject"] == "Din självavstängning från spel har börjat"
                assert exclusion_id in text_of(started)
                [recorded] = await contacts.wait_for(lambda m: m["subject"] == activated["subject"])
                assert recorded["payload"]["email"] and address not in str(recorded), "the contact travels sealed"

                await reg.tick(days=29)
                await reg.event(exclusion_id, "exclusion.ending_soon")
                reminder = (await eventually(lambda: _async(smtp.to(address)[1:]), what="the reminder"))[0]
                assert reminder["Subject"] == "Din självavstängning upphör om 24 timmar"

                await reg.tick(days=1)
                await reg.event(exclusion_id, "exclusion.expired")
                ended = (await eventually(lambda: _async(smtp.to(address)[2:]), what="the end letter"))[0]
                assert ended["Subject"] == "Din självavstängning har upphört"
                assert len({m["Message-ID"] for m in smtp.to(address)}) == 3
    finally:
        await client.drop_database(configured.database_for("notification"))
        await client.close()


async def test_support_persons_named_in_a_request_are_told_it_started(settings, database, smtp, sms):
    configured = notification_settings(settings, smtp, sms)
    supporters = [SupportPerson(name="Sam Smith", email="sam@example.au"), SupportPerson(name="Alex Jones", mobile="+61412345678")]
    client = create_client(configured)
    try:
        async with registration(configured, database) as reg:
            notification = create_app(configured, database=client[configured.database_for("notification")], clock=reg.clock)
            async with notification:
                await reg.handle(request(person(2, email="jo@example.au"), "+12m", "AU", support_persons=supporters))

                [to_sam] = await eventually(lambda: _async(smtp.to("sam@example.au")), what="Sam's notice")
                [to_alex] = await eventually(lambda: _async(sms.to("+61412345678")), what="Alex's SMS")
                [to_person] = await eventually(lambda: _async(smtp.to("jo@example.au")), what="the person's start letter")

        assert to_sam["Subject"] == "A self-exclusion you support has started"
        assert "Gambling Help Online" in text_of(to_sam)
        assert "support person" in to_alex["text"]
        assert to_person["Subject"] == "Your self-exclusion from gambling has started"
    finally:
        await client.drop_database(configured.database_for("notification"))
        await client.close()


async def _async(value):
    return value
