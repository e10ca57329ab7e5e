"""Lifting an exclusion is the person's act: a lift request sends a one-time code to the person's
contact on file, and only that code completes it. Shared by the native API and the portal.

Starting is a ``RequestLiftVerification`` on ``verification.inputs`` (an operator may relay it: the
code still goes to the person, never back to the caller). Completing is the code, sealed to the lift
verification, on the same topic; verification then announces ``LiftVerified`` and registration's
policy decides (``exclusion.lift_requested``, ``exclusion.lifted`` or ``exclusion.lift_refused``),
caused by that event, whose id the gateway derives from the lift id to read its own write.
"""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pymongo.asynchronous.database import AsyncDatabase

from services.gateway.context import Gateway
from services.gateway.domain import Summary
from services.gateway.repository import MongoSubmissionAnswers, MongoVerificationViews
from services.gateway.schemas import ANSWER_STATUS, exclusion_view
from shared.crypto import Sealer
from shared.events import (
    CodeResendPayload,
    CodeSubmittedPayload,
    LiftVerificationRequestedPayload,
    LiftVerified,
    RequestLiftVerification,
    ResendCode,
    SubmitCode,
)

FIRST_POLL_SECONDS = 0.01
LAST_POLL_SECONDS = 0.1
T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """An HTTP status and its JSON body; a refusal's body says ``error`` like every other refusal."""

    status: int
    body: dict[str, Any]


def paths(lift_id: uuid.UUID | str) -> dict[str, str]:
    """Where the person completes the lift with their code (either; no API key needed or enough)."""
    return {"native": f"/v1/lifts/{lift_id}/code", "portal": f"/v1/portal/lifts/{lift_id}/code"}


async def start(
    the_gateway: Gateway,
    db: AsyncDatabase,
    exclusion: dict[str, Any],
    *,
    operator_id: str | None,
    verify_by: Literal["email", "sms"] | None = None,
    locale: str | None = None,
) -> Answer:
    """Ask verification to send the person a code for lifting ``exclusion`` (a view, already checked
    to be the person's and running). ``202`` with the lift verification's id and status."""
    lift_id = uuid.uuid4()
    command = RequestLiftVerification(
        source="gateway",
        operator_id=operator_id,
        subject=exclusion["person_id"],
        payload=LiftVerificationRequestedPayload(
            lift_id=lift_id, exclusion_id=uuid.UUID(exclusion["_id"]), verify_by=verify_by, locale=locale
        ),
    )
    await the_gateway.publish(command)
    answer = await _within(the_gateway, lambda: MongoSubmissionAnswers(db).get(command.id))
    body: dict[str, Any] = {
        "lift_id": str(lift_id),
        "exclusion_id": exclusion["_id"],
        "status": answer["status"] if answer else "processing",
        "code_sent_to": "the person's contact on file",
        "complete_with": paths(lift_id),
    }
    if answer is not None:
        body |= _counts(answer) | {"reason": answer["reason"]}
        if answer["refused"]:
            return Answer(ANSWER_STATUS.get(answer["status"], 409), body | {"error": answer["reason"]})
    return Answer(202, body)


async def complete(the_gateway: Gateway, db: AsyncDatabase, sealer: Sealer, lift_id: uuid.UUID, code: str) -> Answer:
    """The person's code for the lift: a wrong one is refused as an exclusion request's is; the right
    one goes to the policy, whose decision is the answer (``200``, or ``409`` with the reason)."""
    lift = await MongoVerificationViews(db).get(lift_id)
    if lift is None or not lift.get("lift"):
        return Answer(404, {"error": "no such lift request", "field": "lift_id"})
    sealed = sealer.seal_text(code, CodeSubmittedPayload.sealing_context(lift_id))
    command = SubmitCode(
        source="gateway", payload=CodeSubmittedPayload(exclusion_id=uuid.UUID(lift["exclusion_id"]), lift_id=lift_id, sealed_code=sealed)
    )
    await the_gateway.publish(command)
    answer = await _within(the_gateway, lambda: MongoSubmissionAnswers(db).get(command.id))
    if answer is None:
        return Answer(202, {"status": "processing", "lift_id": str(lift_id), "submission_id": str(command.id)})
    if answer["status"] != "verified":
        body = {"status": answer["status"], "reason": answer["reason"], "lift_id": str(lift_id), **_counts(answer)}
        return Answer(ANSWER_STATUS.get(answer["status"], 409), body | ({"error": answer["reason"]} if answer["refused"] else {}))
    written = await _within(the_gateway, lambda: _decided(the_gateway, lift_id))
    if written is None:
        return Answer(
            202, {"status": "verified", "lift_id": str(lift_id), "reason": "the code is right; the policy's decision is on its way"}
        )
    exclusion, refusal = written
    view = exclusion_view(exclusion, Summary.from_exclusion(exclusion).in_force(the_gateway.clock()))
    if refusal is not None:
        return Answer(409, {"error": "lift refused", "status": "refused", "reason": refusal, "lift_id": str(lift_id), "exclusion": view})
    return Answer(200, {"status": exclusion.get("state"), "lift_id": str(lift_id), "exclusion": view})


async def resend(the_gateway: Gateway, db: AsyncDatabase, lift_id: uuid.UUID) -> Answer:
    """A new code for the lift (at most 3); the previous one stops working."""
    lift = await MongoVerificationViews(db).get(lift_id)
    if lift is None or not lift.get("lift"):
        return Answer(404, {"error": "no such lift request", "field": "lift_id"})
    command = ResendCode(source="gateway", payload=CodeResendPayload(exclusion_id=uuid.UUID(lift["exclusion_id"]), lift_id=lift_id))
    await the_gateway.publish(command)
    answer = await _within(the_gateway, lambda: MongoSubmissionAnswers(db).get(command.id))
    if answer is None:
        return Answer(202, {"status": "processing", "lift_id": str(lift_id), "submission_id": str(command.id)})
    body = {"status": answer["status"], "reason": answer["reason"], "lift_id": str(lift_id), **_counts(answer)}
    return Answer(ANSWER_STATUS.get(answer["status"], 409), body | ({"error": answer["reason"]} if answer["refused"] else {}))


async def standing(db: AsyncDatabase, lift_id: uuid.UUID) -> Answer:
    """Where a lift verification stands (not the code, and nothing about the person)."""
    lift = await MongoVerificationViews(db).get(lift_id)
    if lift is None or not lift.get("lift"):
        return Answer(404, {"error": "no such lift request", "field": "lift_id"})
    fields = ("state", "attempts_left", "resends_left", "code_expires_at")
    return Answer(200, {"lift_id": str(lift_id), "exclusion_id": lift["exclusion_id"], **{name: lift.get(name) for name in fields}})


async def _decided(the_gateway: Gateway, lift_id: uuid.UUID) -> tuple[dict[str, Any], str | None] | None:
    """The exclusion as the policy left it after the verified lift, and its refusal if it refused (two ``_id`` reads)."""
    effect = await the_gateway.effects.get(LiftVerified.id_for(lift_id))
    view = await the_gateway.views.get(effect["exclusion_id"]) if effect is not None else None
    return (view, effect.get("refusal")) if view is not None and effect is not None else None


def _counts(answer: dict[str, Any]) -> dict[str, Any]:
    return {name: answer[name] for name in ("attempts_left", "resends_left") if answer.get(name) is not None}


async def _within(the_gateway: Gateway, probe: Callable[[], Awaitable[T | None]]) -> T | None:
    """Read your own write: poll, backing off, until it shows or the gateway's bound passes."""
    deadline = time.monotonic() + the_gateway.settings.gateway_read_your_write_seconds
    pause = FIRST_POLL_SECONDS
    while True:
        found = await probe()
        if found is not None or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(pause)
        pause = min(pause * 2, LAST_POLL_SECONDS)
