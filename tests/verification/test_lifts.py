"""Lift verifications on the real broker and store: a lift request sends a code to the person, and
only that code leads to LiftVerified; codes are limited and expire like an exclusion request's."""

import json
import uuid
from datetime import timedelta

import pytest

from services.verification.codes import submission_context
from services.verification.domain import MAX_ATTEMPTS, MAX_RESENDS, Status, sealed_context
from shared.events import (
    CodeResendPayload,
    CodeSubmittedPayload,
    LiftVerificationRequestedPayload,
    LiftVerified,
    RequestLiftVerification,
    ResendCode,
    SubmitCode,
)

pytestmark = pytest.mark.integration


def other_than(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def lift_requested(running, *, exclusion_id: uuid.UUID | None = None, subject: str | None = None) -> RequestLiftVerification:
    command = RequestLiftVerification(
        source="gateway",
        operator_id="op-relaying",
        subject=subject or f"person-{uuid.uuid4().hex[:8]}",
        payload=LiftVerificationRequestedPayload(lift_id=uuid.uuid4(), exclusion_id=exclusion_id or uuid.uuid4(), verify_by="sms"),
    )
    outcome = await running.send(command)
    assert outcome.status is Status.CODE_SENT, outcome
    return command


async def lift_codes(running, lift_id: uuid.UUID, count: int = 1) -> list[str]:
    notices = await running.notices.wait_for(
        lambda m: m["payload"]["template"] == "lift_code" and m["payload"]["params"].get("lift_id") == str(lift_id), count=count
    )
    return [json.loads(running.sealer.open_text(m["payload"]["sealed_params"], sealed_context(m["id"])))["code"] for m in notices]


def lift_code(running, command: RequestLiftVerification, code: str) -> SubmitCode:
    lift_id = command.payload.lift_id
    sealed = running.sealer.seal_text(code, submission_context(lift_id))
    return SubmitCode(
        source="gateway", payload=CodeSubmittedPayload(exclusion_id=command.payload.exclusion_id, lift_id=lift_id, sealed_code=sealed)
    )


async def test_a_lift_request_sends_a_code_to_the_person_and_only_that_code_verifies_the_lift(running):
    command = await lift_requested(running)
    lift_id, exclusion_id = command.payload.lift_id, command.payload.exclusion_id
    [code] = await lift_codes(running, lift_id)
    [notice] = await running.notices.wait_for(lambda m: m["causation_id"] == str(command.id))

    wrong = await running.send(lift_code(running, command, other_than(code)))
    right = await running.send(lift_code(running, command, code))

    assert notice["subject"] == command.subject, "the code goes to the person's contact on file, found by subject"
    assert notice["payload"]["channel"] == "sms" and notice["payload"]["params"]["exclusion_id"] == str(exclusion_id)
    assert code not in json.dumps(notice), "the code travels sealed"
    assert wrong.status is Status.WRONG_CODE and wrong.attempts_left == MAX_ATTEMPTS - 1
    assert right.status is Status.VERIFIED
    [verified] = await running.results_for(exclusion_id, count=1, type="verification.lift_verified")
    assert verified["id"] == str(LiftVerified.id_for(lift_id))
    assert verified["subject"] == command.subject and verified["operator_id"] == "op-relaying"
    assert verified["payload"]["lift_id"] == str(lift_id)
    assert await running.results_for(exclusion_id, type="exclusion.verified") == [], "a lift never verifies an exclusion request"


async def test_a_wrong_code_does_not_verify_a_lift_and_five_fail_it(running):
    command = await lift_requested(running)
    [code] = await lift_codes(running, command.payload.lift_id)

    outcomes = [await running.send(lift_code(running, command, other_than(code))) for _ in range(MAX_ATTEMPTS)]
    late = await running.send(lift_code(running, command, code))

    assert [o.status for o in outcomes] == [Status.WRONG_CODE] * (MAX_ATTEMPTS - 1) + [Status.ATTEMPTS_EXHAUSTED]
    assert late.refused
    [failed] = await running.results_for(command.payload.exclusion_id, count=1, type="verification.failed")
    assert failed["payload"]["lift_id"] == str(command.payload.lift_id)
    assert await running.results_for(command.payload.exclusion_id, type="verification.lift_verified") == []


async def test_a_lift_code_expires_and_resends_are_limited(running):
    command = await lift_requested(running)
    lift_id, exclusion_id = command.payload.lift_id, command.payload.exclusion_id
    resends = [
        await running.send(ResendCode(source="gateway", payload=CodeResendPayload(exclusion_id=exclusion_id, lift_id=lift_id)))
        for _ in range(MAX_RESENDS + 1)
    ]
    codes = await lift_codes(running, lift_id, count=MAX_RESENDS + 1)

    running.clock.advance(minutes=16)
    expired = await running.app.timers.tick(running.clock() + timedelta(seconds=1))
    late = await running.send(lift_code(running, command, codes[-1]))

    assert [r.status for r in resends] == [Status.CODE_SENT] * MAX_RESENDS + [Status.RESENDS_EXHAUSTED]
    assert expired == 1
    assert late.status is Status.EXPIRED
    assert await running.results_for(exclusion_id, type="verification.lift_verified") == []


async def test_a_lift_code_does_not_confirm_the_exclusion_request_nor_the_other_way_round(running):
    request = await running.request(verify_by="email")
    exclusion_id = request.payload.exclusion_id
    request_code = await running.code(exclusion_id)
    command = await lift_requested(running, exclusion_id=exclusion_id, subject=request.subject)
    [code] = await lift_codes(running, command.payload.lift_id)

    # The lift's code typed as the request's, and the request's code typed as the lift's.
    as_request = await running.submit(exclusion_id, code)
    as_lift = await running.send(lift_code(running, command, request_code))
    # A lift code sent to the exclusion request's verification under the lift's own id reaches nothing.
    misaddressed = await running.send(
        SubmitCode(
            source="gateway",
            payload=CodeSubmittedPayload(
                exclusion_id=command.payload.lift_id,
                sealed_code=running.sealer.seal_text(code, submission_context(command.payload.lift_id)),
            ),
        )
    )

    assert as_request.refused and as_lift.refused
    assert misaddressed.status is Status.UNKNOWN_REQUEST
    assert (await running.verification(exclusion_id)).state.value == "awaiting_code"


async def test_a_second_start_under_the_same_lift_id_changes_nothing(running):
    command = await lift_requested(running)
    again = command.model_copy(update={"id": uuid.uuid4(), "subject": "someone-else"})

    outcome = await running.send(again)

    assert outcome.status is Status.ALREADY_REQUESTED
    stored = await running.verifications.get(command.payload.lift_id)
    assert stored.subject == command.subject and stored.exclusion_id == command.payload.exclusion_id
