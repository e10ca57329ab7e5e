"""The notification service on the real broker and store, sending through a real SMTP server and a
real HTTP sink: every kind of message in English and Swedish, retries, permanent failures,
redelivery, the per-person cap and quiet hours."""

import uuid
from datetime import UTC, datetime

import pytest

from services.notification.domain import State
from shared.events import (
    ExclusionActivated,
    ExclusionEndingSoon,
    ExclusionExpired,
    ExclusionExtended,
    ExclusionLifted,
    ExclusionLiftRequested,
    ExclusionState,
    NotificationRequested,
    NotificationRequestedPayload,
    SupportPerson,
)
from tests.notification.conftest import SMS_TOKEN, at, snapshot
from tests.notification.sinks import text_of
from tests.support import eventually

pytestmark = pytest.mark.integration

# What each message says, in each language: a phrase from its subject, its text and its SMS.
REQUESTED = {
    "verification_code": {
        "en": ("Your Selfex code: 482913", "Your one-time code is 482913.", "your code is 482913"),
        "sv": ("Din kod från Selfex: 482913", "Din engångskod är 482913.", "din kod är 482913"),
    },
    "lift_code": {
        "en": ("to end your exclusion: 482913", "ask to end your self-exclusion", "to end your exclusion is 482913"),
        "sv": ("för att avsluta avstängningen: 482913", "vill avsluta din självavstängning", "för att avsluta avstängningen är 482913"),
    },
    "document_required": {
        "en": ("identity document", "upload it on the self-exclusion portal", "upload an identity document"),
        "sv": ("id-handling", "Ladda upp den i självavstängningsportalen", "ladda upp en id-handling"),
    },
    "exclusion_cancelled": {
        "en": ("has been cancelled", "made in error", "cancelled as made in error"),
        "sv": ("har makulerats", "gjordes av misstag", "har makulerats"),
    },
    "third_party_exclusion": {
        "en": ("registered for you", "On an application by a third party", "third party's application"),
        "sv": ("registrerats för dig", "Efter ansökan av tredje part", "efter ansökan av tredje part"),
    },
}
LETTERS = {
    ExclusionActivated: {
        "en": ("has started", "cannot be removed early", "It cannot be removed early"),
        "sv": ("har börjat", "kan inte hävas i förtid", "Den kan inte hävas i förtid"),
    },
    ExclusionExtended: {
        "en": ("has been extended", "It is now in force from", "has been extended"),
        "sv": ("har förlängts", "Den gäller nu från", "har förlängts"),
    },
    ExclusionEndingSoon: {
        "en": ("ends in 24 hours", "you can extend it now", "set deposit limits"),
        "sv": ("upphör om 24 timmar", "kan du förlänga den nu", "sätt insättningsgränser"),
    },
    ExclusionLiftRequested: {
        "en": ("request to end", "Until then you remain excluded", "Until then you remain excluded"),
        "sv": ("begäran om att avsluta", "Till dess är du fortsatt avstängd", "Till dess är du fortsatt avstängd"),
    },
    ExclusionLifted: {
        "en": ("has ended", "no longer refuse you", "has ended"),
        "sv": ("har upphört", "nekar dig inte längre", "har upphört"),
    },
    ExclusionExpired: {
        "en": ("has ended", "no longer refuse you", "has ended"),
        "sv": ("har upphört", "nekar dig inte längre", "har upphört"),
    },
}
LANGUAGES = {"en": "UK", "sv": "SE"}


def _address(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:6]}@example.se"


def _mobile() -> str:
    return f"+4670{uuid.uuid4().int % 10**7:07d}"


@pytest.mark.parametrize("locale", ["en", "sv"])
@pytest.mark.parametrize("template", sorted(REQUESTED))
async def test_every_requested_message_arrives_by_email_and_by_sms_in_the_person_s_language(running, template, locale):
    address, mobile = _address(template), _mobile()
    by_mail = await running.person(email=address, locale=locale, jurisdiction=LANGUAGES[locale])
    by_sms = await running.person(mobile=mobile, locale=locale, jurisdiction=LANGUAGES[locale])
    subject_phrase, text_phrase, sms_phrase = REQUESTED[template][locale]

    mailed = await running.send(running.request(by_mail, template, code="482913", valid_minutes="15"))
    texted = await running.send(running.request(by_sms, template, code="482913", valid_minutes="15", channel="sms"))

    assert (await running.outcome(mailed.id))["payload"]["outcome"] == "sent"
    assert (await running.outcome(texted.id))["payload"]["outcome"] == "sent"
    [mail] = running.smtp.to(address)
    assert subject_phrase in mail["Subject"]
    assert text_phrase in text_of(mail) and text_phrase in text_of(mail, "html")
    assert mail["Content-Language"] == locale
    [sms] = running.sms.to(mobile)
    assert sms_phrase in sms["text"] and len(sms["text"]) <= 320
    assert sms["authorization"] == f"Bearer {SMS_TOKEN}"


@pytest.mark.parametrize("locale", ["en", "sv"])
@pytest.mark.parametrize("event_type", list(LETTERS), ids=lambda t: t.__name__)
async def test_every_lifecycle_letter_arrives_in_the_person_s_language(running, event_type, locale):
    address = _address(event_type.__name__.lower())
    subject = await running.person(email=address, locale=locale, jurisdiction=LANGUAGES[locale])
    fields = {}
    if event_type is ExclusionLiftRequested:
        fields = {"state": ExclusionState.LIFT_REQUESTED, "lift_effective_at": snapshot().starts_at}
    elif event_type in (ExclusionLifted, ExclusionExpired):
        fields = {"state": ExclusionState.EXPIRED, "ended_at": snapshot().starts_at}
    event = event_type(source="registration", subject=subject, payload=snapshot(LANGUAGES[locale], **fields))  # type: ignore[call-arg]
    subject_phrase, text_phrase, _ = LETTERS[event_type][locale]

    await running.send(event)

    [delivery] = await running.deliveries.wait_for(lambda m: m["causation_id"] == str(event.id) and m["payload"]["final"])
    assert delivery["payload"]["outcome"] == "sent" and delivery["payload"]["channel"] == "email"
    [mail] = running.smtp.to(address)
    assert subject_phrase in mail["Subject"] and text_phrase in text_of(mail)


async def test_the_start_letter_says_the_period_the_scope_that_it_cannot_end_early_and_where_to_find_help(running):
    address = _address("start")
    subject = await running.person(email=address, locale="sv", jurisdiction="SE")
    until_further_notice = snapshot("SE", ends_at=None, duration="+12m")

    await running.send(ExclusionActivated(source="registration", subject=subject, payload=until_further_notice))

    [mail] = await eventually(lambda: _async(running.smtp.to(address)), what="the start letter")
    text = text_of(mail)
    assert f"från {until_further_notice.starts_at:%Y-%m-%d %H:%M} UTC tills vidare" in text
    assert "Den omfattar: GAMES (ALL)" in text and "kan inte hävas i förtid" in text
    assert "Stödlinjen: 020-81 91 00" in text and "Stödlinjen: 020-81 91 00" in text_of(mail, "html")


SUPPORT = {
    ("exclusion_started", "en"): ("A self-exclusion you support has started", "You were named as a support person", "has started"),
    ("exclusion_started", "sv"): ("En självavstängning du stödjer har börjat", "Du har angetts som stödperson", "har börjat"),
    ("exclusion_ended", "en"): ("A self-exclusion you support has ended", "You were named as a support person", "has ended"),
    ("exclusion_ended", "sv"): ("En självavstängning du stödjer har upphört", "Du har angetts som stödperson", "har upphört"),
}


@pytest.mark.parametrize(("template", "locale"), sorted(SUPPORT))
async def test_support_persons_are_told_at_their_own_contacts_in_the_person_s_language(running, template, locale):
    exclusion_id = uuid.uuid4()
    sam, alex = SupportPerson(name="Sam", email=_address("sam")), SupportPerson(name="Alex", mobile=_mobile())
    tokens = [running.sealer.seal_text(p.model_dump_json(), f"support_person:{exclusion_id}") for p in (sam, alex)]
    person_address = _address("person")
    subject = await running.person(email=person_address, locale=locale, jurisdiction="AU")
    request = NotificationRequested(
        source="registration",
        subject=subject,
        payload=NotificationRequestedPayload(
            template=template,
            recipient="support_persons",
            locale=locale,
            params={"exclusion_id": str(exclusion_id), "jurisdiction": "AU", "starts_at": "2026-12-03T10:00:00+00:00"},
            sealed_contacts=tokens,
        ),
    )
    subject_phrase, text_phrase, sms_phrase = SUPPORT[(template, locale)]

    await running.send(request)

    assert (await running.outcome(request.id, number=1))["payload"]["channel"] == "email"
    assert (await running.outcome(request.id, number=2))["payload"]["channel"] == "sms"
    [mail] = running.smtp.to(sam.email)
    assert mail["Subject"] == subject_phrase and text_phrase in text_of(mail)
    [sms] = running.sms.to(alex.mobile)
    assert sms_phrase in sms["text"]
    assert running.smtp.to(person_address) == [], "nothing to the excluded person themselves"


async def test_a_temporary_smtp_failure_is_retried_and_exactly_one_mail_arrives(running):
    address = _address("temporary")
    subject = await running.person(email=address)
    running.smtp.answers[:] = ["451 4.3.0 try again later"]

    request = await running.send(running.request(subject, "verification_code", code="111222", valid_minutes="15"))

    final = await running.outcome(request.id)
    assert (final["payload"]["outcome"], final["payload"]["attempt"]) == ("sent", 2)
    assert len(running.smtp.to(address)) == 1 and running.smtp.data_commands == 2
    outcomes = [(m["payload"]["attempt"], m["payload"]["outcome"]) for m in await running.events_of(request.id)]
    assert outcomes == [(1, "temporary_failure"), (2, "sent")]
    attempts = await running.notifications.attempts(f"{request.id}/0")
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "temporary_failure"), (2, "sent")]


async def test_a_permanent_smtp_failure_is_recorded_and_not_retried(running):
    address = _address("refused")
    subject = await running.person(email=address)
    running.smtp.refused.add(address)

    request = await running.send(running.request(subject, "verification_code", code="111222", valid_minutes="15"))

    final = await running.outcome(request.id)
    assert (final["payload"]["outcome"], final["payload"]["attempt"], final["payload"]["final"]) == ("permanent_failure", 1, True)
    assert "550" in final["payload"]["reason"] and address not in final["payload"]["reason"]
    assert running.smtp.messages == [] and running.smtp.data_commands == 0
    assert (await running.stored(request.id)).state is State.FAILED
    assert len(await running.notifications.attempts(f"{request.id}/0")) == 1


async def test_a_message_nobody_wrote_a_template_for_is_a_permanent_failure(running):
    address = _address("unknown")
    subject = await running.person(email=address)

    request = await running.send(running.request(subject, "horoscope"))

    final = await running.outcome(request.id)
    assert (final["payload"]["outcome"], final["payload"]["reason"]) == ("permanent_failure", "no template for horoscope")
    assert running.smtp.to(address) == []


async def test_a_notice_to_a_third_party_applicant_reaches_nobody_else(running):
    address = _address("person")
    subject = await running.person(email=address)
    request = running.request(subject, "third_party_exclusion")
    request = request.model_copy(update={"payload": request.payload.model_copy(update={"recipient": "applicant"})})

    await running.send(request)

    final = await running.outcome(request.id)
    assert (final["payload"]["outcome"], final["payload"]["recipient"]) == ("no_contact", "applicant")
    assert running.smtp.to(address) == []


async def test_an_invalid_address_is_a_permanent_failure_without_a_connection(running):
    subject = await running.person(email="not an address")

    request = await running.send(running.request(subject, "document_required"))

    final = await running.outcome(request.id)
    assert (final["payload"]["outcome"], final["payload"]["reason"]) == ("permanent_failure", "invalid e-mail address")


async def test_an_sms_provider_s_5xx_and_429_are_retried_and_its_4xx_is_not(running):
    retried, refused = _mobile(), _mobile()
    first = await running.person(mobile=retried)
    second = await running.person(mobile=refused)

    running.sms.statuses[:] = [503, 429]
    request = await running.send(running.request(first, "verification_code", code="333444", valid_minutes="15", channel="sms"))
    final = await running.outcome(request.id)
    assert (final["payload"]["outcome"], final["payload"]["attempt"]) == ("sent", 3)
    assert len(running.sms.to(retried)) == 1

    running.sms.statuses[:] = [400]
    calls = running.sms.calls
    request = await running.send(running.request(second, "verification_code", code="333444", valid_minutes="15", channel="sms"))
    final = await running.outcome(request.id)
    assert (final["payload"]["outcome"], final["payload"]["attempt"]) == ("permanent_failure", 1)
    assert running.sms.calls == calls + 1 and running.sms.to(refused) == []


async def test_a_server_that_keeps_failing_is_given_up_after_the_configured_attempts(running):
    address = _address("unlucky")
    subject = await running.person(email=address)
    running.smtp.answers[:] = ["421 4.3.2 service not available"] * 5

    request = await running.send(running.request(subject, "document_required"))

    final = await running.outcome(request.id)
    assert (final["payload"]["outcome"], final["payload"]["attempt"]) == ("gave_up", 3)
    assert running.smtp.data_commands == 3 and running.smtp.to(address) == []


async def test_a_redelivered_request_sends_one_message(running):
    address = _address("twice")
    subject = await running.person(email=address, locale="en")
    request = running.request(subject, "verification_code", code="555666", valid_minutes="15")

    await running.send(request)
    await running.outcome(request.id)
    await running.send(request)  # the same request again, as a redelivery brings it
    marker = await running.send(running.request(subject, "document_required"))
    await running.outcome(marker.id)  # handled after the redelivery, on the same partition

    assert len(running.smtp.to(address)) == 2, "one code, one document request"
    assert [m["Subject"] for m in running.smtp.to(address)].count("Your Selfex code: 555666") == 1
    assert len([m for m in await running.events_of(request.id) if m["payload"]["final"]]) == 1


async def test_every_message_of_a_notification_has_one_stable_message_id(running):
    address = _address("msgid")
    subject = await running.person(email=address)
    running.smtp.answers[:] = ["451 later"]

    request = await running.send(running.request(subject, "document_required"))

    final = await running.outcome(request.id)
    [mail] = running.smtp.to(address)
    assert mail["Message-ID"] == final["payload"]["message_id"]
    assert [m["payload"]["message_id"] for m in await running.events_of(request.id)] == [mail["Message-ID"]] * 2


async def test_no_more_than_the_cap_reach_one_person_in_an_hour(running):
    address = _address("flooded")
    subject = await running.person(email=address)
    cap = running.settings.notification_per_person_per_hour
    requests = [running.request(subject, "verification_code", code=f"{n:06d}", valid_minutes="15") for n in range(cap + 2)]

    for request in requests:
        await running.send(request)
    outcomes = [(await running.outcome(r.id))["payload"]["outcome"] for r in requests]

    assert outcomes == ["sent"] * cap + ["suppressed"] * 2
    assert len(running.smtp.to(address)) == cap
    other = await running.person(email=_address("other"))
    assert (await running.outcome((await running.send(running.request(other, "document_required"))).id))["payload"]["outcome"] == "sent"


async def test_contact_details_are_never_stored_or_published_in_clear(running):
    address, mobile = _address("secret"), _mobile()
    subject = await running.person(email=address, mobile=mobile)

    request = await running.send(running.request(subject, "verification_code", code="777888", valid_minutes="15"))
    await running.outcome(request.id)

    stored = [d async for d in running.database["notifications"].find({})] + [d async for d in running.database["contacts"].find({})]
    stored += [d async for d in running.database["delivery_attempts"].find({})]
    published = await running.events_of(request.id)
    for secret in (address, mobile, "777888"):
        assert secret not in str(stored) and secret not in str(published)


async def _async(value):
    return value


async def test_quiet_hours_hold_a_letter_until_they_end_but_never_a_code(settings, database, smtp, sms):
    from services.notification.app import create_app
    from shared import topics
    from tests.notification.conftest import Running, notification_settings
    from tests.support import Publisher, TopicReader

    class Clock:
        now = datetime(2026, 12, 3, 22, 30, tzinfo=UTC)  # 23:30 in Stockholm

        def __call__(self) -> datetime:
            return self.now

    clock = Clock()
    configured = notification_settings(settings, smtp, sms, notification_quiet_hours={"SE": "Europe/Stockholm 21:00-08:00"})
    app = create_app(configured, database=database, clock=clock)
    async with app, Publisher(configured) as publisher, TopicReader(configured, topics.NOTIFICATION_DELIVERIES) as deliveries:
        running = Running(configured, app, database, publisher, deliveries, smtp, sms)
        address = _address("night")
        subject = await running.person(email=address, locale="en")
        letter = ExclusionActivated(source="registration", subject=subject, occurred_at=clock.now, payload=snapshot("SE"))
        code = running.request(subject, "verification_code", code="246810", valid_minutes="15")

        await running.send(letter)
        [deferred] = await running.deliveries.wait_for(lambda m: m["causation_id"] == str(letter.id))
        await running.send(code)
        assert (await running.outcome(code.id))["payload"]["outcome"] == "sent"

        assert (deferred["payload"]["outcome"], deferred["payload"]["final"]) == ("deferred", False)
        assert at(deferred["payload"]["due_at"]) == datetime(2026, 12, 4, 7, 0, tzinfo=UTC)
        assert [m["Subject"] for m in smtp.to(address)] == ["Your Selfex code: 246810"]
        assert await app.courier.tick() == 0, "not due before the quiet hours end"

        clock.now = datetime(2026, 12, 4, 7, 0, tzinfo=UTC)
        assert await app.courier.tick() == 1
        assert (await running.outcome(letter.id))["payload"]["outcome"] == "sent"
        assert [m["Subject"] for m in smtp.to(address)][1] == "Your self-exclusion from gambling has started"
