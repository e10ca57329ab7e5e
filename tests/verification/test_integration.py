"""The verification service on the real broker and store: codes, attempts, resends, expiry,
documents, refusals, redelivery and bad input."""

import json

import pytest

from services.verification import domain
from services.verification.app import create_app
from services.verification.domain import IssuedCode, State, Status
from services.verification.repository import MongoVerifications
from shared import topics
from shared.events import CodeResendPayload, CodeSubmittedPayload, ExclusionCancelled, ExclusionState, ResendCode, SubmitCode, derived_id
from tests.support import Publisher, TopicReader, dead_letter_original, eventually
from tests.verification.conftest import code_submitted, raw_bytes, requested

pytestmark = pytest.mark.integration


def other_than(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_the_code_sent_by_email_verifies_the_request_once(running):
    request = await running.request(verify_by="email")
    exclusion_id = request.payload.exclusion_id
    code = await running.code(exclusion_id)

    outcome = await running.submit(exclusion_id, code)

    assert outcome.status is Status.VERIFIED
    [verified] = await running.results_for(exclusion_id, count=1, type="exclusion.verified")
    assert verified["payload"]["method"] == "code"
    assert verified["subject"] == request.subject
    assert verified["correlation_id"] == str(request.id)
    [notice] = await running.notices.wait_for(lambda m: m["causation_id"] == str(request.id))
    assert notice["payload"]["channel"] == "email" and notice["subject"] == request.subject
    stored = await running.database["verifications"].find_one({"_id": str(exclusion_id)})
    assert code not in json.dumps(stored, default=str), "only the code's keyed hash is stored"


async def test_the_same_code_again_is_refused_and_changes_nothing(running):
    exclusion_id = (await running.request()).payload.exclusion_id
    code = await running.code(exclusion_id)
    assert (await running.submit(exclusion_id, code)).status is Status.VERIFIED
    before = await running.settled(exclusion_id)

    again = await running.submit(exclusion_id, code)

    assert again.status is Status.ALREADY_USED
    assert again.reason == "this code was already used: the request is confirmed"
    await running.results_for(exclusion_id, count=1, type="verification.submission_refused")
    after = await running.verification(exclusion_id)
    assert (after.state, after.version) == (before.state, before.version)
    assert len(await running.results_for(exclusion_id, type="exclusion.verified")) == 1


async def test_five_wrong_codes_fail_the_verification(running):
    exclusion_id = (await running.request()).payload.exclusion_id
    wrong = other_than(await running.code(exclusion_id))

    outcomes = [await running.submit(exclusion_id, wrong) for _ in range(5)]

    assert [o.status for o in outcomes] == [Status.WRONG_CODE] * 4 + [Status.ATTEMPTS_EXHAUSTED]
    assert [o.attempts_left for o in outcomes] == [4, 3, 2, 1, 0]
    assert outcomes[0].reason == "wrong code: 4 attempts left"
    [failed] = await running.results_for(exclusion_id, count=1, type="verification.failed")
    assert failed["payload"]["reason"] == "attempts_exhausted"
    assert (await running.verification(exclusion_id)).state is State.FAILED
    # The right code after that is refused too: the request is over.
    late = await running.submit(exclusion_id, await running.code(exclusion_id))
    assert late.status is Status.CLOSED


async def test_at_most_three_new_codes_and_only_the_latest_counts(running):
    exclusion_id = (await running.request(verify_by="sms")).payload.exclusion_id

    resent = [await running.resend(exclusion_id) for _ in range(4)]

    assert [o.status for o in resent] == [Status.CODE_SENT] * 3 + [Status.RESENDS_EXHAUSTED]
    assert [o.resends_left for o in resent[:3]] == [2, 1, 0]
    codes = await running.sent_codes(exclusion_id, count=4)
    notices = await running.notices.wait_for(lambda m: m["payload"].get("params", {}).get("exclusion_id") == str(exclusion_id), count=4)
    assert {n["payload"]["channel"] for n in notices} == {"sms"}
    first, latest = codes[0], codes[-1]
    if first != latest:
        assert (await running.submit(exclusion_id, first)).status is Status.SUPERSEDED
    assert (await running.submit(exclusion_id, latest)).status is Status.VERIFIED


async def test_an_expired_code_fails_the_request_once_on_the_timer(running):
    exclusion_id = (await running.request()).payload.exclusion_id
    code = await running.code(exclusion_id)

    assert await running.app.timers.tick(running.clock.advance(minutes=14)) == 0
    late = running.clock.advance(minutes=1)
    expired_now = await running.app.timers.tick(late)
    await running.app.timers.tick(running.clock.advance(minutes=5))

    assert expired_now == 1
    [failed] = await running.results_for(exclusion_id, count=1, type="verification.failed")
    assert failed["payload"]["reason"] == "expired"
    assert failed["id"] == str(derived_id(exclusion_id, "verification.failed"))
    outcome = await running.submit(exclusion_id, code)
    assert outcome.status is Status.EXPIRED and "expired" in outcome.reason
    assert len(await running.results_for(exclusion_id, type="verification.failed")) == 1
    assert not await running.results_for(exclusion_id, type="exclusion.verified")


async def test_a_late_code_before_the_timer_ran_is_refused_and_changes_nothing(running):
    exclusion_id = (await running.request()).payload.exclusion_id
    code = await running.code(exclusion_id)
    before = await running.settled(exclusion_id)
    running.clock.advance(minutes=16)

    outcome = await running.submit(exclusion_id, code)

    assert outcome.status is Status.EXPIRED
    assert outcome.reason.startswith("the code expired at ")
    after = await running.verification(exclusion_id)
    assert (after.state, after.version, after.attempts_left) == (State.AWAITING_CODE, before.version, 5)
    assert not await running.results_for(exclusion_id, type="exclusion.verified")


async def test_a_code_for_another_request_is_refused_and_verifies_neither(running):
    first = await running.request(subject="person-two-requests")
    second = await running.request(subject="person-two-requests")
    second_code = await running.code(second.payload.exclusion_id)
    first_code = await running.code(first.payload.exclusion_id)
    if first_code == second_code:
        pytest.fail("two random codes collided (one chance in a million): run again")

    outcome = await running.submit(first.payload.exclusion_id, second_code)

    assert outcome.status is Status.OTHER_REQUEST
    assert outcome.reason == "this code was issued for another request, not this one"
    for request in (first, second):
        verification = await running.verification(request.payload.exclusion_id)
        assert (verification.state, verification.attempts_left) == (State.AWAITING_CODE, 5)
    assert not await running.results_for(first.payload.exclusion_id, type="exclusion.verified")
    assert not await running.results_for(second.payload.exclusion_id, type="exclusion.verified")


async def test_a_document_is_reviewed_approved_or_rejected(running):
    approved = (await running.request(document_check=True)).payload.exclusion_id
    rejected = (await running.request(document_check=True)).payload.exclusion_id
    await running.notices.wait_for(lambda m: m["payload"]["template"] == "document_required", count=2)

    assert (await running.submit(approved, "123456")).status is Status.WRONG_METHOD
    assert (await running.review(approved, "doc-a", approved=True)).status is Status.NOT_UNDER_REVIEW
    assert (await running.upload(approved, "doc-a")).status is Status.DOCUMENT_RECEIVED
    assert (await running.upload(rejected, "doc-r")).status is Status.DOCUMENT_RECEIVED
    assert (await running.verification(approved)).state is State.AWAITING_REVIEW
    await running.results_for(approved, count=2, type="verification.submission_refused")  # the wrong method, the early review
    outcomes = {m["type"] for m in await running.results_for(approved)}
    assert outcomes == {"verification.submission_refused", "verification.progressed"}, "the request stays pending until the review"

    assert (await running.review(approved, "doc-a", approved=True)).status is Status.APPROVED
    assert (await running.review(rejected, "doc-r", approved=False)).status is Status.REJECTED

    [verified] = await running.results_for(approved, count=1, type="exclusion.verified")
    assert verified["payload"]["method"] == "document"
    [failed] = await running.results_for(rejected, count=1, type="verification.failed")
    assert failed["payload"]["reason"] == "document_rejected"


async def test_a_cancelled_exclusion_closes_its_verification(running):
    request = await running.request()
    cancelled = ExclusionCancelled(
        source="registration",
        subject=request.subject,
        payload=request.payload.model_copy(update={"state": ExclusionState.CANCELLED, "reason": "verification timed out"}),
    )
    await running.publisher.event(cancelled)

    async def closed():
        return (await running.verification(request.payload.exclusion_id)).state is State.CANCELLED

    await eventually(closed, what="the verification to close")
    outcome = await running.submit(request.payload.exclusion_id, await running.code(request.payload.exclusion_id))
    assert outcome.status is Status.CLOSED


async def test_redelivered_messages_change_nothing_twice_and_repeat_the_same_events(running):
    request = await running.request()
    exclusion_id = request.payload.exclusion_id
    code = await running.code(exclusion_id)
    wrong = code_submitted(running.sealer, exclusion_id, other_than(code))
    right = code_submitted(running.sealer, exclusion_id, code)
    again = code_submitted(running.sealer, exclusion_id, code)
    for command in (wrong, right, again):
        await running.send(command)
    settled = await running.settled(exclusion_id)

    for redelivered in (request, wrong, right, again):
        await running.publisher.event(redelivered)
    # Markers: a later message on the same partitions is handled after the redelivered ones.
    marker = ResendCode(source="gateway", payload=CodeResendPayload(exclusion_id=exclusion_id))
    await running.send(marker)
    await running.results.wait_for(lambda m: m["causation_id"] == str(marker.id))  # same partition, so after the rest
    await running.request(subject=request.subject)

    verification = await running.verification(exclusion_id)
    assert (verification.version, verification.attempts_left) == (settled.version, 4), "the wrong code counted once"
    assert [m["id"] for m in await running.results_for(exclusion_id, type="exclusion.verified")] == [
        str(derived_id(exclusion_id, "exclusion.verified"))
    ]
    results = await running.results_for(exclusion_id)
    refused_wrong = [m for m in results if m["causation_id"] == str(wrong.id) and m["type"] == "verification.submission_refused"]
    assert len(refused_wrong) == 1
    for kind in ("verification.submission_refused", "verification.progressed"):
        refused_again = [m for m in results if m["causation_id"] == str(again.id) and m["type"] == kind]
        assert len(refused_again) == 2 and len({m["id"] for m in refused_again}) == 1, f"the same {kind}, re-emitted"
    notices = await running.notices.wait_for(lambda m: m["causation_id"] == str(request.id))
    assert len(notices) == 1, "a redelivered request sends no second code"


async def test_events_left_in_the_outbox_by_a_crash_go_out_on_the_timer(running):
    # As if the service wrote the new verification and died before publishing its notification.
    event = requested()
    issued = IssuedCode(hash="0" * 64, sealed_params="e1:c2VhbGVk")
    crashed = domain.start(event, running.clock(), issued)
    await running.verifications.add(crashed)

    assert await running.app.timers.tick(running.clock.advance(seconds=10)) == 0
    await running.app.timers.tick(running.clock.advance(seconds=30))

    [notice] = await running.notices.wait_for(lambda m: m["causation_id"] == str(event.id))
    assert notice["payload"]["template"] == "verification_code"
    assert not (await running.verification(event.payload.exclusion_id)).outbox


async def test_bad_input_is_dead_lettered_and_the_consumer_goes_on(running):
    async with TopicReader(running.settings, topics.DEAD_LETTER) as dead_letters:
        await running.publisher.raw(topics.VERIFICATION_INPUTS, b"not json", key=b"k")
        exclusion_id = (await running.request()).payload.exclusion_id
        forged = SubmitCode(source="gateway", payload=CodeSubmittedPayload(exclusion_id=exclusion_id, sealed_code="e1:Zm9yZ2Vk"))
        await running.publisher.event(forged)

        parked = await dead_letters.wait_for(lambda m: m["payload"]["consumer"] == "verification", count=2)

        assert {dead_letter_original(running.settings, m) for m in parked} >= {b"not json"}
        assert any("SealError" in m["payload"]["error"] for m in parked)
        assert (await running.submit(exclusion_id, await running.code(exclusion_id))).status is Status.VERIFIED


async def test_no_code_travels_in_clear_on_any_topic(running):
    request = await running.request()
    exclusion_id = request.payload.exclusion_id
    code = await running.code(exclusion_id)
    await running.submit(exclusion_id, other_than(code))
    await running.submit(exclusion_id, code)
    await running.resend(exclusion_id)

    for topic in topics.ALL:
        raw = await raw_bytes(running.settings, topic)
        assert code.encode() not in raw, f"the code in clear on {topic}"
        assert other_than(code).encode() not in raw, f"a typed code in clear on {topic}"


async def test_the_timer_loop_fails_an_expired_code_by_itself(verification_settings, database, clock):
    settings = verification_settings.model_copy(update={"verification_timer_seconds": 0.1})
    app = create_app(settings, clock=clock, database=database)
    async with app, Publisher(settings) as publisher, TopicReader(settings, topics.VERIFICATION_EVENTS) as results:
        event = requested()
        await publisher.event(event)
        await results_of_start(database, event)
        clock.advance(minutes=15)

        [failed] = await results.wait_for(lambda m: m["type"] == "verification.failed")

    assert failed["payload"] == {"exclusion_id": str(event.payload.exclusion_id), "method": "code", "reason": "expired", "lift_id": None}


async def results_of_start(database, event):
    return await eventually(lambda: MongoVerifications(database).get(event.payload.exclusion_id), what="the verification to start")
